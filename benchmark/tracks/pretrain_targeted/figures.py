"""The targeted track's figure: ASR and target-class gains per attack and SSL method."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from benchmark.tracks.pretrain_targeted.info import INFO
from leaderboard.plots import _bars, _title
from leaderboard.render import pooled_by


def figure(df: pd.DataFrame, tier: str, suite: str) -> plt.Figure | None:
    sub = df[(df["track"] == INFO.name) & (df["defense"] == "none") & (df["attack"] != "none")]
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
