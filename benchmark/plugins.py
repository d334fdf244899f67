"""Discovery of attack and defense modules, and what the scoring process knows about them.

Every non-private module of the ``attacks`` and ``defenses`` packages is a plugin module, plus the modules
named in ``POISONBENCH_PLUGINS`` (comma-separated; ``run --plugins``): out-of-tree submissions and the test
suite's misbehaving fixtures. The engine never imports a method by name.

The scoring process never imports a plugin module either (:mod:`benchmark.workers`): :func:`catalogue`
asks a plugin process per module what it registers (ids, tracks, stage or space, citation, source file),
and :func:`resolve` asks it to validate settings, resolve configs and say which combinations a defense does
not support. Answers are plain data, cached per process. :func:`load_plugins` imports every module into
*this* process: for plugin processes, tests and tools, never for the process that scores victims.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from benchmark.plugin_base import ATTACKS, DEFENSES
from benchmark.registry import Registry, UnknownNameError
from benchmark.utils import canonical_json
from benchmark.workers import PluginError, PluginTimeout, call_plugin

PLUGIN_PACKAGES = ("attacks", "defenses")
EXTRA_PLUGINS_ENV = "POISONBENCH_PLUGINS"
DESCRIBE_SECONDS = 120.0
WHERE = "\x00where"  # placeholder for the suite location in cached settings problems


def import_submodules(package: str, path: Iterable[str]) -> None:
    """Import every non-private module of ``package`` (sorted, so registration order is stable)."""
    for info in sorted(pkgutil.iter_modules(path), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")


def plugin_modules(*, include_extra: bool = True) -> tuple[str, ...]:
    """Every plugin module name, found without importing any of them (``include_extra=False``: only the
    shipped ``attacks`` and ``defenses`` packages, not ``POISONBENCH_PLUGINS``)."""
    names: list[str] = []
    for package in PLUGIN_PACKAGES:
        spec = importlib.util.find_spec(package)
        locations = list(spec.submodule_search_locations or []) if spec else []
        names += [f"{package}.{m.name}" for m in sorted(pkgutil.iter_modules(locations), key=lambda m: m.name)
                  if not m.name.startswith("_")]
    extra = [m.strip() for m in os.environ.get(EXTRA_PLUGINS_ENV, "").split(",") if m.strip()] if include_extra else []
    return tuple(names + [m for m in extra if m not in names])


def load_plugins(*, include_extra: bool = True) -> tuple[Registry[Any], Registry[Any]]:
    """Import every plugin module into this process and return the populated registries (plugin
    processes, tests and tools only: the scoring process uses :func:`catalogue`)."""

    for module in plugin_modules(include_extra=include_extra):
        importlib.import_module(module)
    return ATTACKS, DEFENSES


@dataclass(frozen=True)
class PluginInfo:
    """What the scoring process knows about one registered attack or defense (plain data)."""

    kind: str  # "attack" | "defense"
    id: str
    module: str
    tracks: tuple[str, ...]
    citation: str
    source: str  # path of the module file
    doc: str = ""
    space: str | None = None  # attacks: "input" | "input-unclipped" | "feature"
    stage: str | None = None  # defenses: "data" | "sanitise" | "training" | "posthoc" | "detect"
    paper_url: str = ""
    expected_null: dict[str, str] = field(default_factory=dict)  # attacks: track → why it is a null by design
    recipe_fields: tuple[str, ...] | None = None  # attacks: the victim recipe's fields read (None: all)
    reference_settings: dict[str, Any] | None = None  # training-stage defenses: mechanism off, same schedule
    summary: str = ""  # the first paragraph of the module's docstring: the paper, the threat model
    control_settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # attacks: setting → value → why
    cost: dict[str, Any] = field(default_factory=dict)  # per track, the declared cost model (benchmark.cost_models)

    def record_metadata(self) -> dict[str, Any]:
        """What each record of a cell that runs this plugin carries about it (the board reads it there)."""
        out = {"id": self.id, "module": self.module, "citation": self.citation, "summary": self.summary,
               "paper_url": self.paper_url}
        if self.kind == "attack":
            out |= {"space": self.space, "expected_null": dict(self.expected_null),
                    "control_settings": {k: dict(v) for k, v in self.control_settings.items()}}
        else:
            out |= {"stage": self.stage}
        return out


@dataclass(frozen=True)
class Catalogue:
    attacks: dict[str, PluginInfo]
    defenses: dict[str, PluginInfo]
    problems: tuple[str, ...] = ()

    def of(self, kind: str) -> dict[str, PluginInfo]:
        return self.attacks if kind == "attack" else self.defenses

    def get(self, kind: str, plugin_id: str) -> PluginInfo:
        entries = self.of(kind)
        if plugin_id not in entries:
            raise UnknownNameError(kind, plugin_id, sorted(entries))
        return entries[plugin_id]


_CATALOGUES: dict[tuple[str, ...], Catalogue] = {}


def catalogue() -> Catalogue:
    """The registered plugins, described by one plugin process per module (cached per module list)."""

    modules = plugin_modules()
    if modules not in _CATALOGUES:
        attacks: dict[str, PluginInfo] = {}
        defenses: dict[str, PluginInfo] = {}
        problems: list[str] = []
        for module in modules:
            try:
                described = call_plugin("describe", {"module": module}, timeout=DESCRIBE_SECONDS)
            except (PluginError, PluginTimeout) as exc:
                problems.append(f"plugin module {module} cannot be loaded: {exc}")
                continue
            for item in described:
                info = PluginInfo(kind=item["kind"], id=item["id"], module=module, tracks=tuple(item["tracks"]),
                                  citation=item["citation"], source=item["source"], doc=item.get("doc", ""),
                                  space=item.get("space"), stage=item.get("stage"), paper_url=item.get("paper_url", ""),
                                  expected_null=dict(item.get("expected_null") or {}),
                                  recipe_fields=None if item.get("recipe_fields") is None else tuple(item["recipe_fields"]),
                                  reference_settings=item.get("reference_settings"), summary=item.get("summary", ""),
                                  control_settings=dict(item.get("control_settings") or {}),
                                  cost=dict(item.get("cost") or {}))
                entries = attacks if info.kind == "attack" else defenses
                if info.id in entries:
                    problems.append(f"{info.kind} id {info.id!r} is registered twice ({entries[info.id].module}, {module})")
                entries[info.id] = info
        _CATALOGUES[modules] = Catalogue(dict(sorted(attacks.items())), dict(sorted(defenses.items())), tuple(problems))
    return _CATALOGUES[modules]


@dataclass
class Resolution:
    """A plugin entry's settings checked in its own process: problems, or the resolved config."""

    problems: list[str]
    config: dict[str, Any] | None
    transform_test: bool = False


