"""Render ``leaderboard/README.md`` from the per-cell result JSON (RobustBench style), without torch.

Deterministic: fixed sorting and number formats, no timestamps, so CI can check the committed board is
current (``python -m benchmark leaderboard --check``). Seeds are aggregated as mean ± sample std (n);
rows whose means lie within each other's spread share a rank ("a difference inside the spread is no
ranking").
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
from tabulate import tabulate

from benchmark.provenance import fresh_at, pending_recompute, sandboxed, staleness
from benchmark.tracks.info import TrackInfo, track_info, track_names, track_order
from leaderboard.schema import location_problems, record_problems

TIER_ORDER = ("full", "cpu", "smoke", "custom")
TIER_NOTES = {
    "full": "the published protocol (CIFAR/STL, ResNet-18, paper epochs)",
    "cpu": "CPU scale (embedded data, small CNNs): rankings at this scale, not the published protocol",
    "smoke": "smoke scale (embedded data, tiny CNNs, a few epochs): checks the pipeline end to end; NOT the published "
             "protocol and not a ranking of methods",
    "custom": "a user-defined suite",
}
def _info(track: str) -> TrackInfo:
    info = track_info(track)
    if info is None:  # records of an undeclared track fail the schema check before they reach a table
        raise ValueError(f"unknown track {track!r}; declared: {', '.join(track_names())}")
    return info


def tracks_in(df: pd.DataFrame) -> list[str]:
    """The declared tracks that have rows in ``df``, in board order."""
    present = set(df["track"])
    return [t for t in track_names() if t in present]


def load_records(results_dir: Path) -> tuple[list[dict[str, Any]], list[str]]:
    records, problems = [], []
    for path in sorted(Path(results_dir).rglob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            problems.append(f"{path}: unreadable ({exc})")
            continue
        bad = record_problems(record)
        bad = bad or location_problems(record, path)
        if bad:
            problems.append(f"{path}: {'; '.join(bad)}")
        else:
            records.append(record)
    return records, problems


def _rows(records: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for r in records:
        c = r["cell"]
        row = {
            "tier": r["tier"], "suite": r["suite"], "track": r["track"], "status": r["status"], "cell_id": r["cell_id"],
            "message": r["message"], "encoder": f"{c['encoder']['method']}/{c['encoder']['backbone']}" + "".join(
                f" {k} {v}" for k, v in sorted((c.get("method_settings") or {}).items())),
            "scenario": f"{c['scenario']['name']} ({c['scenario']['pretrain']}→{c['scenario']['downstream']})",
            "attack": c["attack"]["name"], "defense": c["defense"]["name"], "budget": c["budget"],
            "constraint": "unconstrained" if c.get("input_epsilon") is None else f"ℓ∞ ≤ {epsilon_label(c['input_epsilon'])}",
            "seed": c["seed"], "space": r["details"].get("attack_space", "input"),
            "attack_id": c["attack"]["id"], "defense_id": c["defense"]["id"],
            "attack_settings": json.dumps(c["attack"].get("settings") or {}, sort_keys=True),
            "defense_settings": json.dumps(c["defense"].get("settings") or {}, sort_keys=True),
            "wall_seconds": float(r["provenance"].get("wall_seconds") or 0.0),
            "device": device_label(r["provenance"].get("device") or {}),
            "attack_module": ((r["provenance"].get("sources") or {}).get("attack") or {}).get("module"),
            "defense_module": ((r["provenance"].get("sources") or {}).get("defense") or {}).get("module"),
            "attack_meta": json.dumps((r.get("plugins") or {}).get("attack") or {}, sort_keys=True),
            "defense_meta": json.dumps((r.get("plugins") or {}).get("defense") or {}, sort_keys=True),
        }
        row.update({f"m:{k}": v for k, v in r["metrics"].items() if isinstance(v, (int, float))})
        diagnostics = r["details"].get("attack_diagnostics") or {}
        row.update({f"d:{k}": v for k, v in diagnostics.items() if isinstance(v, (int, float))})
        rows.append(row)
    return _with_plugin_metadata(pd.DataFrame(rows))


def _with_plugin_metadata(df: pd.DataFrame) -> pd.DataFrame:
    """Each row's plugin metadata, from its record or, for a record written before records carried it, from
    another record of the same plugin module (the board reads records, never plugin source)."""
    for kind in ("attack", "defense"):
        if f"{kind}_meta" not in df:
            continue
        known = {module: meta for module, meta in zip(df[f"{kind}_module"], df[f"{kind}_meta"]) if meta != "{}"}
        df[f"{kind}_meta"] = [known.get(module, meta) if meta == "{}" else meta
                              for module, meta in zip(df[f"{kind}_module"], df[f"{kind}_meta"])]
    return df


def _metas(df: pd.DataFrame, kind: str) -> dict[str, dict[str, Any]]:
    """Suite name of an attack or defense → its plugin's metadata (see :class:`leaderboard.schema.Record`)."""
    if f"{kind}_meta" not in df:
        return {}
    return {name: json.loads(meta) for name, meta in zip(df[kind], df[f"{kind}_meta"]) if meta != "{}"}


def device_label(device: Mapping[str, Any]) -> str:
    """The machine a record was computed on, as its provenance names it: the GPU, or the CPU model."""
    if device.get("type") not in (None, "cpu"):
        return str(device.get("name") or device.get("type"))
    return str(device.get("cpu") or device.get("name") or "unknown CPU")


def epsilon_label(eps: float) -> str:
    """ε as the papers write it: 8/255 rather than 0.03137."""
    steps = eps * 255
    return f"{round(steps)}/255" if abs(steps - round(steps)) < 1e-6 else f"{eps:.4g}"


LOGIT_METRICS = frozenset({"target_margin", "target_margin_no_attack", "target_margin_gain"})


def metric_scale(metric: str) -> float:
    """What the board multiplies a metric by: counts and logits as they are, fractions to percent / points."""
    name = metric.removeprefix("m:")
    return 1.0 if name.startswith("n_") or name in LOGIT_METRICS else 100.0


def _fmt(values: pd.Series, scale: float) -> tuple[str, float, float]:
    vals = [v * scale for v in values.dropna()]
    if not vals:
        return "", math.nan, math.nan
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else math.nan
    spread = f" ± {std:.1f}" if len(vals) > 1 else ""
    return f"{mean:.1f}{spread} (n={len(vals)})", mean, std


def _ranks(stats: list[tuple[str, float, float]], higher_first: bool) -> dict[str, str]:
    """Rank rows by mean; a row within the spread (max of the two stds) of its group's leader ties with it."""
    ordered = sorted(stats, key=lambda s: (-s[1] if higher_first else s[1], s[0]))
    ranks, leader, rank = {}, None, 0
    for i, (name, mean, std) in enumerate(ordered):
        if math.isnan(mean):
            ranks[name] = "–"
            continue
        tied = leader is not None and abs(mean - leader[1]) <= max(_nz(std), _nz(leader[2]))
        if not tied:
            rank, leader = i + 1, (name, mean, std)
        ranks[name] = f"{rank}=" if tied or _has_tie(ordered, i, leader) else str(rank)
    return ranks


def _nz(x: float) -> float:
    return 0.0 if math.isnan(x) else x


