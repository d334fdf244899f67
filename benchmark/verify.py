"""Re-computing claimed numbers (RobustBench's rule for a board): ``python -m benchmark verify`` runs a
sample of committed cells again from an empty cache and compares every metric with the committed record;
``run --compare DIR`` compares a fresh run with committed records.

On the CPU model that computed them the numbers must be identical (every random choice is seeded; plugin
processes reseed right before plugin code runs). On another CPU model they are not: float rounding differs
between vector extensions and SSL pre-training amplifies it (the same code and seeds gave 92.9 % and
91.6 % clean accuracy for one MoCo v2 cell on two Xeons; over the 228 ``dp_sgd`` smoke cells the largest
metric difference had median 2.2 and maximum 22.5 points), so there a metric may differ by at most
:data:`CROSS_CPU_TOLERANCE`, which catches a forged number but not a subtle one. On a GPU (bf16 autocast,
non-deterministic kernels) the tolerance is :data:`GPU_TOLERANCE` (accuracy as a fraction: 0.01 = one
point). Timing metrics (``*seconds*``) are never compared.

:func:`verify_changed` re-computes the records a change adds or modifies relative to a base commit
(``leaderboard --check --base main``), within a time limit (a seeded sample beyond it): a forged or
hand-edited record in a pull request fails CI.
"""

from __future__ import annotations

import math
import random
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.cache import ArtifactCache
from benchmark.plugins import catalogue
from benchmark.provenance import REPO_ROOT
from benchmark.results import device_info, read_record, result_path
from benchmark.runner import run_cell, select_cells
from benchmark.suite import PLUGIN_SECONDS, SuiteError, expand_cells
from benchmark.tracks.base import Cell
from benchmark.tracks.common import RunEnv
from benchmark.utils import progress, resolve_device
from leaderboard.schema import FINAL_STATUSES

GPU_TOLERANCE = 0.01
CROSS_CPU_TOLERANCE = 0.25



@dataclass
class Comparison:
    cell_id: str
    status: str  # "identical" | "within tolerance" | "differs" | "no committed record"
    compared: int
    max_difference: float
    detail: str = ""


def compare_records(new: Mapping[str, Any], committed: Mapping[str, Any] | None, tolerance: float) -> Comparison:
    """``new`` against ``committed``: the status and every non-timing metric."""
    cell_id = str(new.get("cell_id"))
    if committed is None:
        return Comparison(cell_id, "no committed record", 0, math.nan)
    if new.get("status") != committed.get("status"):
        return Comparison(cell_id, "differs", 0, math.inf, f"status {new.get('status')} vs committed {committed.get('status')}")
    a, b = _metrics(new), _metrics(committed)
    if set(a) != set(b):
        return Comparison(cell_id, "differs", 0, math.inf, f"metrics {sorted(set(a) ^ set(b))} on one side only")
    diffs = {k: abs(a[k] - b[k]) if a[k] != b[k] else 0.0 for k in a}
    worst = max(diffs.values(), default=0.0)
    if worst == 0.0:
        return Comparison(cell_id, "identical", len(a), 0.0)
    bad = sorted(k for k, d in diffs.items() if d > tolerance or math.isnan(d))
    status = "differs" if bad else "within tolerance"
    return Comparison(cell_id, status, len(a), worst, ", ".join(f"{k}: {a[k]!r} vs {b[k]!r}" for k in bad[:3]))


def _metrics(record: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in (record.get("metrics") or {}).items() if "seconds" not in k}


def comparison_table(rows: list[Comparison]) -> str:
    from tabulate import tabulate

    body = [[r.cell_id, r.status, r.compared, "" if math.isnan(r.max_difference) else f"{r.max_difference:.3g}", r.detail]
            for r in rows]
    return tabulate(body, headers=["cell", "result", "metrics", "max |Δ|", "detail"], tablefmt="github", disable_numparse=True)


def failed(rows: list[Comparison]) -> list[Comparison]:
    return [r for r in rows if r.status == "differs"]


def compare_dirs(new_dir: Path, committed_dir: Path, suite_name: str, cell_ids: list[str], tolerance: float | None,
                 device: Any = "cpu") -> list[Comparison]:
    """The records of ``cell_ids`` in ``new_dir`` against those in ``committed_dir`` (same suite); with
    ``tolerance`` None, each committed record's own (:func:`tolerance_for` on ``device``)."""

    rows = []
    for cell_id in cell_ids:
        new = read_record(result_path(new_dir, suite_name, cell_id))
        if new is not None:
            committed = read_record(result_path(committed_dir, suite_name, cell_id))
            tol = tolerance if tolerance is not None or committed is None else tolerance_for(committed, device)
            rows.append(compare_records(new, committed, tol or 0.0))
    return rows


