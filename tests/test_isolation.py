"""Harness integrity: misbehaving plugins (tests/plugins/hostile.py) end their own cells as invalid, error or
timeout, never reach the board, and leave every honest cell's numbers exactly as in a run without them."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from benchmark.runner import run_suite
from benchmark.suite import load_suite
from leaderboard.render import render_leaderboard
from tests.test_pretrain_tracks import tiny_pretrain_suite

LIMIT = 2.0  # seconds per plugin call in these suites: the sleepers time out (an honest call here takes ≈ 0.2 s)

EXPECTED = {  # hostile attack → (status, a fragment of its message)
    "hostile_test_reader": ("error", "test tensors found: []; cache paths found: []"),
    "hostile_mutator": ("invalid", "mutated"),
    "hostile_sleeper": ("timeout", "time limit"),
    "hostile_exit": ("error", "SystemExit"),
    "hostile_interrupt": ("error", "KeyboardInterrupt"),
    "hostile_rng": ("invalid", ""),
    "hostile_patcher": ("error", "engine patched in the plugin process"),
}
DOWNSTREAM_ONLY = {"hostile_subclass": ("invalid", "expected a DownstreamPoison"),
                   "hostile_os_exit": ("error", "ended without an answer")}


def run(raw: dict[str, Any], root: Path) -> dict[str, dict[str, Any]]:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "suite.yaml"
    import yaml

    path.write_text(yaml.safe_dump(raw))
    run_suite(load_suite(str(path)), results_dir=root / "results", cache_dir=root / "cache", device="cpu")
    records = [json.loads(p.read_text()) for p in sorted((root / "results").rglob("*.json"))]
    return {f"{r['track']}/{r['cell']['attack']['name']}/{r['cell']['defense']['name']}": r for r in records}


def downstream_suite(attacks: list[Any], defenses: list[Any] | None = None) -> dict[str, Any]:
    from tests.conftest import TINY_SUITE

    raw = copy.deepcopy(TINY_SUITE)
    raw["scenarios"] = raw["scenarios"][:1]
    raw["limits"] = {"plugin_seconds": LIMIT}
    raw["tracks"]["downstream"]["attacks"] = attacks
    raw["tracks"]["downstream"]["defenses"] = defenses or ["none"]
    return raw


def assert_contained(records: dict[str, dict[str, Any]], expected: dict[str, tuple[str, str]], track: str,
                     root: Path) -> None:
    for name, (status, fragment) in expected.items():
        record = records[f"{track}/{name}/none"]
        assert record["status"] == status and fragment in record["message"], (name, record["status"], record["message"])
        assert not record["metrics"]
    board, problems = render_leaderboard(root / "results")
    assert not problems
    assert "## Cells not on the board" in board
    on_board = board.split("## Cells not on the board")[0]
    for name in expected:
        assert name not in on_board, f"{name} reached the board"


def assert_same_numbers(records: dict[str, dict[str, Any]], reference: dict[str, dict[str, Any]]) -> None:
    for key, ref in reference.items():
        assert records[key]["status"] == "ok", (key, records[key]["message"])
        got = {k: v for k, v in records[key]["metrics"].items() if "seconds" not in k}
        want = {k: v for k, v in ref["metrics"].items() if "seconds" not in k}
        assert got == want, key


@pytest.mark.heavy
def test_hostile_downstream_attacks_are_contained_and_honest_cells_unchanged(tmp_path: Path) -> None:
    hostile = {**EXPECTED, **DOWNSTREAM_ONLY}
    records = run(downstream_suite([*hostile, "none", "label_flip"]), tmp_path / "hostile")
    reference = run(downstream_suite(["none", "label_flip"]), tmp_path / "reference")
    assert_contained(records, hostile, "downstream", tmp_path / "hostile")
    assert_same_numbers(records, reference)


@pytest.mark.heavy
def test_hostile_defenses_are_contained_and_honest_cells_unchanged(tmp_path: Path) -> None:
    hostile = ["hostile_defense_exit", "hostile_defense_sleep", "hostile_defense_wrong"]
    records = run(downstream_suite(["none", "label_flip"], [*hostile, "none"]), tmp_path / "hostile")
    reference = run(downstream_suite(["none", "label_flip"]), tmp_path / "reference")
    for attack in ("none", "label_flip"):
        statuses = {d: records[f"downstream/{attack}/{d}"] for d in hostile}
        assert statuses["hostile_defense_exit"]["status"] == "error" and "SystemExit" in statuses["hostile_defense_exit"]["message"]
        assert statuses["hostile_defense_sleep"]["status"] == "timeout"
        assert statuses["hostile_defense_wrong"]["status"] == "error" and "FeatureExtractor" in statuses["hostile_defense_wrong"]["message"]
    assert_same_numbers(records, reference)


def pretrain_suite(track: str, attacks: list[Any]) -> dict[str, Any]:
    raw = tiny_pretrain_suite({track: {"budgets": [0.02 if track == "pretrain-targeted" else 0.5], "attacks": attacks,
                                       "victim": {"l2": 0.001}, "recipe": {"epochs": 1}}}, n=200)
    raw["limits"] = {"plugin_seconds": LIMIT}
    return raw


@pytest.mark.parametrize("track,honest", [("pretrain-availability", ["none", "random_noise"]),
                                          ("pretrain-targeted", ["none", "poisoned_encoder"])])
@pytest.mark.heavy
def test_hostile_pretrain_attacks_are_contained_and_honest_cells_unchanged(tmp_path: Path, track: str,
                                                                           honest: list[str]) -> None:
    records = run(pretrain_suite(track, [*EXPECTED, *honest]), tmp_path / "hostile")
    reference = run(pretrain_suite(track, honest), tmp_path / "reference")
    assert_contained(records, EXPECTED, track, tmp_path / "hostile")
    assert_same_numbers(records, reference)


def test_targets_the_clean_victim_already_hits_make_the_cell_invalid(tmp_path: Path) -> None:
    records = run(pretrain_suite("pretrain-targeted", ["hostile_trivial_targets"]), tmp_path)
    record = records["pretrain-targeted/hostile_trivial_targets/none"]
    assert record["status"] == "invalid" and "already classified as its target class" in record["message"]


def test_targeted_rows_report_the_gain_over_no_attack_on_eligible_targets(tmp_path: Path) -> None:
    records = run(pretrain_suite("pretrain-targeted", ["none", "poisoned_encoder"]), tmp_path)
    for name in ("none", "poisoned_encoder"):
        m, d = records[f"pretrain-targeted/{name}/none"]["metrics"], records[f"pretrain-targeted/{name}/none"]["details"]
        assert m["attack_success_rate_no_attack"] == 0.0  # eligible targets only: the clean victim misses them all
        assert m["asr_gain"] == pytest.approx(m["attack_success_rate"] - m["attack_success_rate_no_attack"])
        assert 0 < d["n_targets_eligible"] <= d["n_targets"]


def test_a_cell_that_changes_shared_state_is_invalid_and_the_next_cell_is_rebuilt(tmp_path: Path,
                                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The scoring process's own check (fingerprints of what cells share): an engine bug or anything else
    that changes a shared setting during a cell spoils only that cell."""
    from benchmark.tracks.base import get_track

    track = get_track("downstream")
    original = track.run

    def corrupting(cell: Any, env: Any) -> Any:
        outcome = original(cell, env)
        if cell.attack.name == "label_flip":
            for shared in env.memo.values():
                if hasattr(shared, "train"):
                    shared.train.labels[:50] = 0
        return outcome

    monkeypatch.setattr(track, "run", corrupting)
    records = run(downstream_suite(["label_flip", "none", "random_noise"]), tmp_path / "corrupted")
    monkeypatch.setattr(track, "run", original)
    reference = run(downstream_suite(["none", "random_noise"]), tmp_path / "reference")
    bad = records["downstream/label_flip/none"]
    assert bad["status"] == "invalid" and "shared state changed" in bad["message"]
    assert_same_numbers(records, reference)