def _has_tie(ordered: list[tuple[str, float, float]], i: int, leader: Any) -> bool:
    if i + 1 >= len(ordered) or leader is None:
        return False
    nxt = ordered[i + 1]
    return not math.isnan(nxt[1]) and abs(nxt[1] - leader[1]) <= max(_nz(nxt[2]), _nz(leader[2]))


def _metric_table(df: pd.DataFrame, metric: str, higher_first: bool) -> str:
    col = f"m:{metric}"
    if col not in df or df[col].isna().all():
        return ""
    df = df[df[col].notna()]
    columns = sorted({(e, b) for e, b in zip(df["encoder"], df["budget"])})
    scale = metric_scale(metric)
    stats, cells = [], {}
    for attack, group in df.groupby("attack", sort=True):
        label = attack + (" *(feature-space upper bound, not an input-space attack)*" if (group["space"] == "feature").any() else "")
        row, means, stds = {}, [], []
        for enc, budget in columns:
            sub = group[(group["encoder"] == enc) & (group["budget"] == budget)][col]
            row[(enc, budget)], m, sd = _fmt(sub, scale)
            means.append(m)
            stds.append(sd)
        mean, spread = _pool(means, stds)
        cells[label] = (row, "" if math.isnan(mean) else f"{mean:.1f}" + ("" if math.isnan(spread) else f" ± {spread:.1f}"))
        stats.append((label, mean, spread))
    single_seed = all(math.isnan(sd) for _, _, sd in stats)
    ranks = dict.fromkeys(cells, "–") if single_seed else _ranks(stats, higher_first)
    order = sorted(cells, key=lambda k: (_rank_key(ranks[k]), -stats_of(stats, k) if higher_first else stats_of(stats, k), k))
    headers = ["rank", "attack"] + [f"{e} · {_budget(b)}" for e, b in columns] + ["mean over columns ± pooled seed std"]
    body = [[ranks[k], k] + [cells[k][0][c] for c in columns] + [cells[k][1]] for k in order]
    table = tabulate(body, headers=headers, tablefmt="github", disable_numparse=True)
    if single_seed:
        table += "\n\n*One seed per column: no spread, so no ranking (rows sorted by mean only).*"
    return table


def _pool(means: list[float], stds: list[float]) -> tuple[float, float]:
    """Mean of the column means and the pooled seed std (root mean of the column variances)."""
    valid = [m for m in means if not math.isnan(m)]
    if not valid:
        return math.nan, math.nan
    variances = [s * s for s in stds if not math.isnan(s)]
    spread = math.sqrt(sum(variances) / len(variances)) if variances else math.nan
    return sum(valid) / len(valid), spread


def _rank_key(rank: str) -> int:
    return 10**6 if rank == "–" else int(rank.rstrip("="))


def stats_of(stats: list[tuple[str, float, float]], label: str) -> float:
    mean = next(m for name, m, _ in stats if name == label)
    return -math.inf if math.isnan(mean) else mean


def _budget(b: float) -> str:
    return f"budget {b:g}"


def _encoder_table(df: pd.DataFrame) -> str:
    if "m:clean_accuracy" not in df:
        return ""
    body = []
    for (enc, scen), g in df.groupby(["encoder", "scenario"], sort=True):
        per_seed = g.drop_duplicates("seed")
        row = [enc, scen, _fmt(per_seed["m:clean_accuracy"], 100)[0]]
        if "m:random_init_accuracy" in g:
            row += [_fmt(per_seed["m:random_init_accuracy"], 100)[0], _fmt(per_seed.get("m:encoder_gain", pd.Series(dtype=float)), 100)[0]]
        body.append(row)
    headers = ["encoder", "scenario", "clean accuracy (%)", "random-init encoder (%)", "SSL gain over random init (points)"]
    return tabulate(body, headers=headers[: len(body[0])], tablefmt="github", disable_numparse=True)


def render_leaderboard(results_dir: Path, *, waiting: dict[str, int] | None = None) -> tuple[str, list[str]]:
    """The board's markdown and the problems of invalid result files. ``waiting``: :func:`pending_counts`, where
    the caller has it already (``leaderboard --check`` reviews every record once)."""
    records, problems = load_records(results_dir)
    lines = ["# PoisonBench leaderboard", "",
             "Generated by `python -m benchmark leaderboard` from the result files under `leaderboard/results/`; "
             "do not edit by hand. Numbers are percentages / percentage points, mean ± sample std over seeds (n). "
             "Rows whose means lie within each other's spread share a rank (`1=`): a difference inside the spread is no ranking. "
             "The data subsets (pre-training, downstream training and test) are drawn once, with seed 0, for every seed: "
             "the spread covers training randomness and the attacks' own draws (the targeted track's target pool is drawn "
             "per seed), not data resampling.", ""]
    if not records:
        lines += ["No results yet: run `python -m benchmark run`.", ""]
        return "\n".join(lines), problems
    df = _rows(records)
    body: list[str] = []
    waiting = pending_counts(results_dir) if waiting is None else waiting
    for tier in [t for t in TIER_ORDER if t in set(df["tier"])]:
        for suite in sorted(set(df[df["tier"] == tier]["suite"])):
            sdf = df[(df["tier"] == tier) & (df["suite"] == suite)]
            body += [f"## Tier `{tier}`: suite `{suite}`", "", f"*{TIER_NOTES[tier]}.*", "", compute_note(sdf), ""]
            if waiting.get(suite):
                body += [_pending_note(results_dir, suite, waiting[suite], len(sdf)), ""]
            for track in tracks_in(sdf):
                section = _track_section(sdf[sdf["track"] == track], track)
                note = _info(track).small_scale_notes.get(tier)
                if note:  # right under the track's heading
                    section[2:2] = [f"*{note}*", ""]
                body += section
    bad = df[df["status"] != "ok"]
    if len(bad):
        body += ["## Cells not on the board", "",
                 "Cells whose attack broke the threat model (`invalid`), ran past the time limit (`timeout`) or failed (`error`).", ""]
        rows = [[r.tier, r.track, r.cell_id, r.status, r.message[:160]] for r in bad.sort_values(["tier", "track", "cell_id"]).itertuples()]
        body += [tabulate(rows, headers=["tier", "track", "cell", "status", "message"], tablefmt="github", disable_numparse=True), ""]
    body += (published_section(df) + diagnostics_section(df[df["status"] == "ok"]) + methods_section(df[df["status"] == "ok"])
             + figures_section(Path(results_dir).parent / "plots"))
    lines += headlines(df) + contents(body) + body
    return "\n".join(lines).rstrip() + "\n", problems


def compute_note(df: pd.DataFrame) -> str:
    """What computing these records took: the sum of their cells' wall times, per track (a cell that built a
    shared encoder counts its pre-training; cells computed beside other jobs count as they ran)."""
    def span(seconds: float) -> str:
        if seconds >= 5400:
            return f"{seconds / 3600:.1f} h"
        return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"

    per_track = df.groupby("track")["wall_seconds"].sum()
    parts = ", ".join(f"{track} {span(per_track[track])}" for track in tracks_in(df))
    return (f"Recorded compute: {span(float(per_track.sum()))} of cell wall time over {len(df)} cells ({parts}): "
            "the sum of each record's `wall_seconds`, shared encoders counted in the cell that built them, "
            "cells computed beside other jobs counted as they ran. " + machines_note(df))


