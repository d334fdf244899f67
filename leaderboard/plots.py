"""Figures from the per-cell result JSON (matplotlib, no torch): ``python -m benchmark plot``.

One PNG per (tier, suite) and figure kind, written to ``leaderboard/plots/`` by default:

* ``<tier>-<suite>-downstream.png``: accuracy drop against the poison budget ε_d, one line per attack,
  per scenario (no defense, no input constraint).
* ``<tier>-<suite>-pretrain-availability.png``: accuracy drop per attack and SSL method, probe=clean
  (the published protocol) and probe=poisoned side by side (no defense).
* ``<tier>-<suite>-defenses.png``: per track, what each defense restores against the track's strongest
  attack that every defense was run against (undefended minus defended drop; probe=poisoned for
  pretrain-availability), against what it costs on clean data.

Each point is the mean over seeds of the per-seed mean over encoders (and budgets where they are pooled);
error bars are the sample std over seeds, so a single-seed tier shows no bars. Titles name the tier: a
smoke figure is never the published protocol.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from leaderboard.render import _rows, load_records  # noqa: E402

PERCENT = 100.0


def _seed_stats(df: pd.DataFrame, by: list[str], metric: str) -> pd.DataFrame:
    """Mean over everything but ``by`` + seed, then mean and sample std over seeds."""
    col = f"m:{metric}"
    per_seed = df.groupby(by + ["seed"], sort=True)[col].mean().reset_index()
    if not by:
        return pd.DataFrame([{"mean": per_seed[col].mean() * PERCENT, "std": per_seed[col].std() * PERCENT,
                              "count": len(per_seed)}]).fillna({"std": 0.0}) if len(per_seed) else pd.DataFrame()
    out = per_seed.groupby(by, sort=True)[col].agg(["mean", "std", "count"]).reset_index()
    out[["mean", "std"]] *= PERCENT
    return out.fillna({"std": 0.0})


def _title(fig: plt.Figure, tier: str, suite: str, what: str) -> None:
    scale = "published protocol" if tier == "full" else f"{tier} tier, not the published protocol"
    fig.suptitle(f"{what}: suite `{suite}` ({scale}); mean ± std over seeds", fontsize=10)


def downstream_figure(df: pd.DataFrame, tier: str, suite: str) -> plt.Figure | None:
    sub = df[(df["track"] == "downstream") & (df["defense"] == "none") & (df["constraint"] == "unconstrained")
             & (df["attack"] != "none")]
    if sub.empty or "m:accuracy_drop" not in sub:
        return None
    scenarios = sorted(set(sub["scenario"]))
    colour = {a: f"C{i % 10}" for i, a in enumerate(sorted(set(sub["attack"])))}
    fig, axes = plt.subplots(1, len(scenarios), figsize=(5.5 * len(scenarios), 4), squeeze=False)
    for ax, scenario in zip(axes[0], scenarios):
        stats = _seed_stats(sub[sub["scenario"] == scenario], ["attack", "budget"], "accuracy_drop")
        for attack, g in stats.groupby("attack", sort=True):
            ax.errorbar(g["budget"], g["mean"], yerr=g["std"], marker="o", capsize=3, color=colour[attack],
                        label=attack)
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set(title=scenario, xlabel="poison budget ε_d (fraction of the training set)",
               ylabel="test-accuracy drop (points)")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _title(fig, tier, suite, "Downstream attacks")
    return fig


def availability_figure(df: pd.DataFrame, tier: str, suite: str) -> plt.Figure | None:
    sub = df[(df["track"] == "pretrain-availability") & (df["defense"] == "none") & (df["attack"] != "none")]
    metrics = [("accuracy_drop", "probe=clean (published)"), ("accuracy_drop_poisoned_probe", "probe=poisoned")]
    metrics = [(m, t) for m, t in metrics if f"m:{m}" in sub and sub[f"m:{m}"].notna().any()]
    if sub.empty or not metrics:
        return None
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4), squeeze=False, sharey=True)
    encoders = sorted(set(sub["encoder"]))
    attacks = sorted(set(sub["attack"]))
    width = 0.8 / len(encoders)
    for ax, (metric, title) in zip(axes[0], metrics):
        stats = _seed_stats(sub, ["attack", "encoder"], metric)
        for j, encoder in enumerate(encoders):
            g = stats[stats["encoder"] == encoder].set_index("attack").reindex(attacks)
            xs = [i + (j - (len(encoders) - 1) / 2) * width for i in range(len(attacks))]
            ax.bar(xs, g["mean"], width, yerr=g["std"], capsize=2, label=encoder)
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_xticks(range(len(attacks)), attacks, rotation=20)
        ax.set(title=title, ylabel="linear-probe accuracy drop (points)")
    axes[0][0].legend(fontsize=7)
    _title(fig, tier, suite, "Pre-training availability attacks")
    return fig


def defenses_figure(df: pd.DataFrame, tier: str, suite: str) -> plt.Figure | None:
    """Restored (undefended − defended drop vs the strongest attack) against clean cost, per track."""
    rows = []
    # pretrain-availability: the probe=poisoned column, the one where an attack separates at CPU scale
    for track, metric in (("downstream", "accuracy_drop"), ("pretrain-availability", "accuracy_drop_poisoned_probe")):
        sub = df[(df["track"] == track) & (df["constraint"] == "unconstrained")]
        if sub.empty or len(set(sub["defense"])) < 2 or "m:defense_cost" not in sub:
            continue
        # the strongest attack among those every defense of the track was run against (a feature-space
        # poison, for example, cannot go through an input-space defense)
        pairs = sub.groupby("attack")["defense"].nunique()
        defended = [a for a in pairs.index if a != "none" and pairs[a] == sub["defense"].nunique()]
        undefended = sub[(sub["defense"] == "none") & sub["attack"].isin(defended)]
        if undefended.empty:
            continue
        strongest = undefended.groupby("attack")[f"m:{metric}"].mean().idxmax()
        attacked = sub[sub["attack"] == strongest]
        base = _seed_stats(attacked[attacked["defense"] == "none"], [], metric)
        for defense in sorted(set(sub["defense"]) - {"none"}):
            drop = _seed_stats(attacked[attacked["defense"] == defense], [], metric)
            cost = _seed_stats(sub[(sub["defense"] == defense) & (sub["attack"] == "none")], [], "defense_cost")
            if drop.empty or cost.empty:
                continue
            rows.append({"track": track, "metric": metric, "attack": strongest, "defense": defense,
                         "restored": float(base["mean"].iloc[0] - drop["mean"].iloc[0]),
                         "restored_std": float(drop["std"].iloc[0]),
                         "cost": float(cost["mean"].iloc[0]), "cost_std": float(cost["std"].iloc[0])})
    if not rows:
        return None
    table = pd.DataFrame(rows)
    tracks = list(dict.fromkeys(table["track"]))
    colour = {d: f"C{i}" for i, d in enumerate(sorted(set(table["defense"])))}  # same colour in every panel
    fig, axes = plt.subplots(1, len(tracks), figsize=(5.5 * len(tracks), 4), squeeze=False)
    for ax, track in zip(axes[0], tracks):
        t = table[table["track"] == track]
        for r in t.itertuples():
            ax.errorbar(r.cost, r.restored, xerr=r.cost_std, yerr=r.restored_std, marker="o", capsize=3,
                        color=colour[r.defense], label=r.defense)
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.axvline(0.0, color="grey", lw=0.8)
        probe = " (probe=poisoned)" if t["metric"].iloc[0].endswith("poisoned_probe") else ""
        ax.set(title=f"{track}: against `{t['attack'].iloc[0]}`", xlabel="clean accuracy lost (points)",
               ylabel=f"accuracy restored under attack{probe} (points)")
        ax.legend(fontsize=7)
    _title(fig, tier, suite, "Defenses: restored vs cost")
    return fig


FIGURES = {"downstream": downstream_figure, "pretrain-availability": availability_figure, "defenses": defenses_figure}


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