def test_the_scoring_process_rng_is_untouched_by_plugin_calls() -> None:
    from benchmark.plugins import catalogue
    from benchmark.workers import call_plugin

    info = catalogue().get("attack", "hostile_rng")
    state = torch.get_rng_state()
    with pytest.raises(Exception):  # noqa: B017 - whatever it raises, the generator state stays
        call_plugin("craft", {"module": info.module, "kind": "attack", "id": "hostile_rng", "settings": {}, "device": "cpu",
                              "rng_seed": 0, "track": "downstream", "context": {}}, timeout=30)
    assert torch.equal(state, torch.get_rng_state())


def test_ctrl_c_stops_the_run_kills_the_plugin_and_resumes(tmp_path: Path) -> None:
    """A user's interrupt while a plugin runs: the run stops with KeyboardInterrupt, the plugin process is
    gone, finished cells keep their records, the interrupted cell has none, and the next run finishes."""
    import multiprocessing

    raw = downstream_suite(["none", "hostile_sleeper"])
    raw["limits"] = {"plugin_seconds": 120}
    path = tmp_path / "suite.yaml"
    import yaml

    path.write_text(yaml.safe_dump(raw))
    suite = load_suite(str(path))
    results = tmp_path / "results"

    def interrupt_while_the_sleeper_runs() -> None:  # after the first cell's record, not at a fixed time
        deadline = time.monotonic() + 100
        while time.monotonic() < deadline and not list(results.rglob("*.json")):
            time.sleep(0.1)
        time.sleep(2.0)
        os.kill(os.getpid(), signal.SIGINT)

    # a process started in the background by a shell (`make test &`) inherits SIGINT ignored: the user's Ctrl-C
    # is what this test stands for, so it restores Python's own handler for the run
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    interrupter = threading.Thread(target=interrupt_while_the_sleeper_runs, daemon=True)
    interrupter.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_suite(suite, results_dir=results, cache_dir=tmp_path / "cache", device="cpu")
    finally:
        signal.signal(signal.SIGINT, previous)
    interrupter.join()
    assert not [p for p in multiprocessing.active_children() if p.is_alive()]
    names = sorted(p.name for p in (tmp_path / "results").rglob("*.json"))
    assert len(names) == 1 and "__none__" in names[0]


