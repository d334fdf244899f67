"""Suites: YAML files that describe a matrix of cells, validated whole before any compute.

``load_suite(name_or_path, overrides)`` reads ``benchmark/suites/<name>.yaml`` (or a path), applies dotted
``--set key=value`` overrides (values parsed as YAML), validates every field and reports *every* problem
at once (:class:`SuiteError`), and returns a :class:`Suite`. ``expand_cells(suite)`` lists the cells:
encoder (SSL method × backbone) × scenario × budget × attack × defense × seed for each track, plus the
combinations that are skipped and why.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from benchmark.api import ATTACKS, DEFENSES, TRACKS, config_problems
from benchmark.utils import config_hash

SUITES_DIR = Path(__file__).parent / "suites"
TIERS = ("smoke", "cpu", "full", "custom")
NO_ATTACK = "none"
NO_DEFENSE = "none"
VICTIMS = ("convex", "sgd")


class SuiteError(ValueError):
    """A malformed suite; ``problems`` lists every problem found."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"suite {source} has {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems))


def suite_names() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))


def read_suite_file(name_or_path: str) -> tuple[dict[str, Any], str]:
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") or path.exists()):
        path = SUITES_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise SuiteError(name_or_path, [f"no suite named {name_or_path!r}; built-in suites: {', '.join(suite_names())}, or pass a path to a YAML file"])
    if not path.exists():
        raise SuiteError(str(path), [f"file {path} does not exist"])
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SuiteError(str(path), [f"not valid YAML: {exc}"]) from None
    if not isinstance(raw, dict):
        raise SuiteError(str(path), ["the top level must be a mapping"])
    base_name = raw.pop("extends", None)
    if base_name is not None:  # a suite may extend another and override parts of it
        if base_name == name_or_path or not isinstance(base_name, str):
            raise SuiteError(str(path), [f"extends: {base_name!r} must name another suite"])
        base, _ = read_suite_file(base_name)
        raw = deep_merge(base, raw)
    return raw, str(path)


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``update`` merged in; nested mappings merge, everything else is replaced."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Apply ``key.sub=value`` strings (values parsed as YAML); returns the new dict and problems."""
    result, problems = copy.deepcopy(raw), []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            problems.append(f"--set {item!r}: expected key.path=value")
            continue
        node = result
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        try:
            node[parts[-1]] = yaml.safe_load(value)
        except yaml.YAMLError:
            problems.append(f"--set {item!r}: value is not valid YAML")
    return result, problems


@dataclass(frozen=True)
class MethodEntry:
    """One attack or defense entry of a suite: registry id, display name, settings."""

    id: str
    name: str
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "settings": self.settings}


@dataclass(frozen=True)
class Suite:
    name: str
    tier: str
    source: str
    raw: dict[str, Any]

    def section(self, *keys: str, default: Any = None) -> Any:
        node: Any = self.raw
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                return default
            node = node[key]
        return node

    @property
    def seeds(self) -> list[int]:
        return list(self.raw["seeds"])

    @property
    def tracks(self) -> dict[str, dict[str, Any]]:
        return self.raw.get("tracks", {})


@dataclass(frozen=True)
class Cell:
    """One point of the matrix. ``spec`` is the full resolved description; ``id`` is derived from it."""

    track: str
    spec: dict[str, Any]

    @property
    def id(self) -> str:
        s = self.spec
        parts = [self.track, s["encoder"]["method"], s["encoder"]["backbone"], s["scenario"]["name"],
                 s["attack"]["name"], s["defense"]["name"], f"b{s['budget']:g}"]
        if s.get("input_epsilon") is not None:
            parts.append(f"eps{s['input_epsilon']:.4g}")
        parts.append(f"s{s['seed']}")
        return "__".join(parts).replace("/", "-") + "__" + config_hash(self.spec, 10)

    @property
    def attack(self) -> MethodEntry:
        return MethodEntry(**self.spec["attack"])

    @property
    def defense(self) -> MethodEntry:
        return MethodEntry(**self.spec["defense"])


@dataclass(frozen=True)
class SkippedCombination:
    track: str
    what: str
    reason: str