def machines_note(df: pd.DataFrame) -> str:
    """Which machines computed the records, and the tracks whose rows mix machines: SSL pre-training
    amplifies the float rounding that differs between CPU models (:mod:`benchmark.verify`), so two rows of
    one column computed on different machines differ by that as well as by the method."""
    if "device" not in df or df.empty:
        return ""
    counts = df["device"].value_counts()
    text = "Computed on: " + ", ".join(f"{name} ({n} cell{'' if n == 1 else 's'})" for name, n in counts.items()) + "."
    mixed = [track for track in tracks_in(df) if df.loc[df["track"] == track, "device"].nunique() > 1]
    if mixed:
        text += (f" Rows of {', '.join(f'`{t}`' for t in mixed)} come from more than one machine: float rounding "
                 "differs between CPU models and pre-training amplifies it, so a difference between those rows "
                 "includes the machines' (recompute the track on one machine to rank it).")
    return text


def _anchor(heading: str, seen: dict[str, int]) -> str:
    """GitHub's anchor for a heading (lower case, punctuation dropped, spaces to '-', '-N' for repeats)."""
    text = re.sub(r"[^\w\- ]", "", heading.lstrip("#").strip().lower()).replace(" ", "-")
    n = seen.get(text, 0)
    seen[text] = n + 1
    return text if n == 0 else f"{text}-{n}"


def contents(body: list[str]) -> list[str]:
    """A linked table of contents of the tier (##) and track (###) headings of ``body``."""
    lines, seen = ["## Contents", ""], {"headlines": 1, "contents": 1}
    for line in body:
        if line.startswith("#### "):
            _anchor(line, seen)
        elif line.startswith(("## ", "### ")):
            indent = "  " if line.startswith("### ") else ""
            title = line.lstrip("#").strip()
            lines.append(f"{indent}- [{title}](#{_anchor(line, seen)})")
    return lines + [""]


def _track_section(df: pd.DataFrame, track: str) -> list[str]:
    lines = [f"### Track `{track}`", ""]
    ok = df[df["status"] == "ok"]
    enc = _encoder_table(ok[ok["attack"] == "none"] if (ok["attack"] == "none").any() else ok)
    if enc:
        lines += ["Clean encoders (linear probe on the downstream task; the gain column says whether the SSL encoder helps "
                  "that task at all):", "", enc, ""]
    for scenario in sorted(set(ok["scenario"])):
        sdf = ok[ok["scenario"] == scenario]
        for constraint in sorted(set(sdf["constraint"])):
            cdf = sdf[sdf["constraint"] == constraint]
            for metric, title in _info(track).defense_metrics:
                matrix = _defense_matrix(cdf, metric)
                if matrix:
                    short = scenario.split(" ")[0]
                    lines += [f"#### {short} · {constraint} · attacks × defenses · `{metric}`", "",
                              f"*Scenario {scenario}, {constraint}: {title}; mean over encoders and budgets ± pooled seed std.*",
                              "", matrix, ""]
            found = detection_rows(cdf)
            if found:
                short = scenario.split(" ")[0]
                lines += [f"#### {short} · {constraint} · detectors", "", f"*Scenario {scenario}, {constraint}: {DETECTION_NOTE}.*",
                          "", tabulate(found, headers=DETECTION_HEADERS, tablefmt="github", disable_numparse=True), ""]
            for defense in sorted(set(cdf["defense"]) - detectors(cdf), key=lambda d: (d != "none", d)):
                ddf = cdf[cdf["defense"] == defense]
                for metric, title, higher in _info(track).tables:
                    table = _metric_table(ddf, metric, higher)
                    if table:
                        short = scenario.split(" ")[0]
                        lines += [f"#### {short} · {constraint} · defense `{defense}` · `{metric}`", "",
                                  f"*Scenario {scenario}, {constraint}, defense `{defense}`: {title}; "
                                  "mean ± sample std over seeds (n) per column.*", "", table, ""]
    return lines


DETECTION_SCORE = "m:detection_score"


def detectors(df: pd.DataFrame) -> set[str]:
    """The defenses that inspect encoders (their cells carry a detection score) rather than change the victim:
    the board shows their detection rates, not what they restore."""
    return set(df.loc[df[DETECTION_SCORE].notna(), "defense"]) if DETECTION_SCORE in df else set()


def detection_rows(df: pd.DataFrame) -> list[list[str]]:
    """Per detector and attack: the AUROC of its score over the backdoored victims (positives: cells whose attack
    released poisons) against the clean encoders of the same settings (negatives, each counted once), and its own
    verdict's rates: flagged backdoored victims (TPR) and flagged clean encoders (FPR)."""
    from sklearn.metrics import roc_auc_score

    rows = []
    for detector in sorted(detectors(df)):
        cells = df[(df["defense"] == detector) & df[DETECTION_SCORE].notna()]
        clean = cells.drop_duplicates(["encoder", "scenario", "seed"])
        negatives = clean["m:detection_score_clean_encoder"].astype(float).tolist()
        fpr = float(clean["m:detection_flagged_clean_encoder"].mean())
        poisoned = cells[(cells["attack"] != "none") & (cells.get("m:n_poison", pd.Series(1.0, index=cells.index)) > 0)]
        for attack in sorted(set(poisoned["attack"])):
            rows_of = poisoned[poisoned["attack"] == attack]
            positives = rows_of[DETECTION_SCORE].astype(float).tolist()
            both = len(set(negatives)) + len(set(positives)) > 1 and positives and negatives
            auroc = roc_auc_score([1] * len(positives) + [0] * len(negatives), positives + negatives) if both else math.nan
            rows.append([f"`{detector}`", f"`{attack}`", "–" if math.isnan(auroc) else f"{auroc:.2f}",
                         f"{float(rows_of['m:detection_flagged'].mean()):.0%}", f"{fpr:.0%}",
                         f"{len(positives)} / {len(negatives)}"])
    return rows


DETECTION_HEADERS = ["detector", "attack", "AUROC", "backdoored flagged (TPR)", "clean flagged (FPR)",
                     "encoders (backdoored / clean)"]
DETECTION_NOTE = ("AUROC of the detector's score, the backdoored victims against the clean encoders of the same settings "
                  "(0.5 = chance; with a few seeds a coarse number); the rates are its own verdict's")


def _defense_matrix(df: pd.DataFrame, metric: str) -> str:
    """Attacks × defenses: the mean over (encoder, budget) columns of the per-column seed means, ± the
    pooled seed std, with each defense's clean cost (clean accuracy without − with it, no attack) as the
    last row. Detectors are left out (:func:`detection_rows`)."""
    df = df[~df["defense"].isin(detectors(df))]
    col = f"m:{metric}"
    if col not in df or df[col].isna().all() or len(set(df["defense"])) < 2:
        return ""
    defenses = sorted(set(df["defense"]), key=lambda d: (d != "none", d))
    body = []
    for attack in sorted(set(df["attack"]), key=lambda a: (a != "none", a)):
        sub = df[df["attack"] == attack]
        body.append([attack] + [_pooled_cell(sub[sub["defense"] == d], col) for d in defenses])
    if "m:defense_cost" in df:
        row = ["*defense cost (clean accuracy lost against its same-schedule reference, every cell)*"]
        row += ["0.0" if d == "none" else _pooled_cell(defense_cells(df, d), "m:defense_cost") for d in defenses]
        body.append(row)
    broken = {d for d in defenses if d != "none" and reference_shortfall(df, d) > REFERENCE_SHORTFALL_POINTS}
    headers = ["attack"] + [f"defense `{d}`" + (" (reference broken)" if d in broken else "") for d in defenses]
    return tabulate(body, headers=headers, tablefmt="github", disable_numparse=True)


