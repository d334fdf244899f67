"""Issue #29: the board trusts a record only where it lies, as computed, with the sandbox, on the code it names.

A record copied to another cell's file or hand-edited fails the schema's location check; a committed record
computed without the sandbox is stale; a recompute in progress (``leaderboard/recompute.yaml``) excuses only
the records that describe its ``before`` commit exactly, and says when it is finished.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from benchmark.provenance import dependencies, file_hash
from leaderboard.render import load_records, pending_counts, stale_report

ROOT = Path(__file__).resolve().parents[1]


def _template() -> dict:
    path = next((ROOT / "leaderboard" / "results" / "smoke").glob("downstream__simclr__*__label_flip__none__*.json"))
    record = json.loads(path.read_text())
    files = dependencies("downstream", [str(ROOT / "attacks" / "label_flip.py")])
    record["provenance"]["sources"]["files"] = {f: file_hash(f) for f in files}
    record["provenance"]["code"]["dirty"] = False
    return record


def _write(results: Path, record: dict, name: str | None = None) -> Path:
    path = results / record["suite"] / (name or f"{record['cell_id']}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return path


def test_a_record_must_lie_where_its_content_says(tmp_path: Path) -> None:
    record = _template()
    _write(tmp_path, record)
    assert load_records(tmp_path)[1] == []
    _write(tmp_path, record, name="downstream__other-cell.json")  # a copy under another cell's name
    edited = copy.deepcopy(record)
    edited["cell"]["seed"] = 7  # a hand-edited spec: its id no longer matches
    _write(tmp_path / "b", edited)
    problems = load_records(tmp_path)[1] + load_records(tmp_path / "b")[1]
    assert any("is not its cell_id" in p for p in problems)
    assert any("is not the id of its cell spec" in p for p in problems)


def test_committed_records_need_the_sandbox_and_a_recompute_excuses_only_what_it_names(tmp_path: Path) -> None:
    results = tmp_path / "results"
    record = _template()
    record["provenance"]["sandbox"] = False
    _write(results, record)
    assert stale_report(results) == ""  # a scratch run's results
    assert "without the sandbox" in stale_report(results, committed=True)

    (tmp_path / "recompute.yaml").write_text(f"reason: a test\nbefore: HEAD\nsuites: [{record['suite']}]\n")
    assert stale_report(results, committed=True) == "" and pending_counts(results) == {record["suite"]: 1}
    forged = copy.deepcopy(record)
    forged["provenance"]["sources"]["files"]["benchmark/api.py"] = "0" * 16  # not the code of `before`
    forged["cell"]["seed"] = 1
    from benchmark.utils import cell_id

    forged["cell_id"] = cell_id(forged["track"], forged["cell"])
    _write(results, forged)
    report = stale_report(results, committed=True)
    assert "1 result(s)" in report and forged["cell_id"] in report

    # ``before`` may name several commits (records of two code states await one recompute)
    (tmp_path / "recompute.yaml").write_text(f"reason: a test\nbefore: [HEAD~1, HEAD]\nsuites: [{record['suite']}]\n")
    assert pending_counts(results) == {record["suite"]: 1}
    (tmp_path / "recompute.yaml").write_text(f"reason: a test\nbefore: [HEAD, not-a-commit]\nsuites: [{record['suite']}]\n")
    with pytest.raises(ValueError, match="not a commit"):
        pending_counts(results)
    (tmp_path / "recompute.yaml").write_text(f"reason: a test\nbefore: HEAD\nsuites: [{record['suite']}]\n")

    record["provenance"]["sandbox"] = True  # recomputed: nothing awaits the recompute any more
    _write(results, record)
    (results / record["suite"] / f"{forged['cell_id']}.json").unlink()
    assert "names a recompute that is finished: remove it" in stale_report(results, committed=True)


def test_a_forged_record_fails_its_recomputation_and_an_honest_one_passes(tmp_path: Path, write_suite, tiny_suite_dict) -> None:
    """What ``leaderboard --check --base main`` does with the records a pull request adds or changes."""
    from benchmark.__main__ import main
    from benchmark.verify import choose_within, failed, tolerance_for, verify_records

    tiny_suite_dict["scenarios"] = tiny_suite_dict["scenarios"][:1]
    tiny_suite_dict["tracks"]["downstream"]["attacks"] = ["label_flip"]
    results = tmp_path / "results"
    assert main(["run", "--suite", str(write_suite(tiny_suite_dict)), "--results-dir", str(results),
                 "--cache-dir", str(tmp_path / "cache"), "--no-leaderboard"]) == 0
    honest = json.loads(next(results.rglob("*.json")).read_text())
    assert tolerance_for(honest, "cpu") == 0.0  # computed on this CPU: identical, not close
    forged = copy.deepcopy(honest)
    forged["metrics"]["accuracy_drop"] += 0.3
    rows = verify_records([honest, forged], device="cpu")
    assert [r.status for r in rows] == ["identical", "differs"] and len(failed(rows)) == 1

    other_cpu = copy.deepcopy(honest)
    other_cpu["provenance"]["device"]["cpu_isa"] = ["sse4_2"]
    assert tolerance_for(other_cpu, "cpu") > 0.0
    cheap, dear = {"provenance": {"wall_seconds": 1.0}}, {"provenance": {"wall_seconds": 100.0}}
    assert choose_within([cheap, dear], 200.0) == [cheap, dear]
    assert len(choose_within([cheap, dear, dear], 150.0)) < 3


def test_run_compare_is_exact_on_the_same_cpu_and_tolerant_across_cpus(tmp_path: Path) -> None:
    """``make run`` compares a newcomer's numbers with the committed ones: on another CPU model they differ
    by float rounding (amplified by SSL pre-training), which is not a failure; a forged-size gap is."""
    from benchmark.results import device_info
    from benchmark.verify import CROSS_CPU_TOLERANCE, compare_dirs

    record = _template()
    record["provenance"]["device"] = device_info("cpu")
    _write(tmp_path / "new", record)
    for name, isa, shift, expected in (("same", None, 0.01, "differs"), ("other", ["sse4_2"], 0.01, "within tolerance"),
                                       ("forged", ["sse4_2"], CROSS_CPU_TOLERANCE + 0.1, "differs")):
        committed = copy.deepcopy(record)
        committed["metrics"]["accuracy_drop"] += shift
        if isa is not None:
            committed["provenance"]["device"]["cpu_isa"] = isa
        _write(tmp_path / name, committed)
        [row] = compare_dirs(tmp_path / "new", tmp_path / name, record["suite"], [record["cell_id"]], None)
        assert row.status == expected, name


def _smoke_cells() -> int:
    from benchmark.suite import expand_cells, load_suite

    return len(expand_cells(load_suite("smoke"))[0])


def test_the_check_names_the_cells_of_a_suite_that_have_no_record(tmp_path: Path) -> None:
    """Issue #28: an attack added to a suite and never run passed --check."""
    from benchmark.__main__ import _missing_cells

    record = _template()
    _write(tmp_path, record)
    [line] = _missing_cells(tmp_path)
    assert line.startswith(f"suite smoke: {_smoke_cells() - 1} cell(s) have no record") and "run --suite smoke" in line


def test_the_check_names_the_records_that_belong_to_no_cell_of_their_suite(tmp_path: Path) -> None:
    """A suite entry whose settings changed leaves its old records behind: still fresh by their source
    hashes, they would stay on the board describing settings the suite no longer runs."""
    from benchmark.__main__ import _missing_cells

    record = _template()
    _write(tmp_path, record)
    _write(tmp_path, {**record, "cell_id": record["cell_id"][:-10] + "0123456789"})
    missing, extra = _missing_cells(tmp_path)
    assert missing.startswith(f"suite smoke: {_smoke_cells() - 1} cell(s) have no record")
    assert extra.startswith("suite smoke: 1 record(s) belong to no cell of the suite") and "0123456789" in extra
