"""The downstream track's figure: accuracy drop against ε_d per input-space attack (bars at one budget)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from benchmark.tracks.downstream.info import INFO
from leaderboard.plots import _bars, _title, method_colours
from leaderboard.render import pooled_by


def figure(df: pd.DataFrame, tier: str, suite: str) -> plt.Figure | None:
    sub = df[(df["track"] == INFO.name) & (df["defense"] == "none") & (df["constraint"] == "unconstrained")
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
