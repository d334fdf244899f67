"""Attacks: one module per attack, named by its id. Modules are imported (and so registered) here
automatically; adding an attack is adding a file. See README.md for the contract."""

from benchmark.plugins import import_submodules

import_submodules(__name__, __path__)