def _pooled_cell(df: pd.DataFrame, col: str) -> str:
    """Mean over (encoder, budget) columns ± pooled seed std, for one table cell."""
    if col not in df or df[col].dropna().empty:
        return ""
    means, stds = [], []
    for _, g in df.groupby(["encoder", "budget"], sort=True):
        _, m, sd = _fmt(g[col], metric_scale(col))
        means.append(m)
        stds.append(sd)
    mean, spread = _pool(means, stds)
    return f"{mean:.1f}" + ("" if math.isnan(spread) else f" ± {spread:.1f}")


def _pending_note(results_dir: Path, suite: str, waiting: int, total: int) -> str:

    pending = pending_recompute(results_dir) or {}
    commits = " or ".join(f"`{commit[:10]}`" for commit in pending["before"])
    return (f"> **Recompute in progress:** {waiting} of this suite's {total} records were computed with the code of "
            f"commit {commits} and await the recompute for: {pending['reason']} "
            f"(`python -m benchmark run --suite {suite} --stale --sandbox required`). The rest are recomputed; "
            "both describe the same protocol, on possibly different CPUs.")


def write_leaderboard(results_dir: Path, output: Path) -> Path:
    text, problems = render_leaderboard(results_dir)
    for p in problems:
        print(f"warning: skipped invalid result {p}")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    return output


def stale_report(results_dir: Path, *, committed: bool = False) -> str:
    """Every record that no longer describes the code in this tree, grouped by suite with the files that
    changed and the command that recomputes exactly those cells; empty when all are current.

    ``committed`` (the board's own results): a record computed without the sandbox is stale too, and a
    recompute in progress (:func:`benchmark.provenance.pending_recompute`) excuses the records of its
    suites that still describe its ``before`` commit, and nothing else (:func:`pending_counts` counts them)."""
    return freshness_report(results_dir, committed=committed)[0]


def freshness_report(results_dir: Path, *, committed: bool = False) -> tuple[str, dict[str, int]]:
    """:func:`stale_report` and :func:`pending_counts` from one pass over the records."""
    by_suite, waiting, pending = _review(results_dir, committed)
    lines = []
    for suite, stale in sorted(by_suite.items()):
        causes = sorted({r for _, reasons in stale for r in reasons})
        lines.append(f"{len(stale)} result(s) of suite {suite} no longer match the code: {'; '.join(causes[:12])}"
                     + (f" (+{len(causes) - 12} more)" if len(causes) > 12 else ""))
        lines += [f"  stale: {cell_id}" for cell_id, _ in stale[:20]] + ([f"  … and {len(stale) - 20} more"] if len(stale) > 20 else [])
        lines.append(f"  recompute exactly these: python -m benchmark run --suite {suite} --stale --sandbox required, "
                     "then python -m benchmark leaderboard")
    if pending is not None and not any(waiting.values()):
        lines.append(f"{Path(results_dir).parent / 'recompute.yaml'} names a recompute that is finished: remove it")
    return "\n".join(lines), waiting


def pending_counts(results_dir: Path) -> dict[str, int]:
    """Per suite of a recompute in progress: how many records still await it (computed before it)."""
    return _review(results_dir, committed=True)[1]


def _review(results_dir: Path, committed: bool) -> tuple[dict[str, list[tuple[str, list[str]]]], dict[str, int], dict[str, Any] | None]:
    """One pass over the records: the stale ones by suite (with their reasons), the number awaiting a
    recompute in progress per suite, and that recompute (None without one, or when not ``committed``)."""

    pending = pending_recompute(results_dir) if committed else None
    by_suite: dict[str, list[tuple[str, list[str]]]] = {}
    waiting = dict.fromkeys((pending or {}).get("suites", []), 0)
    for record in _valid_records(results_dir):
        reasons = staleness(record) + ([] if not committed or sandboxed(record) else ["its plugin calls ran without the sandbox"])
        if not reasons:
            continue
        if record["suite"] in waiting and any(fresh_at(record, commit) for commit in pending["before"]):
            waiting[record["suite"]] += 1
        else:
            by_suite.setdefault(record["suite"], []).append((record["cell_id"], reasons))
    return by_suite, waiting, pending


