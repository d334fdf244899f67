"""Defenses: one module per defense, named by its id. Modules are discovered by
``benchmark.plugins`` (each imported on its own, in a plugin process); adding a defense is adding a file.
See README.md for the contract."""
