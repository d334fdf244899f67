"""The backdoor track's figure: ASR gain over the clean encoder and the trigger alone, per attack and SSL method."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from benchmark.tracks.pretrain_backdoor.info import INFO
from leaderboard.plots import _bars, _title
from leaderboard.render import pooled_by


def figure(df: pd.DataFrame, tier: str, suite: str) -> plt.Figure | None:
    sub = df[(df["track"] == INFO.name) & (df["defense"] == "none") & (df["attack"] != "none")]
    if sub.empty or "m:asr_gain" not in sub or sub["m:asr_gain"].isna().all():
        return None
    encoders, attacks = sorted(set(sub["encoder"])), sorted(set(sub["attack"]))
    panels = [("asr_gain", "ASR gain over the clean encoder", "points"),
              ("attack_success_rate", "ASR of the backdoored victim", "%"),
              ("attack_success_rate_clean_encoder", "the trigger on a clean encoder", "%"),
              ("clean_accuracy_change", "clean-accuracy change", "points")]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.0 * len(panels), 4.2), squeeze=False)
    for ax, (metric, title, ylabel) in zip(axes[0], panels):
        _bars(ax, pooled_by(sub, ["attack", "encoder"], metric), attacks, encoders, "attack", "encoder")
        ax.set(title=title, ylabel=ylabel)
    axes[0][0].legend(fontsize=7)
    _title(fig, sub, tier, suite, "Pre-training backdoor attacks")
    return fig