def _valid_records(results_dir: Path) -> list[dict[str, Any]]:
    records = []
    for path in sorted(Path(results_dir).rglob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # reported by the schema check
        if isinstance(record, dict) and record_problems(record) == []:
            records.append(record)
    return records


# ------------------------------------------------------------------------------------------ headlines
def _columns(df: pd.DataFrame) -> list[str]:
    return ["encoder", "scenario", "budget", "constraint"]


def _per_column(df: pd.DataFrame, col: str) -> dict[tuple, tuple[float, float]]:
    """(encoder, scenario, budget, constraint) → (seed mean, seed std) of ``col`` in points (logits for a
    margin)."""
    out = {}
    for key, g in df.groupby(_columns(df), sort=True):
        _, mean, std = _fmt(g[col], metric_scale(col))
        if not math.isnan(mean):
            out[key] = (mean, std)
    return out


def _pooled(stats: dict[tuple, tuple[float, float]]) -> tuple[float, float]:
    return _pool([m for m, _ in stats.values()], [s for _, s in stats.values()])


def _pm(mean: float, spread: float) -> str:
    return "" if math.isnan(mean) else f"{mean:.1f}" + ("" if math.isnan(spread) else f" ± {spread:.1f}")


def _metric_column(df: pd.DataFrame, metric: str) -> str | None:
    col = f"m:{metric}"
    return col if col in df and not df[col].isna().all() else None


def _strongest_attacks(df: pd.DataFrame, track: str) -> tuple[list[list[str]], str | None]:
    """Rows (attack, mean ± spread, columns won) sorted by mean, and the strongest input-space attack."""
    info = _info(track)
    metric = info.headline_metric
    col = _metric_column(df, metric) or _metric_column(df, info.fallback_metric)
    undefended = df[(df["defense"] == "none") & (df["attack"] != "none")]
    if col is None or undefended.empty:
        return [], None
    groups = dict(tuple(undefended.groupby("attack")))
    per_attack = {a: _per_column(g, col) for a, g in groups.items()}
    columns = sorted({k for stats in per_attack.values() for k in stats})
    modules, metas = _modules(undefended, "attack"), _metas(undefended, "attack")
    controls = {a for a, g in groups.items() if _control(g, metas.get(a, {}))}
    wins = dict.fromkeys(per_attack, 0)
    for key in columns:  # won by the one attack with an effect strictly above every other's (controls do not compete)
        present = sorted(((stats[key][0], a) for a, stats in per_attack.items() if key in stats and a not in controls),
                         reverse=True)
        if present and present[0][0] > 0 and (len(present) == 1 or present[0][0] > present[1][0]):
            wins[present[0][1]] += 1
    feature = set(undefended[undefended["space"] == "feature"]["attack"])
    unclipped = set(undefended[undefended["space"] == "input-unclipped"]["attack"])
    ranked = sorted(per_attack, key=lambda a: -_pooled(per_attack[a])[0])
    rows = [[_linked(a, modules) + (" *(control)*" if a in controls else _attack_label(a, track, feature, modules, metas)),
             _pm(*_pooled(per_attack[a])), "–" if a in controls else f"{wins[a]} of {len(columns)}",
             diagnostic_text(groups[a])] for a in ranked]
    extra = [f"m:{c.metric}" for c in info.headline_columns]
    if extra:
        values = {a: [_pm(*_pooled(_per_column(g, col))) if col in g else "" for col in extra] for a, g in groups.items()}
        rows = [row[:3] + values[a] + row[3:] for row, a in zip(rows, ranked)]
    nulls = {a for a in ranked if _expected_null(a, track, metas)}
    defended = set(df[df["defense"] != "none"]["attack"])  # a tier may defend only some attacks
    strongest = next((a for a in ranked if a not in feature | unclipped | nulls | controls
                      and (a in defended or not defended)), None)
    return rows, strongest


def _control(rows: pd.DataFrame, meta: Mapping[str, Any]) -> bool:
    """Whether a suite entry is a control row: its settings match its plugin's ``control_settings``."""
    controls = meta.get("control_settings") or {}
    for settings in set(rows["attack_settings"]):
        values = json.loads(settings)
        if any(values.get(name) in meaning for name, meaning in controls.items()):
            return True
    return False


def _attack_label(attack: str, track: str, feature: set[str], modules: dict[str, str],
                  metas: dict[str, dict[str, Any]]) -> str:
    if attack in feature:
        return " *(feature-space upper bound)*"
    if _expected_null(attack, track, metas):
        return " *(expected null)*"
    if attack in modules and modules[attack].endswith("_unclipped"):
        return " *(pixels not clipped to [0, 1]: not valid images)*"
    return ""


def _expected_null(attack: str, track: str, metas: dict[str, dict[str, Any]]) -> str:
    """Why ``attack`` is expected to do nothing on ``track`` (its plugin's ``expected_null``), or ''."""
    return str((metas.get(attack, {}).get("expected_null") or {}).get(track, ""))


# diagnostic (name in the attack's diagnostics) → how the board shows it; the first ones present are shown
DIAGNOSTICS: tuple[tuple[str, str], ...] = (
    ("epsilon_w", "target ε_w {:.3f}·‖θ‖"),
    ("target_attained", "attained in {:.0%} of cells"),
    ("gc_residual_ratio", "GC residual end/start {:.2f}"),
    ("gc_last_quarter_share", "last quarter's share of its fall {:.1%}"),
    ("target_distance_ratio", "‖θ_poisoned − θ̂‖/‖θ_clean − θ̂‖ {:.1f}"),
    ("tgda_objective_gain", "TGDA objective gain {:.3f}"),
    ("tgda_last_quarter_share", "last quarter's share of it {:.1%}"),
    ("zeta_norm_ratio", "‖ζ‖/‖clean‖ {:.2f}"),
    ("feature_match_error", "feature-match error {:.2f}"),
    ("single_part_view_fraction", "single-part views {:.1%}"),
    ("n_target_classes", "target classes per cell {:.0f}"),
    ("final_train_error", "surrogate train error {:.1%} (UE stops below 1 %)"),
    ("loss_poisoned", "SSL loss on the poisoned images {:.2f}"),
    ("loss_clean", "on the clean ones {:.2f}"),
)


# shares whose mean is taken as a ratio of means (a share of a near-zero gain says nothing alone)
RATIO_OF_MEANS = {"tgda_last_quarter_share": ("tgda_last_quarter_gain", "tgda_objective_gain")}


def _diagnostic_mean(df: pd.DataFrame, name: str) -> float:
    """A diagnostic's mean over the rows' cells; TGDA's last-quarter share weighted by each cell's gain."""
    part, whole = RATIO_OF_MEANS.get(name, (None, None))
    if part and f"d:{part}" in df and f"d:{whole}" in df and df[f"d:{whole}"].mean() > 0:
        return float(df[f"d:{part}"].mean() / df[f"d:{whole}"].mean())
    return float(df[f"d:{name}"].mean())


def diagnostic_text(df: pd.DataFrame) -> str:
    """The diagnostics that say whether an attack did its job (mean over the rows' cells): residual ratio,
    decoder MSE against the mean-image MSE, ζ's norm, feature-match error, single-part view fraction."""
    parts = []
    for name, fmt in DIAGNOSTICS:
        col = f"d:{name}"
        if col in df and df[col].notna().any():
            parts.append(fmt.format(_diagnostic_mean(df, name)))
    if "d:decoder_mse" in df and df["d:decoder_mse"].notna().any() and "d:constant_mse" in df:
        parts.append(f"decoder MSE {df['d:decoder_mse'].mean():.3f} vs mean image {df['d:constant_mse'].mean():.3f}")
    return "; ".join(parts)


def diagnostics_section(df: pd.DataFrame) -> list[str]:
    """Every numeric diagnostic every attack records (the headline shows the few that say whether it did its
    job; this shows them all): mean over the undefended cells, per tier, suite, track and attack."""
    undefended = df[(df["defense"] == "none") & (df["attack"] != "none")]
    names = sorted(c for c in undefended.columns if c.startswith("d:"))
    rows = []
    for (tier, suite, track, attack), g in undefended.groupby(["tier", "suite", "track", "attack"], sort=True):
        present = [n for n in names if g[n].notna().any()]
        if present:
            values = "; ".join(f"{n[2:]} {_diagnostic_mean(g, n[2:]):.4g}" for n in present)
            rows.append([tier, suite, track, attack, int(g[present[0]].notna().sum()), values])
    rows.sort(key=lambda r: (TIER_ORDER.index(r[0]) if r[0] in TIER_ORDER else 99, r[1],
                             track_order(r[2]), r[3]))
    if not rows:
        return []
    return ["## Diagnostics", "", "Every numeric diagnostic the attacks record, mean over their undefended cells (the "
            "headlines show those that say whether the attack did its job; the attack modules say what each means).", "",
            tabulate(rows, headers=["tier", "suite", "track", "attack", "cells", "diagnostics (mean)"], tablefmt="github",
                     disable_numparse=True), ""]


def defense_effects(df: pd.DataFrame, track: str, attack: str) -> list[dict[str, Any]]:
    """Each defense against ``attack`` (numbers in points): ``restored`` = defended − undefended accuracy under
    the attack, where the undefended victim is trained the same way as the defended one (the cells'
    ``accuracy_restored``; else undefended − defended drop on the columns both have, ± the pooled spread of
    the difference), ``cost`` = clean accuracy lost with the defense and no attack against that same
    reference, the privacy ε where reported; sorted by what it restores. The board and the plots use it."""
    info = _info(track)
    metric = info.headline_metric
    col = _metric_column(df, metric) or _metric_column(df, info.fallback_metric)
    if col is None:
        return []
    base = _per_column(df[(df["attack"] == attack) & (df["defense"] == "none")], col)
    effects = []
    for defense in sorted(d for d in set(df["defense"]) - detectors(df) if d != "none"):
        rows = df[(df["attack"] == attack) & (df["defense"] == defense)]
        restored_col = _metric_column(rows, "accuracy_restored") if metric == "accuracy_drop" else None
        if restored_col:  # measured in the cell against the same-schedule undefended victim
            per_column = _per_column(rows, restored_col)
            shared = sorted(per_column)
            restored = _pooled(per_column)
        else:
            defended = _per_column(rows, col)
            shared = sorted(set(base) & set(defended))
            spreads = [math.nan if math.isnan(base[k][1]) and math.isnan(defended[k][1])
                       else math.sqrt(_nz(base[k][1]) ** 2 + _nz(defended[k][1]) ** 2) for k in shared]
            restored = _pool([base[k][0] - defended[k][0] for k in shared], spreads)
        if not shared:
            continue
        cost = _pooled(_per_column(defense_cells(df, defense), "m:defense_cost")) if "m:defense_cost" in df else (math.nan, math.nan)
        clean = df[(df["attack"] == "none") & (df["defense"] == defense)]
        effects.append({"defense": defense, "restored": restored[0], "restored_spread": restored[1], "cost": cost[0],
                        "cost_spread": cost[1], "privacy_epsilon": _mean_of(clean, "m:privacy_epsilon"),
                        "columns": len(shared), "attack_columns": len(base),
                        "reference_shortfall": reference_shortfall(df, defense),
                        "removed_poison": _mean_of(rows, "m:removed_poison_share"),
                        "removed_clean": _mean_of(clean, "m:removed_clean_share")})
    return sorted(effects, key=lambda e: (-e["restored"] if not math.isnan(e["restored"]) else math.inf, e["defense"]))


def _mean_of(df: pd.DataFrame, col: str) -> float:
    values = df[col].dropna() if col in df else pd.Series(dtype=float)
    return float(values.mean()) if len(values) else math.nan


# a same-schedule reference this many points (median over the defense's cells) below the undefended victim
# is broken: the schedule itself, not the defense, loses the accuracy, and restored / cost measure nothing
REFERENCE_SHORTFALL_POINTS = 5.0
CLEAN_CELL_KEYS = ["encoder", "scenario", "budget", "constraint", "seed"]


def defense_cells(df: pd.DataFrame, defense: str) -> pd.DataFrame:
    """One row per clean head of ``defense``: every cell records its ``defense_cost`` (the clean heads do not
    depend on the attack), so the cost is read from all of them, each (column, seed) once."""
    return df[df["defense"] == defense].drop_duplicates(CLEAN_CELL_KEYS)


def reference_shortfall(df: pd.DataFrame, defense: str) -> float:
    """Median over the defense's cells of (undefended clean accuracy − its same-schedule reference's), in
    points; NaN for a defense without a reference (data and post-hoc stages)."""
    cells = defense_cells(df, defense)
    if "m:reference_clean_accuracy" not in cells or "m:clean_accuracy" not in cells:
        return math.nan
    gap = (cells["m:clean_accuracy"] - cells["m:reference_clean_accuracy"]).dropna()
    return float(gap.median() * 100) if len(gap) else math.nan


def broken_reference(effect: dict[str, Any]) -> bool:
    return not math.isnan(effect["reference_shortfall"]) and effect["reference_shortfall"] > REFERENCE_SHORTFALL_POINTS


def _defense_rows(df: pd.DataFrame, track: str, attack: str) -> list[list[Any]]:
    """Each defense against ``attack``: ranked by what it restores (a difference inside the spread is no
    ranking; one seed, no ranking) among the defenses measured on the most columns with a sound reference;
    one on fewer columns or whose same-schedule reference is broken is not ranked ("–", listed last) and
    says why. *columns* = its columns of the attack's undefended ones."""
    modules = _modules(df, "defense")
    effects = defense_effects(df, track, attack)
    most = max((e["columns"] for e in effects), default=0)
    rankable = [e for e in effects if e["columns"] == most and not broken_reference(e)]
    stats = [(e["defense"], e["restored"], e["restored_spread"]) for e in rankable]
    ranked = any(not math.isnan(sd) for _, _, sd in stats)
    ranks = _ranks(stats, True) if ranked else {}
    ordered = sorted(effects, key=lambda e: (e not in rankable, _rank_key(ranks.get(e["defense"], "–")),
                                             -e["restored"] if not math.isnan(e["restored"]) else math.inf, e["defense"]))
    rows = []
    for e in ordered:
        notes = ([f"on {e['columns']} columns, others on {most}"] if e["columns"] < most else []) + (
            [f"reference broken: {e['reference_shortfall']:.1f} points below the undefended victim"] if broken_reference(e) else []) + (
            [f"removes {e['removed_poison']:.0%} of the poisons"] if not math.isnan(e["removed_poison"]) else []) + (
            [f"{e['removed_clean']:.0%} of clean points"] if not math.isnan(e["removed_clean"]) else [])
        rows.append([ranks.get(e["defense"], "–"), _linked(e["defense"], modules) + (f" *({'; '.join(notes)})*" if notes else ""),
                     _pm(e["restored"], e["restored_spread"]), _pm(e["cost"], e["cost_spread"]),
                     "–" if math.isnan(e["privacy_epsilon"]) else f"{e['privacy_epsilon']:.2f}",
                     f"{e['columns']} of {e['attack_columns']}"])
    return rows


def pooled_by(df: pd.DataFrame, by: list[str], metric: str) -> pd.DataFrame:
    """For each group of ``by``: the mean over its remaining (encoder, scenario, budget, constraint) columns
    of the per-column seed means, and the pooled seed std: the board's statistic, for the plots."""
    col = f"m:{metric}"
    rows = []
    if col in df:
        for key, g in df.groupby(by, sort=True):
            mean, spread = _pooled(_per_column(g, col))
            if not math.isnan(mean):
                rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))), "mean": mean, "spread": spread})
    return pd.DataFrame(rows, columns=[*by, "mean", "spread"])


