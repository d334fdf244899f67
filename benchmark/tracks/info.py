"""What the board, the record schema and provenance know about a track, without importing torch.

A track is one package under ``benchmark/tracks/`` (or one named in ``POISONBENCH_TRACKS``, comma-separated:
an out-of-tree track, or the test suite's toy track). Its ``info`` module declares ``INFO``, a
:class:`TrackInfo`: the metrics every record of the track carries, the board's tables and headline, and the
files its cells' numbers depend on. Its ``track`` module registers the :class:`benchmark.tracks.base.Track`
that runs its cells; its optional ``figures`` module the board's figures (:mod:`leaderboard.plots`).
Nothing outside a track's package names the track.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import pkgutil
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import NamedTuple

TRACKS_ENV = "POISONBENCH_TRACKS"
REPO_ROOT = Path(__file__).resolve().parent.parent.parent
# modules of a track's package that no number depends on (the board's text and figures, the estimate): editing
# them leaves its records fresh
OFF_COMPUTE_PATH = ("info.py", "figures.py", "work.py", "examples.py")


class MetricTable(NamedTuple):
    """One per-column table of the board: a metric, its caption, and whether higher is a stronger attack."""

    metric: str
    title: str
    higher: bool = True


class ExtraColumn(NamedTuple):
    """A metric shown beside the headline's (pooled the same way) and its column header."""

    metric: str
    header: str


@dataclass(frozen=True, kw_only=True)
class TrackInfo:
    """A track's declaration for the board, the record schema and provenance (plain data, no torch)."""

    name: str
    order: int  # where the track comes on the board and in a suite's cells
    required_metrics: tuple[str, ...]  # every ``ok`` record of the track carries these numbers
    headline_metric: str  # the metric the headline ranks attacks by
    headline_description: str
    fallback_metric: str  # ranked by when no record has the headline metric
    budget_meaning: str  # what a budget fraction counts in this track
    tables: tuple[MetricTable, ...]  # the per-column tables of the suite's section
    defense_metrics: tuple[tuple[str, str], ...] = ()  # the attacks × defenses matrices: (metric, caption)
    headline_columns: tuple[ExtraColumn, ...] = ()
    small_scale_notes: dict[str, str] = field(default_factory=dict)  # tier → note under the track's heading
    restored_label: str | None = None  # the defenses figure's panel ("" or a qualifier); None: no panel
    shared_sources: tuple[str, ...] = ()  # files outside the package its cells' numbers depend on (repo-relative)
    package: str = ""  # set by discovery

    def sources(self) -> tuple[str, ...]:
        """The files its cells' numbers depend on besides the engine's: the package's modules (but the board's
        and the estimate's) and its shared sources, repository-relative where inside the repository."""
        spec = importlib.util.find_spec(self.package)
        folders = [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
        own = sorted(_relative(p) for folder in folders for p in folder.glob("*.py") if p.name not in OFF_COMPUTE_PATH)
        return tuple(dict.fromkeys([*self.shared_sources, *own]))


def _relative(path: Path) -> str:
    resolved = path.resolve()
    try:
        return resolved.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return resolved.as_posix()


def track_packages() -> tuple[str, ...]:
    """Every track package: the subpackages of ``benchmark.tracks``, then ``POISONBENCH_TRACKS``."""
    extra = [p.strip() for p in os.environ.get(TRACKS_ENV, "").split(",") if p.strip()]
    return tuple(dict.fromkeys(_shipped_packages() + tuple(extra)))


@cache
def _shipped_packages() -> tuple[str, ...]:
    """The subpackages of ``benchmark.tracks``, listed once per process (asked for once per cell)."""
    found = pkgutil.iter_modules([str(Path(__file__).parent)])
    return tuple(f"{__package__}.{m.name}" for m in sorted(found, key=lambda m: m.name) if m.ispkg and not m.name.startswith("_"))


@cache
def _infos(packages: tuple[str, ...]) -> dict[str, TrackInfo]:
    infos: dict[str, TrackInfo] = {}
    for package in packages:
        declared = importlib.import_module(f"{package}.info").INFO
        if not isinstance(declared, TrackInfo):
            raise TypeError(f"{package}.info.INFO must be a TrackInfo, got {type(declared).__name__}")
        if declared.name in infos:
            raise ValueError(f"track {declared.name!r} is declared twice ({infos[declared.name].package}, {package})")
        infos[declared.name] = dataclasses.replace(declared, package=package)
    return dict(sorted(infos.items(), key=lambda item: (item[1].order, item[0])))


def track_infos() -> dict[str, TrackInfo]:
    """Every track's declaration, by name, in board order."""
    return _infos(track_packages())


def track_names() -> tuple[str, ...]:
    return tuple(track_infos())


def track_info(name: str) -> TrackInfo | None:
    """The declaration of track ``name``; None for a name no package declares."""
    return track_infos().get(name)


def track_order(name: str) -> int:
    """The sort key of a track (unknown names last)."""
    names = track_names()
    return names.index(name) if name in names else len(names)
