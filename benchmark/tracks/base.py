"""The track API: a track is one package under ``benchmark/tracks/`` (see :mod:`benchmark.tracks.info`) whose
``track`` module registers a :class:`Track`: its suite section (:attr:`Track.Spec`), the cells that section
expands to (:meth:`Track.variants`, :meth:`Track.skip_reason`), how one cell runs (:meth:`Track.run`) and what
it costs (:meth:`Track.add_work`). The suite, the runner, the estimate, provenance and the board reach a track
only through this class and its :class:`~benchmark.tracks.info.TrackInfo`; none of them names one.

Also here, because every track and the suite share them: a cell (:class:`Cell`), a suite's attack or defense
entry (:class:`MethodEntry`) and the keys every track's section has (:class:`TrackSpec`).
"""

from __future__ import annotations

import difflib
import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from benchmark.plugin_base import MethodConfig, check_range
from benchmark.registry import Registry
from benchmark.tracks.common import CellOutcome, RunEnv
from benchmark.tracks.info import TrackInfo, track_infos
from benchmark.utils import cell_id

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


@dataclass(frozen=True)
class Cell:
    """One point of the matrix. ``spec`` is the full resolved description; ``id`` is derived from it."""

    track: str
    spec: dict[str, Any]

    @property
    def id(self) -> str:
        return cell_id(self.track, self.spec)

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
class SGDProbeSpec(MethodConfig):
    """``victim.sgd``: the reference SGD linear probe (:class:`benchmark.probe.SGDProbeConfig`)."""

    epochs: int = 100
    lr: float = 1.0
    momentum: float = 0.9
    batch_size: int = 256
    milestones: list[float] = field(default_factory=lambda: [0.6, 0.8])
    crop_padding: int = 4
    flip: bool = True

    def problems(self) -> list[str]:
        problems: list[str] = []
        check_range(problems, "epochs", self.epochs, 1, 100_000)
        check_range(problems, "lr", self.lr, 0.0, 100.0, low_open=True)
        check_range(problems, "momentum", self.momentum, 0.0, 1.0, high_open=True)
        check_range(problems, "batch_size", self.batch_size, 1, 1 << 20)
        check_range(problems, "crop_padding", self.crop_padding, 0, 1024)
        problems += [f"milestones: {m!r} is not a fraction in [0, 1]" for m in self.milestones if not 0 <= m <= 1]
        return problems


@dataclass(frozen=True, kw_only=True)
class VictimSpec(MethodConfig):
    """``tracks.<track>.victim``: how the victim's classifier is trained and evaluated."""

    kind: Literal["convex", "sgd"] = "convex"
    l2: float | Literal["auto"] = "auto"
    l2_grid: list[float] = field(default_factory=lambda: [1e-4, 1e-3, 1e-2])
    sgd: SGDProbeSpec | None = None
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


# ------------------------------------------------------------------------------------------- tracks
class Track(ABC):
    """A threat track. Subclass it in the ``track`` module of the track's package, set :attr:`info` (the
    package's ``INFO``) and :attr:`Spec`, implement :meth:`run` (and :meth:`add_work` for ``plan --estimate``),
    and decorate the class with :func:`register_track`."""

    info: ClassVar[TrackInfo]
    Spec: ClassVar[type[TrackSpec]]

    @property
    def name(self) -> str:
        return self.info.name

    def variants(self, section: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The cell fields this track adds to encoder × scenario × seed × budget × attack × defense, one dict per
        cell of each such combination (``input_epsilon``: the attack's ℓ∞ constraint on its poisons, or None)."""
        return [{"input_epsilon": None}]

    def skip_reason(self, attack: MethodEntry, attack_space: str | None, defense: MethodEntry,
                    victim: Mapping[str, Any], variant: Mapping[str, Any]) -> str | None:
        """Why a combination of the matrix is not a cell of this track (listed as skipped), or None."""
        return None

    def defense_reason(self, defense: MethodEntry, stage: str | None) -> str | None:
        """Why a defense that applies to this track (its ``unsupported`` says it runs) cannot act in it, or None."""
        return None

    @abstractmethod
    def run(self, cell: Cell, env: RunEnv) -> CellOutcome:
        """Compute one cell's metrics from the artifact cache and plugin calls."""

    def add_work(self, work: Any, cell: Cell, sizes: Any) -> None:
        """Count the cell's distinct work for ``plan --estimate`` (:class:`benchmark.work.WorkList`); a track
        without a cost model is listed as not estimated."""
        work.unmodelled.add(f"track {self.name}: no cost model (implement Track.add_work)")


TRACKS: Registry[Track] = Registry("track")


def register_track(cls: type[Track]) -> type[Track]:
    """Class decorator: register one instance of a :class:`Track` under its info's name."""
    if not isinstance(getattr(cls, "info", None), TrackInfo) or not isinstance(getattr(cls, "Spec", None), type):
        raise ValueError(f"{cls.__name__} needs class attributes `info` (a TrackInfo) and `Spec` (a TrackSpec)")
    TRACKS.register(cls.info.name, cls())
    return cls


def load_tracks() -> dict[str, Track]:
    """Every declared track, imported and registered, in board order (the scoring process, the suite, the
    estimate). Tracks reach attacks and defenses only through plugin processes (:mod:`benchmark.workers`)."""
    for name, info in track_infos().items():
        if name not in TRACKS:
            importlib.import_module(f"{info.package}.track")
        if name not in TRACKS:
            raise ValueError(f"{info.package}.track registers no track named {name!r} (decorate its Track with "
                             "@register_track)")
    return {name: TRACKS.get(name) for name in track_infos()}


def get_track(name: str) -> Track:
    return load_tracks()[name] if name in track_infos() else TRACKS.get(name)