HEADLINE_INTRO = ("Per tier and track: the strongest attacks (mean over every encoder × scenario × budget × constraint "
                  "column of the per-column seed means, ± the pooled seed std; *won* = columns where the attack has an effect "
                  "(> 0) strictly above every other's; a *(control)* row does not compete), then each defense against the "
                  "strongest input-space attack: **restored** = accuracy with the "
                  "defense − without it, under the attack, **cost** = clean accuracy lost with the defense and no attack, both "
                  "against an undefended victim trained the same way (for adversarial training and DP-SGD heads: the same "
                  "optimiser, epochs and batches with ε = 0 / σ = 0), cost read from every cell of the defense. Defenses are "
                  "ranked by restored only among those measured on the most *columns* (of the attack's undefended ones) "
                  "with a sound reference: a defense whose same-schedule victim is more than "
                  f"{REFERENCE_SHORTFALL_POINTS:g} points below the undefended one (median over its cells) is marked "
                  "*reference broken* and not ranked (its restored and cost measure the schedule, not the defense). "
                  "Numbers are points; *paper protocol* is yes only for the `full` tier: the published numbers are in "
                  "[Published numbers](#published-numbers), beside the `full` tier's; the smaller tiers are not comparable to them.")


def headline_blocks(df: pd.DataFrame) -> list[tuple[str, Any]]:
    """The headline section as blocks: ("h3", text), ("p", text), ("table", (headers, rows)); rendered to
    markdown for README.md and to HTML for the page, from the same numbers."""
    blocks: list[tuple[str, Any]] = []
    ok = df[df["status"] == "ok"]
    for tier in [t for t in TIER_ORDER if t in set(ok["tier"])]:
        for suite in sorted(set(ok[ok["tier"] == tier]["suite"])):
            sdf = ok[(ok["tier"] == tier) & (ok["suite"] == suite)]
            seeds = sdf["seed"].nunique()
            protocol = "yes" if tier == "full" else "no"
            blocks.append(("h3", f"{tier} tier (suite `{suite}`, {seeds} seed{'s' if seeds > 1 else ''}; paper protocol: {protocol})"))
            for track in tracks_in(sdf):
                tdf = sdf[sdf["track"] == track]
                attacks, strongest = _strongest_attacks(tdf, track)
                if not attacks:
                    continue
                info = _info(track)
                headers = ["attack", "mean ± spread", "won", *(c.header for c in info.headline_columns), "diagnostics"]
                encoders = ", ".join(f"`{e}`" for e in sorted(set(tdf["encoder"])))
                blocks += [("p", f"**{track}** (encoders {encoders}) — {info.headline_description}; {info.budget_meaning}:"),
                           ("table", (headers, attacks))]
                for note in (upper_bound_note(tdf, track), unattained_note(tdf)):
                    if note:
                        blocks.append(("p", note))
                paper = published_headline(track, set(tdf["attack"]))
                if paper:
                    blocks.append(("p", paper))
                defenses = _defense_rows(tdf, track, strongest) if strongest else []
                if defenses:
                    blocks += [("p", f"Defenses against `{strongest}` (the strongest input-space attack here):"),
                               ("table", (["rank", "defense", "restored", "cost", "privacy ε", "columns"], defenses))]
                found = detection_rows(tdf)
                if found:
                    blocks += [("p", f"Detectors: {DETECTION_NOTE}."), ("table", (DETECTION_HEADERS, found))]
    return blocks


