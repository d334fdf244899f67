"""Re-computing claimed numbers (RobustBench's rule for a board): ``python -m benchmark verify`` runs a
sample of committed cells again from an empty cache and compares every metric with the committed record;
``run --compare DIR`` compares a fresh run with committed records.

On a CPU the numbers must be identical (every random choice is seeded; plugin processes reseed right before
plugin code runs). On a GPU (bf16 autocast, non-deterministic kernels) a metric may differ by at most
:data:`GPU_TOLERANCE` (accuracy as a fraction: 0.01 = one point). Timing metrics (``*seconds*``) are never
compared.
"""

from __future__ import annotations

import math
import random
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GPU_TOLERANCE = 0.01


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


def compare_dirs(new_dir: Path, committed_dir: Path, suite_name: str, cell_ids: list[str], tolerance: float) -> list[Comparison]:
    """The records of ``cell_ids`` in ``new_dir`` against those in ``committed_dir`` (same suite)."""
    from benchmark.results import read_record, result_path

    rows = []
    for cell_id in cell_ids:
        new = read_record(result_path(new_dir, suite_name, cell_id))
        if new is not None:
            rows.append(compare_records(new, read_record(result_path(committed_dir, suite_name, cell_id)), tolerance))
    return rows


def verify_suite(suite: Any, *, committed_dir: Path, sample: int | None, seed: int, only: list[str] | None,
                 device: str, tolerance: float | None) -> tuple[list[Comparison], float]:
    """Re-compute (a seeded sample of) the committed cells of ``suite`` from an empty cache and compare them
    with the committed records. Returns the rows and the tolerance used."""
    from benchmark.cache import ArtifactCache
    from benchmark.results import read_record, result_path
    from benchmark.runner import run_cell, select_cells
    from benchmark.suite import SuiteError, expand_cells
    from benchmark.tracks.common import RunEnv
    from benchmark.utils import progress, resolve_device
    from leaderboard.schema import FINAL_STATUSES

    cells, _ = expand_cells(suite)
    if only:
        cells = select_cells(cells, only)
    committed = {c.id: read_record(result_path(committed_dir, suite.name, c.id)) for c in cells}
    cells = [c for c in cells if committed[c.id] is not None and committed[c.id].get("status") in FINAL_STATUSES]
    if not cells:
        raise SuiteError(suite.source, [f"no committed results of suite {suite.name} under {committed_dir} to verify"])
    if sample is not None and sample < len(cells):
        cells = sorted(random.Random(seed).sample(cells, sample), key=lambda c: cells.index(c))
    resolved = resolve_device(device)
    tolerance = (0.0 if resolved.type == "cpu" else GPU_TOLERANCE) if tolerance is None else tolerance
    rows = []
    with tempfile.TemporaryDirectory(prefix="poisonbench-verify-") as scratch:
        env = RunEnv(cache=ArtifactCache(Path(scratch)), device=resolved, plugin_seconds=suite.plugin_seconds)
        for cell in progress(cells, desc=f"verify {suite.name}", total=len(cells), leave=True):
            rows.append(compare_records(run_cell(cell, env), committed[cell.id], tolerance))
    return rows, tolerance
