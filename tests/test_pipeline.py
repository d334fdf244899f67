"""End to end on a tiny suite: results, resume without recomputation, invalid attacks, the board."""

from __future__ import annotations

import json

import pytest
import torch

from benchmark.runner import run_suite
from benchmark.suite import expand_cells, load_suite
from leaderboard.render import render_leaderboard
from leaderboard.schema import record_problems


def _records(results_dir) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(results_dir.rglob("*.json"))]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """The tiny suite run once; module-scoped so several tests read the same results."""
    from tests.conftest import TINY_SUITE

    root = tmp_path_factory.mktemp("run")
    path = root / "tiny.yaml"
    import yaml

    path.write_text(yaml.safe_dump(TINY_SUITE))
    suite = load_suite(str(path))
    summary = run_suite(suite, results_dir=root / "results", cache_dir=root / "cache", device="cpu")
    return suite, root, summary


def test_every_cell_is_ok_and_schema_valid(finished_run) -> None:
    suite, root, summary = finished_run
    records = _records(root / "results")
    assert len(records) == len(expand_cells(suite)[0]) == len(summary.computed)
    for r in records:
        assert r["status"] == "ok", r["message"]
        assert record_problems(r) == []
        prov = r["provenance"]
        assert {"code", "packages", "device", "wall_seconds"} <= set(prov)
        assert prov["packages"]["torch"] != "not installed"
        assert r["cell"]["encoder"]["epochs"] == 2  # the resolved config is recorded
    none = [r for r in records if r["cell"]["attack"]["id"] == "none"]
    assert all(r["metrics"]["accuracy_drop"] == 0 for r in none)
    flips = [r for r in records if r["cell"]["attack"]["id"] == "label_flip"]
    assert all(r["metrics"]["n_poison"] == int(0.1 * r["details"]["n_train"]) for r in flips)


def test_rerun_computes_nothing(finished_run) -> None:
    suite, root, _ = finished_run
    before = {p.name: p.read_text() for p in (root / "results").rglob("*.json")}
    again = run_suite(suite, results_dir=root / "results", cache_dir=root / "cache", device="cpu")
    assert again.computed == [] and len(again.skipped) == len(before)
    assert {p.name: p.read_text() for p in (root / "results").rglob("*.json")} == before


def test_killed_run_resumes_to_same_results(finished_run, tmp_path) -> None:
    """Delete half the results (as if killed) and leave a stray temp file: the resume recomputes
    exactly the missing cells, from cached artifacts, to the same metrics, with no duplicates."""
    suite, root, _ = finished_run
    import shutil

    results = tmp_path / "results"
    shutil.copytree(root / "results", results)
    files = sorted(results.rglob("*.json"))
    removed = {p.name: json.loads(p.read_text())["metrics"] for p in files[::2]}
    for name in removed:
        next(results.rglob(name)).unlink()
    (files[0].parent / ".stray.json.tmp").write_text("{half")
    summary = run_suite(suite, results_dir=results, cache_dir=root / "cache", device="cpu")
    assert len(summary.computed) == len(removed)
    after = {p.name: json.loads(p.read_text())["metrics"] for p in results.rglob("*.json")}
    assert len(after) == len(files)
    for name, metrics in removed.items():
        for key in ("clean_accuracy", "poisoned_accuracy", "accuracy_drop"):
            assert after[name][key] == pytest.approx(metrics[key], abs=1e-6)


def test_leaderboard_is_deterministic_and_names_tier(finished_run) -> None:
    _, root, _ = finished_run
    text, problems = render_leaderboard(root / "results")
    assert problems == []
    assert text == render_leaderboard(root / "results")[0]
    assert "Tier `custom`: suite `tiny`" in text and "label_flip" in text and "(n=1)" in text


@pytest.mark.parametrize(("attack", "needle"), [("hostile_rng", "exceed the budget"), ("hostile_mutator", "mutated")])
def test_cheating_attack_marks_cell_invalid(tiny_suite_dict, write_suite, finished_run, attack, needle) -> None:
    _, root, _ = finished_run
    raw = tiny_suite_dict
    raw["scenarios"] = raw["scenarios"][:1]
    raw["tracks"]["downstream"]["attacks"] = [attack]
    suite = load_suite(str(write_suite(raw)))
    results = root / f"invalid-{attack}"
    run_suite(suite, results_dir=results, cache_dir=root / "cache", device="cpu")
    (record,) = _records(results)
    assert record["status"] == "invalid" and needle in record["message"]
    assert record["metrics"] == {}
    text, _ = render_leaderboard(results)
    assert "Cells not on the board" in text


def test_poisoned_head_really_loses_accuracy(finished_run, tiny_suite_dict, write_suite) -> None:
    """A large label-flip budget must lower the head's test accuracy (the metric measures something)."""
    _, root, _ = finished_run
    raw = tiny_suite_dict
    raw["scenarios"] = raw["scenarios"][:1]
    raw["tracks"]["downstream"].update(budgets=[0.6], attacks=["label_flip"])
    suite = load_suite(str(write_suite(raw)))
    results = root / "big-flip"
    run_suite(suite, results_dir=results, cache_dir=root / "cache", device="cpu")
    (record,) = _records(results)
    assert record["metrics"]["accuracy_drop"] > 0.02, record["metrics"]
    assert torch.isfinite(torch.tensor(record["metrics"]["poisoned_accuracy"]))


