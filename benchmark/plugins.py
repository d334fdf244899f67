"""Discovery of attack and defense modules: every module of the ``attacks`` and ``defenses`` packages is
imported, and its ``@register_attack`` / ``@register_defense`` classes land in the registries. The engine
never imports a method by name."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable

from benchmark.api import ATTACKS, DEFENSES, Attack, Defense
from benchmark.registry import Registry


def import_submodules(package: str, path: Iterable[str]) -> None:
    """Import every non-private module of ``package`` (sorted, so registration order is stable)."""
    for info in sorted(pkgutil.iter_modules(path), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")


def load_plugins() -> tuple[Registry[type[Attack]], Registry[type[Defense]]]:
    """Import the attack and defense packages and return the populated registries."""
    importlib.import_module("attacks")
    importlib.import_module("defenses")
    return ATTACKS, DEFENSES