@dataclass
class _ResolveCache:
    entries: dict[str, Resolution] = field(default_factory=dict)
    reasons: dict[str, str | None] = field(default_factory=dict)


_RESOLVED = _ResolveCache()


def _key(*parts: Any) -> str:

    return canonical_json(parts)


def resolve(entries: list[tuple[str, str, Mapping[str, Any], str]],
            combos: list[tuple[str, Mapping[str, Any], str, Mapping[str, Any], str]], *,
            timeout: float = DESCRIBE_SECONDS) -> tuple[list[Resolution], list[str | None]]:
    """``entries``: (kind, id, settings, where) → their :class:`Resolution`; ``combos``: (defense id,
    settings, track, encoder spec, victim kind) → the defense's ``unsupported`` reason (None: runs).
    One plugin process per module, only for what is not cached yet."""

    cat = catalogue()
    todo: dict[str, dict[str, list[Any]]] = {}
    for kind, plugin_id, settings, _ in entries:
        key = _key(kind, plugin_id, settings)
        if key not in _RESOLVED.entries:
            module = cat.get(kind, plugin_id).module
            todo.setdefault(module, {"entries": [], "combos": []})["entries"].append(
                (key, {"kind": kind, "id": plugin_id, "settings": dict(settings), "where": WHERE}))
    for plugin_id, settings, track, encoder, victim in combos:
        key = _key(plugin_id, settings, track, encoder, victim)
        if key not in _RESOLVED.reasons:
            module = cat.get("defense", plugin_id).module
            todo.setdefault(module, {"entries": [], "combos": []})["combos"].append(
                (key, {"id": plugin_id, "settings": dict(settings), "track": track, "encoder": dict(encoder), "victim": victim}))
    for module, work in todo.items():
        request = {"module": module, "entries": [e for _, e in work["entries"]], "combos": [c for _, c in work["combos"]]}
        try:
            answer = call_plugin("resolve", request, timeout=timeout)
            resolutions = [Resolution(list(map(str, a["problems"])), a["config"], bool(a["transform_test"]))
                           for a in answer["entries"]]
            reasons = [None if r is None else str(r) for r in answer["reasons"]]
        except (PluginError, PluginTimeout) as exc:
            resolutions = [Resolution([f"{WHERE}: the plugin could not check its settings: {exc}"], None)
                           for _, e in work["entries"]]
            reasons = [f"the defense could not say whether it supports this combination: {exc}"] * len(work["combos"])
        for (key, _), resolution in zip(work["entries"], resolutions, strict=True):
            _RESOLVED.entries[key] = resolution
        for (key, _), reason in zip(work["combos"], reasons, strict=True):
            _RESOLVED.reasons[key] = reason
    out = []
    for kind, plugin_id, settings, where in entries:
        cached = _RESOLVED.entries[_key(kind, plugin_id, settings)]
        out.append(Resolution([p.replace(WHERE, where) for p in cached.problems], cached.config, cached.transform_test))
    return out, [_RESOLVED.reasons[_key(*c)] for c in combos]


def resolved_config(kind: str, plugin_id: str, settings: Mapping[str, Any]) -> Resolution:
    """The resolution of one entry (cached after suite validation)."""
    return resolve([(kind, plugin_id, settings, f"{kind} {plugin_id}")], [])[0][0]