def test_a_plugin_call_equals_the_same_call_in_process_under_the_same_seed() -> None:
    """The plugin process reseeds the global generators right before plugin code runs: what a defense
    returns depends on its inputs and the call's seed only (not on what the harness built before)."""
    from benchmark.api import DefenseContext
    from benchmark.data import load_dataset
    from benchmark.plugins import load_plugins
    from benchmark.pretrain import SSLRecipe, extractor_tensors, make_extractor
    from benchmark.tracks.base import MethodEntry
    from benchmark.tracks.common import RunEnv, extractor_spec, plugin_call
    from benchmark.utils import seed_everything

    encoder = {"method": "simclr", "backbone": "cnn_micro", "epochs": 1, "method_settings": {"proj_hidden": 64, "proj_dim": 32}}
    data = load_dataset("mnist5k", "train", image_size=16, subset=300, subset_seed=0)
    torch.manual_seed(0)
    extractor = make_extractor(SSLRecipe(**encoder).build_model(1).backbone, data.images, torch.device("cpu"))
    settings = {"clean_size": 200, "epochs": 1}
    answer = plugin_call(RunEnv(cache=None, device=torch.device("cpu")), "repair_encoder", "defense",
                         MethodEntry("finetune", "finetune", settings),
                         {"extractor": extractor_spec(encoder, extractor, 1), "images": data.images, "labels": data.labels,
                          "defense_context": {"track": "downstream", "num_classes": 10, "seed": 7}}, rng_seed=7)
    _, defenses = load_plugins()
    cls = defenses.get("finetune")
    seed_everything(7)
    repaired = cls(cls.Config(**settings)).repair_encoder(
        extractor, data.images, data.labels, DefenseContext("downstream", 10, 7, torch.Generator().manual_seed(7), torch.device("cpu")))
    for name, tensor in extractor_tensors(repaired).items():
        assert torch.equal(tensor, answer["tensors"][name]), name


def test_the_hostile_reader_finds_a_path_handed_over_however_deep() -> None:
    """The positive control of ``hostile_test_reader``'s walk: a path inside containers, an object's
    attributes or a closure is found; module globals (the import system's, the environment) are not walked."""
    from tests.plugins.hostile import _reachable

    secret = Path("/tmp/pytest-of-someone/cache/poison.pt")

    class Holder:
        def __init__(self) -> None:
            self.inner = {"paths": [secret]}

    def closure() -> Path:
        return secret

    def found(root: Any) -> bool:
        return any(isinstance(v, (str, os.PathLike)) and "pytest-of" in str(v) for v in _reachable(root))

    assert found({"a": [Holder()]}) and found(closure) and found((1, {"k": str(secret)}))
    assert not any(v is sys.path for v in _reachable(closure))  # a module's globals are not entered


@pytest.mark.heavy
def test_plugin_processes_leave_no_semaphores_behind(tmp_path: Path, write_suite: Any) -> None:
    """A run whose plugin children draw progress bars (a training-stage defense pre-trains its victim in
    one, with the loop's bar) ends without the resource tracker's "leaked semaphore" warning: the children
    end with ``os._exit``, so a multiprocessing lock made in one (tqdm's default) would never be released."""
    raw = tiny_pretrain_suite({"pretrain-availability": {"budgets": [0.5], "attacks": ["none"],
                                                         "defenses": ["_test_training"],
                                                         "victim": {"l2": 0.001}, "recipe": {"epochs": 1}}}, n=100)
    done = subprocess.run([sys.executable, "-m", "benchmark", "run", "--suite", str(write_suite(raw)), "--device", "cpu",
                           "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"),
                           "--no-leaderboard"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "POISONBENCH_PROGRESS": "1"}, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "computed 1 cells (1 ok)" in done.stdout + done.stderr
    assert "leaked semaphore" not in done.stderr
