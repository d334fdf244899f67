"""Track pipelines: each turns one :class:`benchmark.suite.Cell` into metrics.

``TRACK_RUNNERS[track](cell, env)`` returns a :class:`CellOutcome`. Artifacts that several cells share
(encoders, cached features, clean heads, poisons) come from the cache in ``env``.
"""

from __future__ import annotations

from collections.abc import Callable

from benchmark.plugins import import_submodules
from benchmark.tracks.common import CellOutcome, RunEnv

TRACK_RUNNERS: dict[str, Callable[..., CellOutcome]] = {}


def register_track(name: str) -> Callable[[Callable[..., CellOutcome]], Callable[..., CellOutcome]]:
    def wrap(fn: Callable[..., CellOutcome]) -> Callable[..., CellOutcome]:
        TRACK_RUNNERS[name] = fn
        return fn

    return wrap


def load_tracks() -> dict[str, Callable[..., CellOutcome]]:
    """The track runners (one module per track). They reach attacks and defenses only through plugin
    processes (:mod:`benchmark.workers`); no plugin module is imported here."""

    import_submodules(__name__, __path__)
    return TRACK_RUNNERS


__all__ = ["TRACK_RUNNERS", "CellOutcome", "RunEnv", "load_tracks", "register_track"]