# ------------------------------------------------------------------------------------------- validation
def _method_entries(raw_list: Any, where: str, registry: Any, reserved: str, problems: list[str],
                    track: str | None) -> list[MethodEntry]:
    if not isinstance(raw_list, list) or not raw_list:
        problems.append(f"{where}: expected a non-empty list")
        return []
    entries: list[MethodEntry] = []
    for i, item in enumerate(raw_list):
        if isinstance(item, str):
            item = {"id": item}
        if not isinstance(item, dict) or "id" not in item:
            problems.append(f"{where}[{i}]: expected an id or a mapping with 'id' (and optional 'name', 'settings')")
            continue
        unknown = set(item) - {"id", "name", "settings"}
        if unknown:
            problems.append(f"{where}[{i}]: unknown key(s) {', '.join(sorted(unknown))}; valid: id, name, settings")
        method_id, settings = str(item["id"]), item.get("settings") or {}
        name = str(item.get("name", method_id))
        if method_id == reserved:
            entries.append(MethodEntry(reserved, name, {}))
            continue
        if method_id not in registry:
            problems.append(f"{where}[{i}]: unknown {registry.kind} {method_id!r}; valid: {', '.join([reserved] + registry.names())}")
            continue
        cls = registry.get(method_id)
        if track is not None and track not in _tracks_of(cls):
            problems.append(f"{where}[{i}]: {registry.kind} {method_id!r} does not apply to track {track!r} (it applies to {', '.join(_tracks_of(cls))})")
            continue
        if not isinstance(settings, dict):
            problems.append(f"{where}[{i}].settings: expected a mapping")
            continue
        problems += config_problems(cls.Config, settings, f"{where}[{i}].settings")
        entries.append(MethodEntry(method_id, name, dict(settings)))
    names = [e.name for e in entries]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"{where}: name {dup!r} is used twice (give variants distinct 'name's)")
    return entries


def _tracks_of(cls: Any) -> tuple[str, ...]:
    tracks = cls.tracks
    return tracks() if callable(tracks) else tuple(tracks)


def _check_fraction_list(value: Any, where: str, problems: list[str], *, low_open: bool = True) -> list[float]:
    if not isinstance(value, list) or not value:
        problems.append(f"{where}: expected a non-empty list of numbers")
        return []
    out = []
    for v in value:
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not (0 < v <= 1 if low_open else 0 <= v <= 1):
            problems.append(f"{where}: {v!r} is not a fraction in (0, 1]")
        else:
            out.append(float(v))
    return out


