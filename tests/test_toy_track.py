"""A fourth track from the test suite, end to end, with no edit outside its folder (``tests/toy_track``): suite
validation, ``plan --estimate``, ``run``, its records, the board and ``leaderboard --check``. The engine finds it
through ``POISONBENCH_TRACKS`` and its attack through ``POISONBENCH_PLUGINS``, as an out-of-tree track would be."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOY = "tests.toy_track"
NAME = "toy-nearest-mean"


def _working_tree_copy(tmp_path: Path) -> Path:
    """The working tree as it is (tracked and untracked files, no records or figures), committed in a fresh
    repository: records computed there are fresh, and the copy has every uncommitted edit."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                            check=True).stdout.decode().split("\0")
    repo = tmp_path / "repo"
    for name in filter(None, listed):
        if name.startswith(("leaderboard/results/", "leaderboard/plots/")) or not (ROOT / name).is_file():
            continue
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, repo / name)
    (repo / "leaderboard" / "recompute.yaml").unlink(missing_ok=True)
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"]):
        subprocess.run(["git", *args], cwd=repo, check=True)
    return repo


CLI_STEPS = """
import contextlib, io, json, sys
from benchmark.__main__ import main
answers = []
for args in json.loads(sys.argv[1]):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        answers.append([main(args), out.getvalue()])
print(json.dumps(answers))
"""


def _cli_steps(repo: Path, env: dict[str, str], *steps: list[str]) -> list[tuple[int, str]]:
    """``python -m benchmark STEP`` for each step, one after another in one process in ``repo`` (one plugin
    server, started with the track in its environment): each step's exit code and output."""
    done = subprocess.run([sys.executable, "-c", CLI_STEPS, json.dumps(steps)], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return [(code, out) for code, out in json.loads(done.stdout.splitlines()[-1])]


def _main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """``python -m benchmark ARGS`` in this process: its exit code and its output."""
    from benchmark.__main__ import main

    capsys.readouterr()
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.mark.heavy
def test_a_toy_track_runs_end_to_end_from_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    repo = _working_tree_copy(tmp_path)
    env = {"POISONBENCH_TRACKS": TOY, "POISONBENCH_PLUGINS": f"{TOY}.toy_label_flip", "POISONBENCH_PROGRESS": "0",
           "POISONBENCH_CACHE": str(tmp_path / "cache")}
    suite = "tests/toy_track/toy.yaml"
    results, board = tmp_path / "results", tmp_path / "board"

    # in a clean copy of the tree (a record computed from uncommitted edits would be stale)
    (code, out), (bad_code, bad_out), (run_code, run_out) = _cli_steps(
        repo, {**os.environ, **env}, ["plan", "--suite", suite, "--estimate"],
        ["plan", "--suite", suite, "--set", f"tracks.{NAME}.budgets=[2]"],
        ["run", "--suite", suite, "--results-dir", str(results), "--board", str(board / "README.md")])
    assert code == 0 and "not estimated" not in out, out
    assert bad_code == 2 and f"tracks.{NAME}.budgets" in bad_out, bad_out  # the track's own spec
    assert run_code == 0, run_out[-4000:]
    records = [json.loads(p.read_text()) for p in sorted(results.rglob("*.json"))]
    assert len(records) == 4 and {r["track"] for r in records} == {NAME} and {r["status"] for r in records} == {"ok"}
    flipped = [r for r in records if r["cell"]["attack"]["id"] == "toy_label_flip"]
    assert all(r["metrics"]["accuracy_drop"] > 0 and r["metrics"]["n_poison"] > 0 for r in flipped)
    sources = records[0]["provenance"]["sources"]["files"]
    assert "tests/toy_track/track.py" in sources and "tests/toy_track/info.py" not in sources  # its provenance file set

    # the board's steps in this process (they call no plugin; the copy and this tree hold the same files)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    site = ["--results-dir", str(results), "--output", str(board / "README.md"), "--site", str(board / "index.html")]
    assert _main(capsys, "leaderboard", *site)[0] == 0
    text = (board / "README.md").read_text()
    assert f"**{NAME}**" in text and "nearest-class-mean" in text and "[toy_label_flip]" in text
    code, out = _main(capsys, "leaderboard", *site, "--check")
    assert code == 0, out[-4000:]

    # without the track's package, its records are of an unknown track: the check names it
    monkeypatch.setenv("POISONBENCH_TRACKS", "")
    code, out = _main(capsys, "leaderboard", *site, "--check")
    assert code != 0 and f"unknown track '{NAME}'" in out


def test_the_toy_track_is_named_only_in_its_folder() -> None:
    """No edit outside its folder: nothing else in the repository names it (this test aside)."""
    named = subprocess.run(["git", "grep", "-l", NAME], cwd=ROOT, capture_output=True, text=True,
                           check=False).stdout.split()  # exit 1: no match
    untracked = subprocess.run(["git", "ls-files", "-o", "--exclude-standard"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout.split()
    named += [f for f in untracked if f.endswith((".py", ".yaml", ".md")) and NAME in (ROOT / f).read_text()]
    assert {f for f in named if not f.startswith("tests/toy_track/")} <= {"tests/test_toy_track.py"}, named


