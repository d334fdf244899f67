"""Suites: YAML files that describe a matrix of cells, validated whole before any compute.

``load_suite(name_or_path, overrides)`` reads ``benchmark/suites/<name>.yaml`` (or a path), applies dotted
``--set key=value`` overrides (values parsed as YAML), validates every field and reports *every* problem
at once (:class:`SuiteError`), and returns a :class:`Suite`. ``expand_cells(suite)`` lists the cells:
encoder (SSL method × backbone) × scenario × budget × attack × defense × seed for each track, plus the
combinations that are skipped and why.
"""

from __future__ import annotations

import copy
import difflib
import re
import typing
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml

from benchmark.data import dataset_names
from benchmark.plugin_base import MethodConfig, build_config, check_range, config_problems, value_problems
from benchmark.plugins import catalogue, resolve
from benchmark.pretrain import SSLRecipe
from benchmark.tracks.base import (
    NO_ATTACK,
    NO_DEFENSE,
    Cell,
    MethodEntry,
    SkippedCombination,
    TrackSpec,
    load_tracks,
)
from benchmark.tracks.specs import DataSpec, ScenarioSpec, VictimSpec, _seed_problems
from benchmark.utils import config_hash

SUITES_DIR = Path(__file__).parent / "suites"


class SuiteLoader(yaml.SafeLoader):
    """PyYAML's safe loader, with YAML 1.2 floats: ``1e-06`` and ``5e3`` are numbers, not strings."""


SuiteLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=SuiteLoader)


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
            raise SuiteError(name_or_path, [f"no suite named {name_or_path!r}; built-in suites: {', '.join(suite_names())}, "
                                            f"or pass a path to a YAML file"])
    if not path.exists():
        raise SuiteError(str(path), [f"file {path} does not exist"])
    if path.is_dir():
        raise SuiteError(str(path), [f"{path} is a directory, not a YAML file"])
    try:
        raw = parse_yaml(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise SuiteError(str(path), [f"not UTF-8 text ({exc.reason} at byte {exc.start}); save the suite as UTF-8"]) from None
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
        if isinstance(raw.get("tracks"), dict):  # `tracks.<name>: null` leaves out a track of the base suite
            raw["tracks"] = {name: body for name, body in raw["tracks"].items() if body is not None}
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
            node[parts[-1]] = parse_yaml(value)
        except yaml.YAMLError:
            problems.append(f"--set {item!r}: value is not valid YAML")
    return result, problems


@dataclass(frozen=True)
class Suite:
    """A validated suite: ``raw`` is the file as read (with overrides), ``spec`` and ``track_specs`` the same, typed."""

    name: str
    tier: str
    source: str
    raw: dict[str, Any]

    @cached_property
    def spec(self) -> SuiteSpec:
        return build_config(SuiteSpec, self.raw)

    @cached_property
    def track_specs(self) -> dict[str, TrackSpec]:
        """Each track section of the suite as its track's :attr:`~benchmark.tracks.base.Track.Spec`."""
        tracks = load_tracks()
        return {name: build_config(tracks[name].Spec, body) for name, body in self.tracks.items()}

    @property
    def seeds(self) -> list[int]:
        return list(self.spec.seeds)

    @property
    def tracks(self) -> dict[str, dict[str, Any]]:
        return self.raw.get("tracks", {})

    @property
    def plugin_seconds(self) -> float:
        """The time limit of one plugin call (``limits.plugin_seconds``, else the tier's default)."""
        limits = self.spec.limits
        return float(limits.plugin_seconds if limits and limits.plugin_seconds else PLUGIN_SECONDS[self.tier])


# ------------------------------------------------------------------------------------------- schema
@dataclass(frozen=True, kw_only=True)
class EncodersSpec(MethodConfig):
    """``encoders``: SSL methods × backbones, the shared recipe and per-method settings/recipes."""

    methods: list[str]
    backbones: list[str]
    recipe: dict[str, Any] = field(default_factory=dict)
    method_settings: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    method_recipes: dict[str, dict[str, Any] | None] = field(default_factory=dict)

    def problems(self) -> list[str]:
        problems = [f"{key}: expected a non-empty list" for key in ("methods", "backbones") if not getattr(self, key)]
        for key in ("method_settings", "method_recipes"):
            for method in getattr(self, key):
                if method not in self.methods:
                    problems.append(f"{key}.{method}: not one of the methods ({', '.join(self.methods)})")
        return problems


@dataclass(frozen=True, kw_only=True)
class LimitsSpec(MethodConfig):
    """``limits``: the wall-clock limit of one plugin call (an attack's crafting, a defended victim's
    training), in seconds; null = the tier's default (:data:`PLUGIN_SECONDS`)."""

    plugin_seconds: float | None = None

    def problems(self) -> list[str]:
        problems: list[str] = []
        if self.plugin_seconds is not None:
            check_range(problems, "plugin_seconds", self.plugin_seconds, 0.0, 30 * 86400.0, low_open=True)
        return problems


PROFILES_FILE = Path(__file__).with_name("device_profiles.yaml")
"""The device profiles of :mod:`benchmark.estimate` (measured or projected costs per device)."""


def profile_names() -> list[str]:
    """The device profiles a suite's ``compute`` may name."""
    return sorted(yaml.safe_load(PROFILES_FILE.read_text())["profiles"])


@dataclass(frozen=True, kw_only=True)
class ComputeSpec(MethodConfig):
    """``compute``: the device-hours the suite is designed to fit on ``profile`` (a device profile of
    :mod:`benchmark.estimate`); ``plan --estimate`` checks it and a test keeps every built-in suite inside it.
    (A *budget* is always a poison fraction: see :func:`benchmark.api.poison_count`.)"""

    device_hours: float
    profile: str

    def problems(self) -> list[str]:
        problems: list[str] = []
        check_range(problems, "device_hours", self.device_hours, 0.0, 1e7, low_open=True)
        if self.profile not in profile_names():
            close = difflib.get_close_matches(self.profile, profile_names(), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"profile: unknown device profile {self.profile!r}{hint}; valid: {', '.join(profile_names())}")
        return problems


PLUGIN_SECONDS = {"smoke": 600.0, "cpu": 3600.0, "full": 7 * 86400.0, "custom": 3600.0}
"""Default per-call time limit by tier: the longest legitimate call is a defended victim's pre-training."""


@dataclass(frozen=True, kw_only=True)
class SuiteSpec(MethodConfig):
    """A suite file's top level."""

    name: str
    tier: Literal["smoke", "cpu", "full", "custom"]
    description: str = ""
    seeds: list[int]
    data: DataSpec | None = None
    encoders: EncodersSpec
    scenarios: list[ScenarioSpec]
    tracks: dict[str, Any]
    limits: LimitsSpec | None = None
    compute: ComputeSpec | None = None

    def problems(self) -> list[str]:
        problems: list[str] = []
        if not self.name:
            problems.append("name: a non-empty string is required")
        problems += _seed_problems(self.seeds)
        if not self.scenarios:
            problems.append("scenarios: expected a non-empty list of {name, pretrain, downstream}")
        if not self.tracks:
            problems.append(f"tracks: expected a mapping with at least one of {', '.join(load_tracks())}")
        return problems


# ------------------------------------------------------------------------------------------- validation
def _method_entries(raw_list: list[Any], where: str, kind: str, reserved: str, problems: list[str],
                    track: str, checks: list[tuple[str, str, dict[str, Any], str]]) -> list[MethodEntry]:
    """The entries of an ``attacks`` / ``defenses`` list; every problem is appended, and the settings of
    known ids are queued in ``checks`` for their plugin process to validate."""

    known = catalogue().of(kind)
    entries: list[MethodEntry] = []
    for i, item in enumerate(raw_list):
        at = f"{where}[{i}]"
        if isinstance(item, str):
            item = {"id": item}
        item_problems = config_problems(MethodEntrySpec, item, at)
        if item_problems:
            problems += item_problems
            continue
        method_id, settings = item["id"], item.get("settings") or {}
        name = item.get("name") or method_id
        if method_id == reserved:
            if settings:
                problems.append(f"{at}.settings: {reserved!r} takes no settings")
            entries.append(MethodEntry(reserved, name, {}))
            continue
        if method_id not in known:
            close = difflib.get_close_matches(method_id, list(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{at}: unknown {kind} {method_id!r}{hint}; valid: {', '.join([reserved, *known])}")
            continue
        info = known[method_id]
        if track not in info.tracks:
            problems.append(f"{at}: {kind} {method_id!r} does not apply to track {track!r} (it applies to {', '.join(info.tracks)})")
            continue
        checks.append((kind, method_id, dict(settings), f"{at}.settings"))
        entries.append(MethodEntry(method_id, name, dict(settings)))
    names = [e.name for e in entries]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"{where}: name {dup!r} is used twice (give variants distinct 'name's)")
    return entries


@dataclass(frozen=True, kw_only=True)
class MethodEntrySpec(MethodConfig):
    """One item of an ``attacks`` / ``defenses`` list (or just its id as a string)."""

    id: str
    name: str | None = None
    settings: dict[str, Any] | None = None


def validate_suite(raw: dict[str, Any], source: str) -> Suite:
    """Check every field at every depth; raise :class:`SuiteError` listing every problem (before any
    compute, before anything is written). Plugin settings are checked in their own plugin processes."""

    problems = list(catalogue().problems)
    problems += config_problems(SuiteSpec, raw, "")
    scenario_names = _validate_scenarios(raw.get("scenarios"), problems, dataset_names())
    encoders = raw.get("encoders") if isinstance(raw.get("encoders"), dict) else {}
    checks: list[tuple[str, str, dict[str, Any], str]] = []
    tracks = raw.get("tracks") if isinstance(raw.get("tracks"), dict) else {}
    known = load_tracks()
    for track, body in tracks.items():
        if track not in known:
            close = difflib.get_close_matches(str(track), list(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"tracks.{track}: unknown track{hint}; valid: {', '.join(known)}")
            continue
        where = f"tracks.{track}"
        track_problems = config_problems(known[track].Spec, body, where)
        problems += track_problems
        if not isinstance(body, dict):
            continue
        for s in body.get("scenarios") or []:
            if isinstance(s, str) and s not in scenario_names:
                problems.append(f"{where}.scenarios: unknown scenario {s!r}; defined: {', '.join(sorted(scenario_names))}")
        methods = encoders.get("methods") if isinstance(encoders.get("methods"), list) else []
        for m in body.get("methods") or []:
            if m not in methods:
                problems.append(f"{where}.methods: {m!r} is not one of the suite's methods ({', '.join(map(str, methods))})")
        track_methods = body.get("methods") or methods
        for m in body.get("defended_methods") or []:
            if m not in track_methods:
                problems.append(f"{where}.defended_methods: {m!r} is not one of the track's methods "
                                f"({', '.join(map(str, track_methods))})")
        for key, kind, reserved in (("attacks", "attack", NO_ATTACK), ("defenses", "defense", NO_DEFENSE)):
            items = body.get(key, [NO_DEFENSE] if key == "defenses" else [])
            if isinstance(items, list):
                _method_entries(items, f"{where}.{key}", kind, reserved, problems, track, checks)
        if isinstance(body.get("recipe"), dict) and isinstance(encoders, dict):
            problems += _encoder_problems(encoders, body["recipe"], f"{where}.recipe")
    if isinstance(encoders, dict) and not any(p.startswith("encoders") for p in problems):
        problems += _encoder_problems(encoders, {}, "encoders")
    if not problems:  # ids are known: let each plugin check its own settings
        resolutions, _ = resolve(checks, [])
        problems += [p for r in resolutions for p in r.problems]
    if problems:
        raise SuiteError(source, problems)
    return Suite(name=raw["name"], tier=raw["tier"], source=source, raw=raw)


def _encoder_problems(enc: dict[str, Any], override: dict[str, Any], where: str) -> list[str]:
    """Every (method, backbone) recipe of ``encoders`` (with a track's recipe ``override``) as an
    :class:`SSLRecipe`: types, ranges, the method's own settings."""

    problems: list[str] = []
    methods = [m for m in enc.get("methods") or [] if isinstance(m, str)]
    backbones = [b for b in enc.get("backbones") or [] if isinstance(b, str)]
    recipe = enc.get("recipe") if isinstance(enc.get("recipe"), dict) else {}
    per_method = enc.get("method_settings") if isinstance(enc.get("method_settings"), dict) else {}
    method_recipes = enc.get("method_recipes") if isinstance(enc.get("method_recipes"), dict) else {}
    for key in sorted(set(override) & {"method", "backbone", "method_settings"}):
        problems.append(f"{where}.{key}: set under encoders, not in a track's recipe")
    override = {k: v for k, v in override.items() if k not in ("method", "backbone", "method_settings")}
    # a shared value's type problem is reported once, under the mapping that sets it, and left out of the
    # per-(method, backbone) checks; a range problem common to every combination is reported once too
    shared_problems, shared = _typed_part(recipe, f"{where}.recipe") if where == "encoders" else ([], recipe)
    override_problems, override = _typed_part(override, where)
    problems += shared_problems + override_problems
    reported: set[str] = set()
    for method in methods:
        for backbone in backbones:
            settings = {**shared, **(method_recipes.get(method) or {}), **override,
                        "method": method, "backbone": backbone, "method_settings": per_method.get(method) or {}}
            for p in config_problems(SSLRecipe, settings, f"{where}[{method}/{backbone}]"):
                tail = p.split("]", 1)[-1]
                if tail not in reported:
                    reported.add(tail)
                    problems.append(p)
    return problems


def _typed_part(values: dict[str, Any], label: str) -> tuple[list[str], dict[str, Any]]:
    """The type problems of a shared part of a recipe (``label.key: …``) and the part without the
    ill-typed keys (so the per-combination checks do not repeat them)."""

    hints = typing.get_type_hints(SSLRecipe)
    problems: list[str] = []
    typed: dict[str, Any] = {}
    for key, value in values.items():
        wrong = value_problems(value, hints[key], f"{label}.{key}") if key in hints else []
        problems += wrong
        if not wrong:
            typed[key] = value
    return problems, typed


def _validate_scenarios(scen: Any, problems: list[str], datasets: list[str]) -> set[str]:
    if not isinstance(scen, list):
        return set()
    names: set[str] = set()
    for i, s in enumerate(scen):
        if not isinstance(s, dict) or not all(isinstance(s.get(k), str) for k in ("name", "pretrain", "downstream")):
            continue  # the schema reported it
        for key in ("pretrain", "downstream"):
            ds = s[key]
            if ds not in datasets and not ds.startswith(("npz:", "folder:")):
                close = difflib.get_close_matches(ds, datasets, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append(f"scenarios[{i}].{key}: unknown dataset {ds!r}{hint}; valid: {', '.join(datasets)}, npz:PATH, folder:PATH")
        if s["name"] in names:
            problems.append(f"scenarios[{i}].name: {s['name']!r} is used twice")
        names.add(s["name"])
    return names


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

    cells: list[Cell] = []
    skipped: list[SkippedCombination] = []
    # (cell, attack, defense, variant, the cell's victim and encoder typed: built once per track and encoder,
    # not once per cell, for the thousands of cells of the full tier)
    candidates: list[tuple[Cell, MethodEntry, MethodEntry, dict[str, Any], VictimSpec, SSLRecipe]] = []
    scenarios = {s["name"]: s for s in suite.raw["scenarios"]}
    data = {**_keys_with_defaults(DataSpec(), ("root", "download", "image_size", "pretrain_subset", "downstream_subset")),
            **(suite.raw.get("data") or {})}
    victim_defaults = _keys_with_defaults(VictimSpec(), ("kind", "l2", "l2_grid"))
    for track, runner in load_tracks().items():
        body = suite.tracks.get(track)
        if body is None:
            continue
        section = suite.track_specs[track]
        attacks = _method_entries(section.attacks, "", "attack", NO_ATTACK, [], track, [])
        defenses = _method_entries(section.defenses, "", "defense", NO_DEFENSE, [], track, [])
        victim = {**victim_defaults, **(body.get("victim") or {})}
        typed_victim = build_config(VictimSpec, victim)
        track_data = {**data, **(body.get("data") or {})}  # pre-training tracks may shrink data / recipe
        for encoder in encoder_specs(suite):
            if section.methods is not None and encoder["method"] not in section.methods:
                skipped.append(SkippedCombination(
                    track, f"every cell with {encoder['method']}",
                    f"this tier runs the {track} track on {', '.join(section.methods)} encoders only "
                    f"(tracks.{track}.methods: its time limit) — {encoder['method']}"))
                continue
            encoder = {**encoder, **(body.get("recipe") or {})}
            typed_encoder = build_config(SSLRecipe, encoder)
            for scenario_name in section.scenarios or list(scenarios):
                for seed in section.seeds or suite.seeds:
                    for budget in section.budgets:
                        for variant in runner.variants(section):
                            for attack in attacks:
                                for defense in defenses:
                                    spec = {
                                        "suite": suite.name, "tier": suite.tier, "track": track,
                                        "encoder": encoder, "scenario": scenarios[scenario_name],
                                        "data": track_data, "budget": float(budget),
                                        "input_epsilon": variant.get("input_epsilon"),
                                        "attack": attack.to_dict(), "defense": defense.to_dict(),
                                        "victim": victim, "seed": seed,
                                        **{k: v for k, v in variant.items() if k != "input_epsilon"},
                                    }
                                    candidates.append((Cell(track, spec), attack, defense, variant, typed_victim,
                                                       typed_encoder))
    combos = sorted({(d.id, config_hash(d.settings), c.track, config_hash(c.spec["encoder"]), v.kind)
                     for c, _, d, _, v, _ in candidates if d.id != NO_DEFENSE})
    by_hash = {(config_hash(d.settings), config_hash(c.spec["encoder"])): c for c, _, d, _, _, _ in candidates}
    questions = [(d, by_hash[(sh, eh)].defense.settings, t, by_hash[(sh, eh)].spec["encoder"], v)
                 for d, sh, t, eh, v in combos]
    _, answers = resolve([], questions)
    unsupported = dict(zip(combos, answers, strict=True))
    attacks_info, defenses_info = catalogue().attacks, catalogue().defenses
    tracks = load_tracks()
    for cell, attack, defense, variant, victim_spec, encoder_spec in candidates:
        eps = variant.get("input_epsilon")
        reason = _skip_reason(attack, eps) or tracks[cell.track].skip_reason(
            attack, attacks_info[attack.id].space if attack.id != NO_ATTACK else None, defense, victim_spec, variant)
        defended_attacks = suite.track_specs[cell.track].defended_attacks
        defended_methods = suite.track_specs[cell.track].defended_methods
        if reason is None and defense.id != NO_DEFENSE and defended_attacks is not None and attack.name not in defended_attacks:
            reason = (f"this tier evaluates the {cell.track} defenses against {', '.join(defended_attacks)} only "
                      f"(tracks.{cell.track}.defended_attacks: its time limit)")
        method = encoder_spec.method
        if reason is None and defense.id != NO_DEFENSE and defended_methods is not None and method not in defended_methods:
            reason = (f"this tier evaluates the {cell.track} defenses on {', '.join(defended_methods)} encoders only "
                      f"(tracks.{cell.track}.defended_methods: its time limit) — {method}")
        if reason is None and defense.id != NO_DEFENSE:
            reason = unsupported[(defense.id, config_hash(defense.settings), cell.track,
                                  config_hash(cell.spec["encoder"]), victim_spec.kind)] or \
                tracks[cell.track].defense_reason(defense, defenses_info[defense.id].stage)
        if reason:
            what = f"{attack.name} × {defense.name}" + ("" if eps is None else f" (ℓ∞ ≤ {eps:.4g})")
            if method in reason:
                what += f" with {method}"
            skipped.append(SkippedCombination(cell.track, what, reason))
        else:
            cells.append(cell)
    return cells, _dedupe(skipped)


def _keys_with_defaults(spec: MethodConfig, keys: tuple[str, ...]) -> dict[str, Any]:
    """``keys`` of a spec with their default values, in that order (a cell's spec lists them so)."""
    return {key: getattr(spec, key) for key in keys}


def _skip_reason(attack: MethodEntry, eps: float | None) -> str | None:
    """Why a combination is not a cell in every track (a track adds its own: :meth:`Track.skip_reason`)."""
    if attack.id == NO_ATTACK and eps is not None:
        return "no attack: an input constraint does not apply (the unconstrained no-attack cell is the baseline)"
    return None


def _dedupe(skipped: list[SkippedCombination]) -> list[SkippedCombination]:
    seen, out = set(), []
    for s in skipped:
        if (s.track, s.what) not in seen:
            seen.add((s.track, s.what))
            out.append(s)
    return out
