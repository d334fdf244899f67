"""Defenses: one module per defense, named by its id. Modules are imported (and so registered) here
automatically; adding a defense is adding a file. See README.md for the contract."""

from benchmark.plugins import import_submodules

import_submodules(__name__, __path__)
