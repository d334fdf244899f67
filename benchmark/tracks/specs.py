"""The typed specs of a suite's parts that cells carry (:class:`benchmark.tracks.base.Cell`): a scenario, the data
scale, the victim, an attack or defense entry and the keys every track's section has. Each is a
:class:`~benchmark.plugin_base.MethodConfig`: validated by :func:`~benchmark.plugin_base.config_problems` and built
from a validated mapping by :func:`~benchmark.plugin_base.build_config`, so a default is written once, here."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Literal

from benchmark.plugin_base import MethodConfig, check_range
from benchmark.probe import SGDProbeConfig

NO_ATTACK = "none"
NO_DEFENSE = "none"


@dataclass(frozen=True)
class MethodEntry:
    """One attack or defense entry of a suite: registry id, display name, settings."""

    id: str
    name: str
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "settings": self.settings}


# ------------------------------------------------------------------------------------------- sections
def _subset_problems(spec: Any) -> list[str]:
    problems = []
    if spec.image_size is not None and spec.image_size < 8:
        problems.append(f"image_size: {spec.image_size} must be ≥ 8 or null")
    for key in ("pretrain_subset", "downstream_subset"):
        value = getattr(spec, key)
        if value is not None and value < 10:
            problems.append(f"{key}: {value} must be ≥ 10 or null")
    return problems


@dataclass(frozen=True, kw_only=True)
class PretrainDataSpec(MethodConfig):
    """What a pre-training track's ``data`` may override."""

    image_size: int | None = None
    pretrain_subset: int | None = None
    downstream_subset: int | None = None

    def problems(self) -> list[str]:
        return _subset_problems(self)


@dataclass(frozen=True, kw_only=True)
class DataSpec(PretrainDataSpec):
    """``data``: where data sets live and the scale every track shares."""

    root: str | None = None
    download: bool = False


@dataclass(frozen=True, kw_only=True)
class ScenarioSpec(MethodConfig):
    """One ``scenarios`` item: pre-training data set → downstream data set."""

    name: str
    pretrain: str
    downstream: str


@dataclass(frozen=True, kw_only=True)
class VictimSpec(MethodConfig):
    """``tracks.<track>.victim``: how the victim's classifier is trained and evaluated."""

    kind: Literal["convex", "sgd"] = "convex"
    l2: float | Literal["auto"] = "auto"
    l2_grid: list[float] = field(default_factory=lambda: [1e-4, 1e-3, 1e-2])
    sgd: SGDProbeConfig | None = None
    supervised_eval: bool = False
    supervised_epochs: int = 5
    asr_augmentations: int = 10

    def problems(self) -> list[str]:
        problems: list[str] = []
        if self.l2 != "auto":
            check_range(problems, "l2", self.l2, 0.0, 1e6)
        if not self.l2_grid:
            problems.append("l2_grid: expected a non-empty list of numbers ≥ 0")
        problems += [f"l2_grid: {g!r} must be ≥ 0" for g in self.l2_grid if g < 0]
        check_range(problems, "supervised_epochs", self.supervised_epochs, 1, 100_000)
        check_range(problems, "asr_augmentations", self.asr_augmentations, 1, 10_000)
        return problems


def _fractions(values: list[float], name: str) -> list[str]:
    if not values:
        return [f"{name}: expected a non-empty list of numbers"]
    return [f"{name}: {v!r} is not a fraction in (0, 1]" for v in values if not 0 < v <= 1]


@dataclass(frozen=True, kw_only=True)
class TrackSpec(MethodConfig):
    """The keys every track has: scenarios (default: all), budgets, attacks, defenses, victim."""

    scenarios: list[str] | None = None
    budgets: list[float]
    attacks: list[Any]
    defenses: list[Any] = field(default_factory=lambda: [NO_DEFENSE])
    # the attack names (``none`` included) that the defenses are evaluated against; null: every attack.
    # A tier's time limit may restrict it; the other combinations are listed as skipped, with this reason.
    defended_attacks: list[str] | None = None
    # the SSL methods whose encoders this track's cells use; null: every method of the suite. A tier's time
    # limit may restrict it; the other methods are listed as skipped, with this reason.
    methods: list[str] | None = None
    # the SSL methods whose encoders the defenses are evaluated on; null: every method of the track
    defended_methods: list[str] | None = None
    victim: VictimSpec | None = None
    # the seeds of this track's cells; null: the suite's. A tier spends its seeds where the spread needs them.
    seeds: list[int] | None = None

    def problems(self) -> list[str]:
        problems = _fractions(self.budgets, "budgets") + ([] if self.attacks else ["attacks: expected a non-empty list"]) + (
            [] if self.defenses else ["defenses: expected a non-empty list"])
        if self.seeds is not None:
            problems += _seed_problems(self.seeds)
        names = [_entry_name(a) for a in self.attacks or []]
        for name in self.defended_attacks or []:
            if name not in names:
                close = difflib.get_close_matches(str(name), [n for n in names if n], n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append(f"defended_attacks: {name!r} is not an attack of this track{hint}; "
                                f"valid: {', '.join(n for n in names if n)}")
        return problems


def _seed_problems(seeds: list[int]) -> list[str]:
    problems = [] if seeds else ["seeds: expected a non-empty list of non-negative integers"]
    problems += [f"seeds: {s} is negative" for s in seeds if s < 0]
    if len(set(seeds)) != len(seeds):
        problems.append("seeds: duplicates")
    return problems


def _entry_name(item: Any) -> str | None:
    """The display name of a raw attack/defense item (a string id or a mapping with id and name)."""
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        return item.get("name") or item.get("id")
    return None
