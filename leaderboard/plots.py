"""Figures from the per-cell result JSON (matplotlib, no torch): ``python -m benchmark plot``.

One PNG per (tier, suite) and figure kind, written to ``leaderboard/plots/`` by default:

* ``<tier>-<suite>-downstream.png``: accuracy drop against the poison budget ε_d, one line per input-space
  attack, per scenario (no defense, no input constraint; feature-space upper bounds are left out so they do
  not squash the axis: their numbers are on the board); a suite with one budget gets bars per attack.
* ``<tier>-<suite>-pretrain-availability.png``: accuracy drop per attack and SSL method, probe=clean
  (the published protocol) and probe=poisoned side by side (no defense).
* ``<tier>-<suite>-pretrain-targeted.png``: per attack and SSL method, the attack-success-rate gain over no
  attack (on the targets and on augmented views of them) and the target-class probability gain.
* ``<tier>-<suite>-defenses.png``: per track, what each defense restores against the track's strongest
  input-space attack (undefended minus defended drop; probe=poisoned for pretrain-availability) against what
  it costs on clean data: the numbers of the board's headline tables.

The statistic is the board's, stated once: the mean over the pooled (encoder, scenario, budget, constraint)
columns of the per-column seed means, error bars = the pooled seed std; a single-seed tier has none and its
titles say so. Titles name the tier: a smoke figure is never the published protocol.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from leaderboard.render import _rows, _strongest_attacks, broken_reference, defense_effects, load_records, pooled_by


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


def downstream_figure(df: pd.DataFrame, tier: str, suite: str) -> plt.Figure | None:
    sub = df[(df["track"] == "downstream") & (df["defense"] == "none") & (df["constraint"] == "unconstrained")
             & (df["attack"] != "none") & (df["space"] != "feature")]
    if sub.empty or "m:accuracy_drop" not in sub:
        return None
    scenarios = sorted(set(sub["scenario"]))
    if sub["budget"].nunique() == 1:  # one budget: a line of single points says nothing, bars do
        budget = float(sub["budget"].iloc[0])
        fig, axes = plt.subplots(1, 1, figsize=(1.2 * sub["attack"].nunique() + 4, 4.2), squeeze=False)
        attacks = sorted(set(sub["attack"]))
        _bars(axes[0][0], pooled_by(sub, ["attack", "scenario"], "accuracy_drop"), attacks, scenarios, "attack", "scenario")
        axes[0][0].set(ylabel=f"test-accuracy drop at ε_d = {budget:g} (points)")
        axes[0][0].legend(fontsize=7)
        _title(fig, sub, tier, suite, "Downstream input-space attacks (feature-space upper bounds: see the board)")
        return fig
    colour = method_colours(set(df["attack"]) | set(df["defense"]))  # one mapping for the suite's figures
    fig, axes = plt.subplots(1, len(scenarios), figsize=(5.5 * len(scenarios), 4.2), squeeze=False)
    for ax, scenario in zip(axes[0], scenarios):
        stats = pooled_by(sub[sub["scenario"] == scenario], ["attack", "budget"], "accuracy_drop")
        for attack, g in stats.groupby("attack", sort=True):
            ax.errorbar(g["budget"], g["mean"], yerr=g["spread"].fillna(0.0), marker="o", capsize=3, color=colour[attack],
                        label=attack)
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set(title=scenario, xlabel="poison budget ε_d (fraction of the training set)",
               ylabel="test-accuracy drop (points)")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _title(fig, sub, tier, suite, "Downstream input-space attacks (feature-space upper bounds: see the board)")
    return fig


def availability_figure(df: pd.DataFrame, tier: str, suite: str) -> plt.Figure | None:
    sub = df[(df["track"] == "pretrain-availability") & (df["defense"] == "none") & (df["attack"] != "none")]
    metrics = [("accuracy_drop", "probe=clean (published)"), ("accuracy_drop_poisoned_probe", "probe=poisoned")]
    metrics = [(m, t) for m, t in metrics if f"m:{m}" in sub and sub[f"m:{m}"].notna().any()]
    if sub.empty or not metrics:
        return None
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4.2), squeeze=False, sharey=True)
    encoders, attacks = sorted(set(sub["encoder"])), sorted(set(sub["attack"]))
    for ax, (metric, title) in zip(axes[0], metrics):
        _bars(ax, pooled_by(sub, ["attack", "encoder"], metric), attacks, encoders, "attack", "encoder")
        ax.set(title=title, ylabel="linear-probe accuracy drop (points)")
    axes[0][0].legend(fontsize=7)
    _title(fig, sub, tier, suite, "Pre-training availability attacks")
    return fig


def targeted_figure(df: pd.DataFrame, tier: str, suite: str) -> plt.Figure | None:
    sub = df[(df["track"] == "pretrain-targeted") & (df["defense"] == "none") & (df["attack"] != "none")]
    if sub.empty or "m:asr_gain" not in sub or sub["m:asr_gain"].isna().all():
        return None
    encoders, attacks = sorted(set(sub["encoder"])), sorted(set(sub["attack"]))
    panels = [("asr_gain", "target inputs", "ASR gain over no attack (points)"),
              ("asr_gain_augmented", "augmented views of the targets", "ASR gain over no attack (points)"),
              ("target_probability_gain", "target-class probability", "gain over a clean encoder (points)"),
              ("target_margin_gain", "target-class margin", "gain over a clean encoder (logits)")]
    panels = [p for p in panels if f"m:{p[0]}" in sub and sub[f"m:{p[0]}"].notna().any()]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, (metric, title, ylabel) in zip(axes[0], panels):
        _bars(ax, pooled_by(sub, ["attack", "encoder"], metric), attacks, encoders, "attack", "encoder")
        ax.set(title=title, ylabel=ylabel)
    axes[0][0].legend(fontsize=7)
    _title(fig, sub, tier, suite, "Pre-training targeted attacks")
    return fig


def defenses_figure(df: pd.DataFrame, tier: str, suite: str) -> plt.Figure | None:
    """Restored against clean cost per defense, against each track's strongest input-space attack."""
    panels = []
    for track in ("downstream", "pretrain-availability"):
        sub = df[df["track"] == track]
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
        for e in effects:  # a defense whose same-schedule reference is broken: hollow, and labelled so
            broken = broken_reference(e)
            ax.errorbar(e["cost"], e["restored"], xerr=0.0 if e["cost_spread"] != e["cost_spread"] else e["cost_spread"],
                        yerr=0.0 if e["restored_spread"] != e["restored_spread"] else e["restored_spread"],
                        marker="o", capsize=3, color=colour[e["defense"]], mfc="none" if broken else colour[e["defense"]],
                        label=e["defense"] + (" (reference broken: not comparable)" if broken else ""))
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.axvline(0.0, color="grey", lw=0.8)
        probe = " (probe=poisoned)" if track == "pretrain-availability" else ""
        ax.set(title=f"{track}: against `{attack}`", xlabel="clean accuracy lost (points)",
               ylabel=f"accuracy restored{probe} (points)")
        ax.legend(fontsize=7)
    _title(fig, df, tier, suite, "Defenses: restored vs cost")
    return fig


FIGURES = {"downstream": downstream_figure, "pretrain-availability": availability_figure,
           "pretrain-targeted": targeted_figure, "defenses": defenses_figure}


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
        for kind, make in FIGURES.items():
            fig = make(sdf, tier, suite)
            if fig is None:
                continue
            path = output_dir / f"{tier}-{suite}-{kind}.png"
            fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
            plt.close(fig)
            written.append(path)
    return written
