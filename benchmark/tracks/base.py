"""The track API: a track is one package under ``benchmark/tracks/`` (see :mod:`benchmark.tracks.info`) whose
``track`` module registers a :class:`Track`: its suite section (:attr:`Track.Spec`), the cells that section
expands to (:meth:`Track.variants`, :meth:`Track.skip_reason`), how one cell runs (:meth:`Track.run`) and what
it costs (:meth:`Track.add_work`). The suite, the runner, the estimate, provenance and the board reach a track
only through this class and its :class:`~benchmark.tracks.info.TrackInfo`; none of them names one.

Also here, because every track and the suite share it: a cell (:class:`Cell`), which carries the typed specs of
:mod:`benchmark.tracks.specs` (re-exported).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar, Generic, TypeVar

from benchmark.plugin_base import build_config
from benchmark.pretrain import SSLRecipe
from benchmark.registry import Registry
from benchmark.tracks.common import CellOutcome, RunEnv
from benchmark.tracks.info import TrackInfo, track_infos
from benchmark.tracks.specs import (
    NO_ATTACK,
    NO_DEFENSE,
    DataSpec,
    MethodEntry,
    PretrainDataSpec,
    ScenarioSpec,
    TrackSpec,
    VictimSpec,
)
from benchmark.utils import cell_id

__all__ = ["NO_ATTACK", "NO_DEFENSE", "Cell", "DataSpec", "MethodEntry", "PretrainDataSpec", "ScenarioSpec",
           "SkippedCombination", "Track", "TrackSpec", "VictimSpec", "get_track", "load_tracks", "register_track"]


@dataclass(frozen=True)
class Cell:
    """One point of the matrix. ``spec`` is its resolved description as plain data: the cell's id, cache keys,
    derived seeds and record are built from it, so they do not move when a spec class changes. The properties
    are the same description typed (built once from the validated ``spec``); tracks read those."""

    track: str
    spec: dict[str, Any]

    @property
    def id(self) -> str:
        return cell_id(self.track, self.spec)

    @property
    def seed(self) -> int:
        return int(self.spec["seed"])

    @property
    def budget(self) -> float:
        """The poison fraction (:func:`benchmark.plugin_base.poison_count` turns it into a count)."""
        return float(self.spec["budget"])

    @property
    def input_epsilon(self) -> float | None:
        """The attack's ℓ∞ constraint on its poisons (downstream), or None."""
        value: float | None = self.spec.get("input_epsilon")
        return value

    def variant(self, key: str, default: Any = None) -> Any:
        """A field a track's :meth:`Track.variants` added (e.g. the availability track's ``epsilon``)."""
        return self.spec.get(key, default)

    @cached_property
    def encoder(self) -> SSLRecipe:
        return build_config(SSLRecipe, self.spec["encoder"])

    @cached_property
    def scenario(self) -> ScenarioSpec:
        return build_config(ScenarioSpec, self.spec["scenario"])

    @cached_property
    def data(self) -> DataSpec:
        return build_config(DataSpec, self.spec["data"])

    @cached_property
    def victim(self) -> VictimSpec:
        return build_config(VictimSpec, self.spec["victim"])

    @cached_property
    def attack(self) -> MethodEntry:
        return MethodEntry(**self.spec["attack"])

    @cached_property
    def defense(self) -> MethodEntry:
        return MethodEntry(**self.spec["defense"])


@dataclass(frozen=True)
class SkippedCombination:
    track: str
    what: str
    reason: str


# ------------------------------------------------------------------------------------------- tracks
SpecT = TypeVar("SpecT", bound=TrackSpec)


class Track(ABC, Generic[SpecT]):
    """A threat track. Subclass it in the ``track`` module of the track's package as ``Track[ItsSpec]``, set
    :attr:`info` (the package's ``INFO``) and :attr:`Spec`, implement :meth:`run` (and :meth:`add_work` for
    ``plan --estimate``), and decorate the class with :func:`register_track`."""

    info: ClassVar[TrackInfo]
    Spec: ClassVar[type[TrackSpec]]

    @property
    def name(self) -> str:
        return self.info.name

    def variants(self, spec: SpecT) -> list[dict[str, Any]]:
        """The cell fields this track adds to encoder × scenario × seed × budget × attack × defense, one dict per
        cell of each such combination (``input_epsilon``: the attack's ℓ∞ constraint on its poisons, or None)."""
        return [{"input_epsilon": None}]

    def skip_reason(self, attack: MethodEntry, attack_space: str | None, defense: MethodEntry,
                    victim: VictimSpec, variant: Mapping[str, Any]) -> str | None:
        """Why a combination of the matrix is not a cell of this track (listed as skipped), or None."""
        return None

    def defense_reason(self, defense: MethodEntry, stage: str | None) -> str | None:
        """Why a defense that applies to this track (its ``unsupported`` says it runs) cannot act in it, or None.
        By default a detector (stage ``detect``) cannot: a track that records detections says so by overriding."""
        if stage == "detect":
            return f"{defense.id} detects backdoored encoders, and track {self.name} records no detections"
        return None

    @abstractmethod
    def run(self, cell: Cell, env: RunEnv) -> CellOutcome:
        """Compute one cell's metrics from the artifact cache and plugin calls."""

    def add_work(self, work: Any, cell: Cell, sizes: Any) -> None:
        """Count the cell's distinct work for ``plan --estimate`` (:class:`benchmark.work.WorkList`); a track
        without a cost model is listed as not estimated."""
        work.unmodelled.add(f"track {self.name}: no cost model (implement Track.add_work)")


TRACKS: Registry[Track[Any]] = Registry("track")


TrackT = TypeVar("TrackT", bound="type[Track[Any]]")


def register_track(cls: TrackT) -> TrackT:
    """Class decorator: register one instance of a :class:`Track` under its info's name."""
    if not isinstance(getattr(cls, "info", None), TrackInfo) or not isinstance(getattr(cls, "Spec", None), type):
        raise ValueError(f"{cls.__name__} needs class attributes `info` (a TrackInfo) and `Spec` (a TrackSpec)")
    TRACKS.register(cls.info.name, cls())
    return cls


def load_tracks() -> dict[str, Track[Any]]:
    """Every declared track, imported and registered, in board order (the scoring process, the suite, the
    estimate). Tracks reach attacks and defenses only through plugin processes (:mod:`benchmark.workers`)."""
    for name, info in track_infos().items():
        if name not in TRACKS:
            importlib.import_module(f"{info.package}.track")
        if name not in TRACKS:
            raise ValueError(f"{info.package}.track registers no track named {name!r} (decorate its Track with "
                             "@register_track)")
    return {name: TRACKS.get(name) for name in track_infos()}


def get_track(name: str) -> Track[Any]:
    return load_tracks()[name] if name in track_infos() else TRACKS.get(name)