UPPER_BOUND_WHY = (
    "ζ stays inside the clean-feature box and keeps the labels it starts from, and it aims at the GradPC target "
    "its attacker's sweep found strongest (its ε_w and residual are in its diagnostics); it bounds the attacks "
    "that aim at the same target (GC, the FT inversions), not one that degrades the head without a target "
    "(TGDA maximises the validation loss directly) or changes labels without one (label flipping)")


def unattained_note(df: pd.DataFrame) -> str:
    """The model-targeted cells (no defense) whose GradPC target was not attained (the cell's GC residual
    stayed above its ``attained_ratio`` of the start), per attack, with the reason their diagnostics give:
    the target the ε_w sweep chose was attained in feature space but gradient canceling could not reach it
    from inputs through the encoder (the ℓ∞ ball, the pixel range), or the sweep chose a target that feature-
    space GC does not attain either (the strongest on the attacker's validation split)."""
    if "d:target_attained" not in df:
        return ""
    cells = df[(df["defense"] == "none") & (df["d:target_attained"] == 0)]
    parts = []
    for attack, g in sorted(cells.groupby("attack"), key=lambda item: -len(item[1])):
        total = int(((df["attack"] == attack) & (df["defense"] == "none") & df["d:target_attained"].notna()).sum())
        swept = g["d:sweep_attained"] if "d:sweep_attained" in g else pd.Series(math.nan, index=g.index)
        reasons = []
        inputs = g[swept == 1]
        if len(inputs):
            route = "its feature-space GC run" if (g["space"] == "feature").all() else "GC from inputs through the encoder"
            reasons.append(f"{len(inputs)} attained in feature space on the attacker's ε_w sweep (residual ratio "
                           f"{inputs['d:sweep_residual_ratio'].median():.2f}) but not by {route} "
                           f"(ratio {inputs['d:gc_residual_ratio'].median():.2f})")
        weakest = g[swept == 0]
        if len(weakest):
            reasons.append(f"{len(weakest)} where the sweep chose a target not attained even in feature space "
                           f"(ratio {weakest['d:gc_residual_ratio'].median():.2f})")
        other = g[swept.isna()]
        if len(other):
            reasons.append(f"{len(other)} where GC stopped above the threshold (ratio {other['d:gc_residual_ratio'].median():.2f})")
        parts.append(f"`{attack}` {len(g)} of {total} ({'; '.join(reasons)})")
    if not parts:
        return ""
    return ("Cells whose GradPC target was not attained (GC residual end/start above its threshold, 0.2), and "
            "why (medians): " + "; ".join(parts) + ". The attacker's sweep keeps the target whose poisoned head is worst on "
            "its own validation split, attained or not: a target beyond reach pulls the head further than one GC "
            "reaches next to the clean head; these drops measure GC pulling towards a target it does not reach.")


def upper_bound_note(df: pd.DataFrame, track: str) -> str:
    """Whether each feature-space row bounds the input-space attacks on its columns: '' when it is ≥ the best
    of them within the seed spread on every column (a column with one seed has no spread and is not judged),
    else the columns where it is not, and why."""
    undefended = df[(df["defense"] == "none") & (df["attack"] != "none")]
    col = _metric_column(undefended, "accuracy_drop")
    if col is None:
        return ""
    metas = _metas(undefended, "attack")
    inputs = {a: _per_column(g, col) for a, g in undefended[undefended["space"] == "input"].groupby("attack")
              if not _expected_null(a, track, metas) and not _control(g, metas.get(a, {}))}
    notes = []
    for bound, g in undefended[undefended["space"] == "feature"].groupby("attack"):
        below = []
        for key, (mean, std) in sorted(_per_column(g, col).items()):
            present = [(stats[key][0], stats[key][1], a) for a, stats in inputs.items() if key in stats]
            if not present:
                continue
            best, best_std, best_attack = max(present)
            if math.isnan(std) or math.isnan(best_std):  # one seed: no spread to judge by
                continue
            if mean < best - max(std, best_std):
                below.append(f"{' · '.join(map(str, key))} ({_pm(mean, std)} vs `{best_attack}` {_pm(best, best_std)})")
        if below:
            notes.append(f"`{bound}` is below the best input-space attack beyond the seed spread on {len(below)} "
                         f"column(s): {'; '.join(below)}. Why: {UPPER_BOUND_WHY}.")
    return " ".join(notes)


def headlines(df: pd.DataFrame) -> list[str]:
    """The first screen of README.md: per tier and track, the strongest attacks and what each defense gives
    back (see :func:`headline_blocks`)."""
    lines = ["## Headlines", "", HEADLINE_INTRO, ""]
    for kind, payload in headline_blocks(df):
        if kind == "table":
            lines += [tabulate(payload[1], headers=payload[0], tablefmt="github", disable_numparse=True), ""]
        else:
            lines += [f"### {payload}" if kind == "h3" else payload, ""]
    return lines



# ------------------------------------------------------------------------------------------ methods, papers
def _modules(df: pd.DataFrame, kind: str) -> dict[str, str]:
    """Suite name → the plugin module that computed it (``attacks.gc``)."""
    col = f"{kind}_module"
    return {} if col not in df else {n: m for n, m in zip(df[kind], df[col]) if isinstance(m, str)}


def _module_path(module: str) -> str:
    return module.replace(".", "/") + ".py"


def _linked(name: str, modules: dict[str, str]) -> str:
    """``name`` linked to its module's source (relative to ``leaderboard/``)."""
    return f"[{name}](../{_module_path(modules[name])})" if name in modules else name