def verify_suite(suite: Any, *, committed_dir: Path, sample: int | None, seed: int, only: list[str] | None,
                 device: str, tolerance: float | None) -> tuple[list[Comparison], float]:
    """Re-compute (a seeded sample of) the committed cells of ``suite`` from an empty cache and compare them
    with the committed records. Returns the rows and the tolerance used."""

    cells, _ = expand_cells(suite)
    if only:
        cells = select_cells(cells, only)
    committed = {c.id: read_record(result_path(committed_dir, suite.name, c.id)) for c in cells}
    cells = [c for c in cells if committed[c.id] is not None and committed[c.id].get("status") in FINAL_STATUSES]
    if not cells:
        raise SuiteError(suite.source, [f"no committed results of suite {suite.name} under {committed_dir} to verify"])
    if sample is not None and sample < len(cells):
        cells = sorted(random.Random(seed).sample(cells, sample), key=cells.index)
    resolved = resolve_device(device)
    rows, largest = [], 0.0
    with tempfile.TemporaryDirectory(prefix="poisonbench-verify-") as scratch:
        env = RunEnv(cache=ArtifactCache(Path(scratch)), device=resolved, plugin_seconds=suite.plugin_seconds)
        for cell in progress(cells, desc=f"verify {suite.name}", total=len(cells), leave=True):
            tol = tolerance if tolerance is not None else tolerance_for(committed[cell.id], resolved)
            largest = max(largest, tol)
            rows.append(compare_records(run_cell(cell, env), committed[cell.id], tol))
    return rows, largest


# --------------------------------------------------------------------------------------------- changed records
def changed_records(results_dir: Path, base: str) -> list[Path]:
    """The record files under ``results_dir`` that differ from ``base`` (added or modified since the merge
    base, committed or not)."""
    import subprocess

    def git(*args: str) -> list[str]:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
        return [line for line in out.splitlines() if line.strip()]

    folder = Path(results_dir).resolve().relative_to(REPO_ROOT).as_posix()
    merge_base = git("merge-base", base, "HEAD")[0]
    names = set(git("diff", "--name-only", "--diff-filter=AM", merge_base, "--", folder))
    names |= set(git("ls-files", "--others", "--exclude-standard", "--", folder))
    return sorted(REPO_ROOT / n for n in names if n.endswith(".json"))


def choose_within(records: list[dict[str, Any]], seconds: float, seed: int = 0) -> list[dict[str, Any]]:
    """All of ``records`` when their recorded compute time fits in ``seconds``, else a seeded sample that
    does (at least one)."""
    cost = [float((r.get("provenance") or {}).get("wall_seconds") or 0.0) for r in records]
    if sum(cost) <= seconds:
        return records
    order = random.Random(seed).sample(range(len(records)), len(records))
    chosen, spent = [], 0.0
    for i in order:
        if spent + cost[i] <= seconds or not chosen:
            chosen.append(i)
            spent += cost[i]
    return [records[i] for i in sorted(chosen)]


def tolerance_for(record: Mapping[str, Any], device: Any) -> float:
    """0 on the CPU model (and vector extensions) that computed ``record``; else the cross-CPU or GPU one."""

    here = device_info(device)
    if here["type"] != "cpu":
        return GPU_TOLERANCE
    there = (record.get("provenance") or {}).get("device") or {}
    same = there.get("type") == "cpu" and all(there.get(k) == here.get(k) for k in ("cpu", "cpu_isa", "threads"))
    return 0.0 if same else CROSS_CPU_TOLERANCE


def verify_records(records: list[dict[str, Any]], *, device: str) -> list[Comparison]:
    """Re-compute each record's cell (its own resolved spec) from an empty cache and compare."""

    resolved = resolve_device(device)
    plugins = catalogue()
    rows = []
    with tempfile.TemporaryDirectory(prefix="poisonbench-verify-") as scratch:
        env = RunEnv(cache=ArtifactCache(Path(scratch)), device=resolved, plugin_seconds=PLUGIN_SECONDS["custom"])
        for record in progress(records, desc="verify changed records", total=len(records), leave=True):
            missing = [record["cell"][kind]["id"] for kind in ("attack", "defense")
                       if record["cell"][kind]["id"] != "none" and record["cell"][kind]["id"] not in plugins.of(kind)]
            if missing:
                rows.append(Comparison(record["cell_id"], "differs", 0, math.inf, f"plugin {missing} is not registered here"))
                continue
            env.plugin_seconds = PLUGIN_SECONDS.get(record["tier"], PLUGIN_SECONDS["custom"])
            new = run_cell(Cell(record["track"], record["cell"]), env)
            rows.append(compare_records(new, record, tolerance_for(record, resolved)))
    return rows
