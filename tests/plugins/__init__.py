"""Fixture plugins for the test suite, loaded through ``POISONBENCH_PLUGINS`` (see ``tests/conftest.py``):
honest test defenses that record their calls (``hooks``) and misbehaving attacks and defenses
(``hostile``) that the harness must contain."""