def validate_suite(raw: dict[str, Any], source: str) -> Suite:
    """Check everything; raise :class:`SuiteError` listing every problem."""
    from benchmark.data import dataset_names
    from benchmark.plugins import load_plugins
    from benchmark.pretrain import SSLRecipe

    load_plugins()
    problems: list[str] = []
    known = {"name", "tier", "description", "seeds", "device", "data", "encoders", "scenarios", "tracks"}
    for key in sorted(set(raw) - known):
        problems.append(f"{key}: unknown top-level key; valid: {', '.join(sorted(known))}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        problems.append("name: a non-empty string is required")
    if raw.get("tier") not in TIERS:
        problems.append(f"tier: {raw.get('tier')!r} must be one of {', '.join(TIERS)}")
    seeds = raw.get("seeds")
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        problems.append("seeds: expected a non-empty list of non-negative integers")
    elif len(set(seeds)) != len(seeds):
        problems.append("seeds: duplicates")
    _validate_data(raw.get("data", {}), problems)
    _validate_encoders(raw.get("encoders"), problems, SSLRecipe)
    scenario_names = _validate_scenarios(raw.get("scenarios"), problems, dataset_names())
    tracks = raw.get("tracks")
    if not isinstance(tracks, dict) or not tracks:
        problems.append(f"tracks: expected a mapping with at least one of {', '.join(TRACKS)}")
    else:
        for track, body in tracks.items():
            if track not in TRACKS:
                problems.append(f"tracks.{track}: unknown track; valid: {', '.join(TRACKS)}")
            else:
                _validate_track(track, body, problems, scenario_names)
    if problems:
        raise SuiteError(source, problems)
    return Suite(name=name, tier=raw["tier"], source=source, raw=raw)


def _validate_data(data: Any, problems: list[str]) -> None:
    if not isinstance(data, dict):
        problems.append("data: expected a mapping")
        return
    valid = {"root", "download", "image_size", "pretrain_subset", "downstream_subset"}
    for key in sorted(set(data) - valid):
        problems.append(f"data.{key}: unknown key; valid: {', '.join(sorted(valid))}")
    size = data.get("image_size")
    if size is not None and (not isinstance(size, int) or size < 8):
        problems.append(f"data.image_size: {size!r} must be an integer ≥ 8 or null")
    for key in ("pretrain_subset", "downstream_subset"):
        v = data.get(key)
        if v is not None and (not isinstance(v, int) or v < 10):
            problems.append(f"data.{key}: {v!r} must be an integer ≥ 10 or null")


def _validate_encoders(enc: Any, problems: list[str], recipe_cls: Any) -> None:
    if not isinstance(enc, dict):
        problems.append("encoders: expected a mapping with methods, backbones, recipe")
        return
    valid = {"methods", "backbones", "recipe", "method_settings", "method_recipes"}
    for key in sorted(set(enc) - valid):
        problems.append(f"encoders.{key}: unknown key; valid: {', '.join(sorted(valid))}")
    methods, backbones = enc.get("methods"), enc.get("backbones")
    if not isinstance(methods, list) or not methods:
        problems.append("encoders.methods: expected a non-empty list")
        methods = []
    if not isinstance(backbones, list) or not backbones:
        problems.append("encoders.backbones: expected a non-empty list")
        backbones = []
    recipe = enc.get("recipe", {})
    per_method = enc.get("method_settings", {}) or {}
    method_recipes = enc.get("method_recipes", {}) or {}
    if not all(isinstance(x, dict) for x in (recipe, per_method, method_recipes)):
        problems.append("encoders.recipe, encoders.method_settings and encoders.method_recipes: expected mappings")
        return
    for method in methods:
        for backbone in backbones:
            try:
                spec = recipe_cls(method=method, backbone=backbone, **{**recipe, **(method_recipes.get(method) or {})},
                                  method_settings=per_method.get(method, {}) or {})
            except TypeError as exc:
                problems.append(f"encoders.recipe: {exc}")
                return
            problems += [f"encoders[{method}/{backbone}].{p}" for p in spec.problems()]


def _validate_scenarios(scen: Any, problems: list[str], datasets: list[str]) -> set[str]:
    if not isinstance(scen, list) or not scen:
        problems.append("scenarios: expected a non-empty list of {name, pretrain, downstream}")
        return set()
    names: set[str] = set()
    for i, s in enumerate(scen):
        if not isinstance(s, dict) or set(s) != {"name", "pretrain", "downstream"}:
            problems.append(f"scenarios[{i}]: expected exactly the keys name, pretrain, downstream")
            continue
        for key in ("pretrain", "downstream"):
            ds = str(s[key])
            if ds not in datasets and not ds.startswith(("npz:", "folder:")):
                problems.append(f"scenarios[{i}].{key}: unknown dataset {ds!r}; valid: {', '.join(datasets)}, npz:PATH, folder:PATH")
        if s["name"] in names:
            problems.append(f"scenarios[{i}].name: {s['name']!r} is used twice")
        names.add(s["name"])
    return names


TRACK_KEYS: dict[str, set[str]] = {
    "downstream": {"scenarios", "budgets", "attacks", "defenses", "input_epsilons", "victim"},
    "pretrain-availability": {"scenarios", "budgets", "epsilon", "attacks", "defenses", "victim", "data", "recipe"},
    "pretrain-targeted": {"scenarios", "budgets", "attacks", "defenses", "victim", "data", "recipe"},
}
PRETRAIN_DATA_KEYS = {"image_size", "pretrain_subset", "downstream_subset"}
"""Keys a pre-training track's ``data`` may override (its ``recipe`` overrides the encoder recipe)."""


def _validate_pretrain_overrides(body: dict[str, Any], where: str, problems: list[str]) -> None:
    from benchmark.pretrain import SSLRecipe

    data, recipe = body.get("data", {}) or {}, body.get("recipe", {}) or {}
    if not isinstance(data, dict) or not isinstance(recipe, dict):
        problems.append(f"{where}.data and {where}.recipe: expected mappings")
        return
    for key in sorted(set(data) - PRETRAIN_DATA_KEYS):
        problems.append(f"{where}.data.{key}: unknown key; valid: {', '.join(sorted(PRETRAIN_DATA_KEYS))}")
    sub: list[str] = []
    _validate_data({k: v for k, v in data.items() if k in PRETRAIN_DATA_KEYS}, sub)
    problems += [f"{where}.{p}" for p in sub]
    valid = {f.name for f in dataclasses.fields(SSLRecipe)} - {"method", "backbone", "method_settings"}
    for key in sorted(set(recipe) - valid):
        problems.append(f"{where}.recipe.{key}: unknown key; valid: {', '.join(sorted(valid))}")


def _validate_track(track: str, body: Any, problems: list[str], scenario_names: set[str]) -> None:
    where = f"tracks.{track}"
    if not isinstance(body, dict):
        problems.append(f"{where}: expected a mapping")
        return
    for key in sorted(set(body) - TRACK_KEYS[track]):
        problems.append(f"{where}.{key}: unknown key; valid: {', '.join(sorted(TRACK_KEYS[track]))}")
    for s in body.get("scenarios", []) or []:
        if s not in scenario_names:
            problems.append(f"{where}.scenarios: unknown scenario {s!r}; defined: {', '.join(sorted(scenario_names))}")
    _check_fraction_list(body.get("budgets"), f"{where}.budgets", problems)
    _method_entries(body.get("attacks"), f"{where}.attacks", ATTACKS, NO_ATTACK, problems, track)
    _method_entries(body.get("defenses", [NO_DEFENSE]), f"{where}.defenses", DEFENSES, NO_DEFENSE, problems, track)
    if track == "downstream":
        for eps in body.get("input_epsilons", [None]) or [None]:
            if eps is not None and not (isinstance(eps, (int, float)) and 0 < eps <= 1):
                problems.append(f"{where}.input_epsilons: {eps!r} must be null or in (0, 1]")
    if track.startswith("pretrain-"):
        _validate_pretrain_overrides(body, where, problems)
    if track == "pretrain-availability":
        eps = body.get("epsilon", 8 / 255)
        if not isinstance(eps, (int, float)) or not 0 < eps <= 1:
            problems.append(f"{where}.epsilon: {eps!r} must be in (0, 1]")
    victim = body.get("victim", {}) or {}
    if not isinstance(victim, dict):
        problems.append(f"{where}.victim: expected a mapping")
    else:
        _validate_victim(victim, f"{where}.victim", problems)


def _validate_victim(victim: dict[str, Any], where: str, problems: list[str]) -> None:
    from benchmark.probe import SGDProbeConfig

    kind = victim.get("kind", "convex")
    if kind not in VICTIMS:
        problems.append(f"{where}.kind: {kind!r} must be one of {', '.join(VICTIMS)}")
    l2 = victim.get("l2", "auto")
    if l2 != "auto" and not (isinstance(l2, (int, float)) and l2 >= 0):
        problems.append(f"{where}.l2: {l2!r} must be 'auto' or a number ≥ 0")
    grid = victim.get("l2_grid", [1e-4, 1e-3, 1e-2])
    if not isinstance(grid, list) or not grid or not all(isinstance(g, (int, float)) and g >= 0 for g in grid):
        problems.append(f"{where}.l2_grid: expected a non-empty list of numbers ≥ 0")
    sgd = victim.get("sgd", {}) or {}
    valid = {f.name for f in dataclasses.fields(SGDProbeConfig)}
    if not isinstance(sgd, dict):
        problems.append(f"{where}.sgd: expected a mapping")
    else:
        for key in sorted(set(sgd) - valid):
            problems.append(f"{where}.sgd.{key}: unknown key; valid: {', '.join(sorted(valid))}")


# ------------------------------------------------------------------------------------------- expansion
def load_suite(name_or_path: str, overrides: list[str] | None = None) -> Suite:
    raw, source = read_suite_file(name_or_path)
    raw, problems = apply_overrides(raw, overrides or [])
    if problems:
        raise SuiteError(source, problems)
    return validate_suite(raw, source)


def encoder_specs(suite: Suite) -> list[dict[str, Any]]:
    enc = suite.raw["encoders"]
    recipe = enc.get("recipe", {})
    per_method = enc.get("method_settings", {}) or {}
    method_recipes = enc.get("method_recipes", {}) or {}
    return [{"method": m, "backbone": b, **recipe, **(method_recipes.get(m) or {}), "method_settings": per_method.get(m, {}) or {}}
            for m in enc["methods"] for b in enc["backbones"]]


def expand_cells(suite: Suite) -> tuple[list[Cell], list[SkippedCombination]]:
    """Every cell of the suite, in a stable order that keeps cells sharing an encoder together."""
    from benchmark.plugins import load_plugins

    load_plugins()
    cells: list[Cell] = []
    skipped: list[SkippedCombination] = []
    scenarios = {s["name"]: s for s in suite.raw["scenarios"]}
    data = {"root": None, "download": False, "image_size": None, "pretrain_subset": None,
            "downstream_subset": None, **(suite.raw.get("data") or {})}
    for track in TRACKS:
        body = suite.tracks.get(track)
        if body is None:
            continue
        attacks = _method_entries(body["attacks"], "", ATTACKS, NO_ATTACK, [], track)
        defenses = _method_entries(body.get("defenses", [NO_DEFENSE]), "", DEFENSES, NO_DEFENSE, [], track)
        victim = {"kind": "convex", "l2": "auto", "l2_grid": [1e-4, 1e-3, 1e-2], **(body.get("victim") or {})}
        track_scenarios = body.get("scenarios") or list(scenarios)
        epsilons = body.get("input_epsilons", [None]) if track == "downstream" else [None]
        track_data = {**data, **(body.get("data") or {})}  # pre-training tracks may shrink data / recipe
        for encoder in encoder_specs(suite):
            encoder = {**encoder, **(body.get("recipe") or {})}
            for scenario_name in track_scenarios:
                for seed in suite.seeds:
                    for budget in body["budgets"]:
                        for eps in epsilons or [None]:
                            for attack in attacks:
                                for defense in defenses:
                                    spec = {
                                        "suite": suite.name, "tier": suite.tier, "track": track,
                                        "encoder": encoder, "scenario": scenarios[scenario_name],
                                        "data": track_data, "budget": float(budget), "input_epsilon": eps,
                                        "attack": attack.to_dict(), "defense": defense.to_dict(),
                                        "victim": victim, "seed": seed,
                                    }
                                    if track == "pretrain-availability":
                                        spec["epsilon"] = float(body.get("epsilon", 8 / 255))
                                    reason = _skip_reason(track, attack, defense, encoder, victim, eps)
                                    if reason:
                                        what = f"{attack.name} × {defense.name}" + ("" if eps is None else f" (ℓ∞ ≤ {eps:.4g})")
                                        if encoder["method"] in reason:
                                            what += f" with {encoder['method']}"
                                        skipped.append(SkippedCombination(track, what, reason))
                                    else:
                                        cells.append(Cell(track, spec))
    return cells, _dedupe(skipped)


def _skip_reason(track: str, attack: MethodEntry, defense: MethodEntry, encoder: dict[str, Any],
                 victim: dict[str, Any], eps: float | None) -> str | None:
    if attack.id == NO_ATTACK and eps is not None:
        return "no attack: an input constraint does not apply (the unconstrained no-attack cell is the baseline)"
    if attack.id != NO_ATTACK and track == "downstream":
        cls = ATTACKS.get(attack.id)
        if cls.space == "feature" and victim["kind"] != "convex":
            return f"{attack.name} poisons features, which only the convex head on cached features consumes"
        if cls.space == "feature" and eps is not None:
            return f"{attack.name} poisons features; an input constraint does not apply to it"
        if cls.space == "feature" and defense.id != NO_DEFENSE:
            return (f"{attack.name} poisons features directly; {defense.name} acts on images, on how heads "
                    f"train on images, or on the encoder, so it has nothing to act on")
    if defense.id != NO_DEFENSE:
        d = DEFENSES.get(defense.id)(DEFENSES.get(defense.id).Config(**defense.settings))
        return d.unsupported(track=track, encoder=encoder, victim=victim["kind"])
    return None


def _dedupe(skipped: list[SkippedCombination]) -> list[SkippedCombination]:
    seen, out = set(), []
    for s in skipped:
        if (s.track, s.what) not in seen:
            seen.add((s.track, s.what))
            out.append(s)
    return out
