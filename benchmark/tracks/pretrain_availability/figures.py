"""The availability track's figure: accuracy drop per attack and SSL method, probe=clean and probe=poisoned."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from benchmark.tracks.pretrain_availability.info import INFO
from leaderboard.plots import _bars, _title
from leaderboard.render import pooled_by


def figure(df: pd.DataFrame, tier: str, suite: str) -> plt.Figure | None:
    sub = df[(df["track"] == INFO.name) & (df["defense"] == "none") & (df["attack"] != "none")]
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
