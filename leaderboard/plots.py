"""Figures from the per-cell result JSON (matplotlib, no torch): ``python -m benchmark plot``.

One PNG per (tier, suite) and figure kind, written to ``leaderboard/plots/`` by default:

* ``<tier>-<suite>-<track>.png``: each track's own figure (``figure`` in its package's ``figures`` module; e.g.
  the downstream track's accuracy drop against ε_d per input-space attack, the availability track's drop per
  attack and SSL method with both probes, the targeted track's ASR and target-class gains).
* ``<tier>-<suite>-defenses.png``: per track, what each defense restores against the track's strongest
  input-space attack (undefended minus defended drop, on the metric the track's ``restored_label`` names) against what
  it costs on clean data: the numbers of the board's headline tables.

The statistic is the board's, stated once: the mean over the pooled (encoder, scenario, budget, constraint)
columns of the per-column seed means, error bars = the pooled seed std; a single-seed tier has none and its
titles say so. Titles name the tier: a smoke figure is never the published protocol.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from benchmark.tracks.info import track_infos
from leaderboard.render import _rows, _strongest_attacks, broken_reference, defense_effects, load_records


def method_colours(names: Iterable[str]) -> dict[str, str]:
    """A fixed colour per attack or defense id: its slot is a hash of the id into 60 colours (tab20, tab20b,
    tab20c), taken in hash order with the next free slot on a collision. A new method recolours no other
    (an alphabetical assignment recoloured every one after it), unless it collides with one."""
    import hashlib

    from matplotlib import colormaps

    palette = [colormaps[m](i) for m in ("tab20", "tab20b", "tab20c") for i in range(20)]
    slot = {n: int(hashlib.sha256(n.encode()).hexdigest(), 16) % len(palette) for n in set(names)}
    taken: dict[int, str] = {}
    for name in sorted(slot, key=lambda n: (slot[n], n)):
        i = slot[name]
        while i in taken:
            i = (i + 1) % len(palette)
        taken[i] = name
    return {name: "#{:02x}{:02x}{:02x}".format(*(int(c * 255) for c in palette[i][:3])) for i, name in taken.items()}


def _bars(ax: plt.Axes, stats: pd.DataFrame, groups: list[str], series: list[str], group_key: str, series_key: str) -> None:
    width = 0.8 / max(1, len(series))
    for j, name in enumerate(series):
        g = stats[stats[series_key] == name].set_index(group_key).reindex(groups)
        xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(groups))]
        ax.bar(xs, g["mean"], width, yerr=g["spread"].fillna(0.0), capsize=2, label=name)
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xticks(range(len(groups)), groups, rotation=20)


def _title(fig: plt.Figure, df: pd.DataFrame, tier: str, suite: str, what: str) -> None:
    scale = "published protocol" if tier == "full" else f"{tier} tier, not the published protocol"
    seeds = df["seed"].nunique()
    stat = f"± pooled seed std, {seeds} seeds" if seeds > 1 else "1 seed: no spread"
    fig.suptitle(f"{what}: suite `{suite}` ({scale}; {stat})", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.93))


def defenses_figure(df: pd.DataFrame, tier: str, suite: str) -> plt.Figure | None:
    """Restored against clean cost per defense, against each track's strongest input-space attack."""
    panels = []
    for track, info in track_infos().items():
        sub = df[df["track"] == track]
        if info.restored_label is None:
            continue
        if sub.empty or len(set(sub["defense"])) < 2:
            continue
        _, strongest = _strongest_attacks(sub, track)
        effects = defense_effects(sub, track, strongest) if strongest else []
        if effects:
            panels.append((track, strongest, effects))
    if not panels:
        return None
    colour = method_colours(set(df["attack"]) | set(df["defense"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.4), squeeze=False)
    for ax, (track, attack, effects) in zip(axes[0], panels):
        probe = track_infos()[track].restored_label or ""
        for e in effects:  # a defense whose same-schedule reference is broken: hollow, and labelled so
            broken = broken_reference(e)
            ax.errorbar(e["cost"], e["restored"], xerr=0.0 if e["cost_spread"] != e["cost_spread"] else e["cost_spread"],
                        yerr=0.0 if e["restored_spread"] != e["restored_spread"] else e["restored_spread"],
                        marker="o", capsize=3, color=colour[e["defense"]], mfc="none" if broken else colour[e["defense"]],
                        label=e["defense"] + (" (reference broken: not comparable)" if broken else ""))
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.axvline(0.0, color="grey", lw=0.8)
        ax.set(title=f"{track}: against `{attack}`", xlabel="clean accuracy lost (points)",
               ylabel=f"accuracy restored{probe} (points)")
        ax.legend(fontsize=7)
    _title(fig, df, tier, suite, "Defenses: restored vs cost")
    return fig


Figure = Callable[[pd.DataFrame, str, str], "plt.Figure | None"]


def figures() -> dict[str, Figure]:
    """Figure kind → its maker: each track's own (``figure`` in its package's ``figures`` module, where it
    has one), then the defenses' figure."""
    makers: dict[str, Figure] = {}
    for track, info in track_infos().items():
        if importlib.util.find_spec(f"{info.package}.figures") is not None:
            makers[track] = importlib.import_module(f"{info.package}.figures").figure
    return makers | {"defenses": defenses_figure}


def write_plots(results_dir: Path, output_dir: Path) -> list[Path]:
    """Write every figure the results support; returns the paths written."""
    records, _ = load_records(results_dir)
    if not records:
        return []
    df = _rows(records)
    df = df[df["status"] == "ok"]
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for (tier, suite), sdf in df.groupby(["tier", "suite"], sort=True):
        for kind, make in figures().items():
            fig = make(sdf, tier, suite)
            if fig is None:
                continue
            path = output_dir / f"{tier}-{suite}-{kind}.png"
            fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
            plt.close(fig)
            written.append(path)
    return written
