"""Attacks: one module per attack, named by its id. Modules are discovered by
``benchmark.plugins`` (each imported on its own, in a plugin process); adding an attack is adding a file.
See README.md for the contract."""