def test_track_filter_runs_only_those_tracks(finished_run) -> None:
    from benchmark.suite import SuiteError

    suite, root, _ = finished_run
    summary = run_suite(suite, results_dir=root / "results", cache_dir=root / "cache", device="cpu",
                        tracks=["downstream"])
    assert summary.computed == [] and summary.skipped  # every downstream cell is already finished
    with pytest.raises(SuiteError, match="pretrain-targeted not in this suite"):
        run_suite(suite, results_dir=root / "results", cache_dir=root / "cache", device="cpu",
                  tracks=["pretrain-targeted"])


def test_defense_cost_is_measured_against_a_same_schedule_victim(finished_run, tiny_suite_dict, write_suite) -> None:
    """An under-trained adversarial head (1 epoch) is compared with the same 1-epoch head at ε = 0, not with the
    converged convex head: its cost is the price of the adversary, not of the short schedule. The old metric
    (clean − defended) charged the short schedule to the defense."""
    _, root, _ = finished_run
    raw = tiny_suite_dict
    raw["scenarios"] = raw["scenarios"][:1]
    raw["tracks"]["downstream"].update(
        attacks=["none", "label_flip", "random_noise"], defended_attacks=["none", "label_flip"],
        defenses=["none", {"id": "adversarial_training", "settings": {"epochs": 1, "steps": 1, "epsilon": 0.0313725490196}}])
    suite = load_suite(str(write_suite(raw)))
    cells, skipped = expand_cells(suite)
    assert not any(c.spec["attack"]["id"] == "random_noise" and c.spec["defense"]["id"] != "none" for c in cells)
    assert any("defended_attacks" in s.reason for s in skipped)
    results = root / "same-schedule"
    run_suite(suite, results_dir=results, cache_dir=root / "cache", device="cpu")
    records = {(r["cell"]["attack"]["id"], r["cell"]["defense"]["id"]): r for r in _records(results)}
    m = records[("none", "adversarial_training")]["metrics"]
    assert m["reference_clean_accuracy"] < m["clean_accuracy"] - 0.05  # one Adam epoch from zero is far from converged
    assert m["defense_cost"] == pytest.approx(m["reference_clean_accuracy"] - m["defended_clean_accuracy"])
    assert m["defense_cost"] < m["clean_accuracy"] - m["defended_clean_accuracy"]
    flip = records[("label_flip", "adversarial_training")]["metrics"]
    assert flip["accuracy_restored"] == pytest.approx(flip["poisoned_accuracy"] - flip["reference_poisoned_accuracy"])
    undefended = records[("label_flip", "none")]["metrics"]
    assert "reference_poisoned_accuracy" not in undefended and undefended["poisoned_accuracy"] != flip["reference_poisoned_accuracy"]


def test_defended_attacks_must_name_attacks_of_the_track(tiny_suite_dict, write_suite) -> None:
    from benchmark.suite import SuiteError

    raw = tiny_suite_dict
    raw["tracks"]["downstream"]["defended_attacks"] = ["none", "label_flp"]
    with pytest.raises(SuiteError, match="did you mean 'label_flip'"):
        load_suite(str(write_suite(raw)))


def _group_members(pgid: int) -> list[int]:
    import os
    from pathlib import Path

    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # pgrp is the 5th field; zombies are gone already
            members.append(int(stat.parent.name))
    return [m for m in members if m != os.getpid()]


@pytest.mark.slow
def test_sigterm_stops_a_run_and_its_plugin_process(tiny_suite_dict, write_suite, tmp_path) -> None:
    """`kill` on a run in the middle of a long plugin call: the run exits like Ctrl-C (130) and leaves no
    plugin process behind (the default SIGTERM action would end the runner alone)."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    if not Path("/proc/self/stat").exists():
        pytest.skip("needs /proc to list the run's processes")
    tiny_suite_dict["tracks"]["downstream"]["attacks"] = [{"id": "gc", "settings": {"steps": 1_000_000}}]
    path = write_suite(tiny_suite_dict)
    run = subprocess.Popen([sys.executable, "-m", "benchmark", "run", "--suite", str(path), "--results-dir",
                            str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"), "--no-leaderboard"],
                           start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           env={**os.environ, "POISONBENCH_PROGRESS": "0"})
    deadline = time.time() + 120
    while time.time() < deadline and len(_group_members(run.pid)) < 4:  # runner, forkserver, tracker, a call
        time.sleep(0.5)
    assert len(_group_members(run.pid)) >= 4, "the plugin call never started"
    os.kill(run.pid, signal.SIGTERM)
    assert run.wait(timeout=60) == 130
    deadline = time.time() + 20
    while time.time() < deadline and _group_members(run.pid):
        time.sleep(0.5)
    assert not _group_members(run.pid), "processes of the run survived it"