def methods_section(df: pd.DataFrame) -> list[str]:
    """Every attack and defense on the board: its suite name, registry id and settings, module and paper."""
    rows = []
    for kind in ("attack", "defense"):
        entries = df[[kind, f"{kind}_id", f"{kind}_settings", f"{kind}_module", f"{kind}_meta"]].drop_duplicates(
            subset=[kind, f"{kind}_id", f"{kind}_settings", f"{kind}_module"])
        for name, plugin_id, settings, module, meta in sorted(entries.itertuples(index=False, name=None),
                                                               key=lambda e: (e[0], e[2])):
            if plugin_id == "none":
                continue
            link = f"[`{_module_path(module)}`](../{_module_path(module)})" if isinstance(module, str) else ""
            attributes = json.loads(meta)
            paper = attributes.get("summary", "")
            if attributes.get("paper_url"):
                paper += f" [paper]({attributes['paper_url']})"
            rows.append([kind, name, plugin_id, settings if settings != "{}" else "defaults", link, paper])
    if not rows:
        return []
    return ["## Methods", "", "Each attack and defense on the board: the name a suite gives it, its registry id and the "
            "settings that suite sets (the rest are the module's defaults), its module and its paper.", "",
            tabulate(rows, headers=["kind", "name", "id", "settings", "module", "paper"], tablefmt="github",
                     disable_numparse=True), ""]


def _published_anchors() -> list[dict[str, Any]]:
    import yaml

    path = Path(__file__).resolve().parent / "published.yaml"
    return (yaml.safe_load(path.read_text()) if path.exists() else None) or []


# published metric → (the effect of an attack against the paper's own no-attack number, how it reads, the
# headline column it sits beside)
PUBLISHED_EFFECTS = {"poisoned_accuracy": (lambda attack, none: none - attack, "probe=clean drop",
                                           "the *probe=clean drop* column"),
                     "attack_success_rate": (lambda attack, none: attack - none, "ASR gain", "the *mean ± spread* column"),
                     "accuracy_drop": (lambda attack, none: attack, "drop", "the *mean ± spread* column")}
ANY_METHOD = "*"  # a published number whose SSL method the source does not state


def _published_values(anchor: dict[str, Any], attack: str) -> list[tuple[str, float]]:
    """(method, published effect) of ``attack`` in one anchor; the effect of a drop is the number itself."""
    effect = PUBLISHED_EFFECTS[anchor["metric"]][0]
    none = {v["method"]: v["value"] for v in anchor["values"] if v["attack"] == "none"}
    if anchor["metric"] == "accuracy_drop":
        return [(v["method"], v["value"]) for v in anchor["values"] if v["attack"] == attack]
    return [(v["method"], effect(v["value"], none[v["method"]])) for v in anchor["values"]
            if v["attack"] == attack and v["method"] in none]


def _method_label(method: str) -> str:
    return "SSL method not stated" if method == ANY_METHOD else method


def published_headline(track: str, attacks: set[str]) -> str:
    """One line under a headline table: the published effect (against the paper's own no-attack number) of
    the table's attacks that have verified published numbers, per SSL method, named by the metric it was
    measured with and the headline column that shows that metric, with the protocol and source; '' when
    there is none."""
    parts = []
    for anchor in _published_anchors():
        if anchor["track"] != track or anchor["metric"] not in PUBLISHED_EFFECTS:
            continue
        _, word, column = PUBLISHED_EFFECTS[anchor["metric"]]
        effects = []
        for attack in sorted({v["attack"] for v in anchor["values"]} & attacks - {"none"}):
            values = _published_values(anchor, attack)
            if values:
                effects.append(f"`{attack}` {word} {' / '.join(f'{x:.1f}' for _, x in values)} "
                               f"({' / '.join(_method_label(m) for m, _ in values)})")
        if effects:
            elsewhere = "" if anchor["scenario"] in _full_suite_datasets() else \
                f", on {anchor['scenario']}, which no suite here runs: no tier can match it"
            parts.append(f"{', '.join(effects)} beside {column} — {_protocol(anchor)} ({anchor['source']}{elsewhere})")
    if not parts:
        return ""
    return ("*Published* (the paper's protocol, not this tier's data or models; points): " + "; ".join(parts)
            + ". [All published numbers](#published-numbers).")


def _protocol(anchor: dict[str, Any]) -> str:
    extra = [f"budget {anchor['budget']:g}"] if "budget" in anchor else []
    extra += [anchor["constraint"]] if "constraint" in anchor else []
    return anchor["protocol"] + (f" ({', '.join(extra)})" if extra else "")


@lru_cache(maxsize=1)
def _full_suite_datasets() -> frozenset[str]:
    """The scenario names and data sets the built-in ``full`` suite runs (read from its YAML, no torch)."""
    import yaml

    path = Path(__file__).resolve().parent.parent / "benchmark" / "suites" / "full.yaml"
    raw = yaml.safe_load(path.read_text()) if path.exists() else {}
    names = set()
    for scenario in raw.get("scenarios") or []:
        names |= {str(scenario.get(k)) for k in ("name", "pretrain", "downstream")}
    return frozenset(names)


def published_blocks(df: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Every published number beside ours from the ``full`` tier (the only tier that follows a paper's
    protocol), on the same metric; a data set the full suite does not run is said so."""
    full = df[(df["tier"] == "full") & (df["status"] == "ok") & (df["defense"] == "none")]
    runs = _full_suite_datasets()
    rows = []
    for anchor in _published_anchors():
        col = f"m:{anchor['metric']}"
        for v in anchor["values"]:
            if anchor["scenario"] not in runs:
                ours = f"— (the `full` suite does not run {anchor['scenario']}: no comparable number)"
            else:
                match = _published_match(full, anchor, v)
                ours = _fmt(match[col], 100.0)[0] if col in match and len(match) else "— (no full-tier result yet)"
            rows.append([anchor["track"], _method_label(v["method"]), v["attack"], anchor["metric"], f"{v['value']:.1f}",
                         ours, _protocol(anchor), anchor["source"]])
    headers = ["track", "method", "attack", "metric", "published", "ours (full tier)", "protocol", "source"]
    return headers, rows


def _published_match(full: pd.DataFrame, anchor: dict[str, Any], value: dict[str, Any]) -> pd.DataFrame:
    if full.empty:
        return full
    match = full[(full["track"] == anchor["track"]) & (full["attack"] == value["attack"])
                 & full["scenario"].str.contains(anchor["scenario"], regex=False)]
    if value["method"] != ANY_METHOD:
        match = match[match["encoder"].str.startswith(value["method"] + "/")]
    if "budget" in anchor:
        match = match[(match["budget"] - anchor["budget"]).abs() < 1e-9]
    if "constraint" in anchor:
        match = match[match["constraint"] == anchor["constraint"]]
    return match


PUBLISHED_INTRO = ("Verified published numbers (%) beside the `full` tier's (the paper protocol), each on the metric it "
                   "was measured with. The `smoke` and `cpu` tiers use other data and models (*paper protocol: no*): "
                   "their numbers are not comparable to these.")


def published_section(df: pd.DataFrame) -> list[str]:
    headers, rows = published_blocks(df)
    if not rows:
        return []
    return ["## Published numbers", "", PUBLISHED_INTRO, "",
            tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True), ""]


def figures_section(plots_dir: Path) -> list[str]:
    """Links to every figure beside the board (``python -m benchmark plot``; ``examples`` for the poisoned
    images; ``leaderboard --screenshot`` for the page)."""
    figures = sorted(plots_dir.glob("*.png")) if plots_dir.is_dir() else []
    if not figures:
        return []
    return ["## Figures", "", "The same numbers as figures (`python -m benchmark plot`), clean vs poisoned images per "
            "attack (`python -m benchmark examples`) and the HTML page of this board ([index.html](index.html)):", ""] + [
            f"- [{p.stem}](plots/{p.name})" for p in figures] + [""]
