"""The committed board: ``python -m benchmark leaderboard --check --base main``, as ``make test`` ran it after the
tests, here so that it runs beside them (pytest-xdist) instead of after them. It fails on a stale or invalid
record, a board, page or figure out of date, a suite cell without a record, and a record changed since the base
that does not reproduce."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from benchmark.__main__ import main

ROOT = Path(__file__).resolve().parent.parent
BASE_ENV = "POISONBENCH_CHECK_BASE"
"""The base of the check (``make test BASE=ref``); unset: ``main`` where the clone has it; empty: none."""


def _base() -> list[str]:
    base = os.environ.get(BASE_ENV)
    if base is None:
        has_main = subprocess.run(["git", "rev-parse", "--verify", "-q", "main"], cwd=ROOT, capture_output=True, check=False)
        base = "main" if has_main.returncode == 0 else ""
    return ["--base", base] if base else []


@pytest.mark.heavy
def test_the_committed_board_passes_the_check(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """In this process (its plugin server is warm), with the command's own defaults: the shipped plugins only,
    and the sandbox where the machine has one."""
    for name in ("POISONBENCH_PLUGINS", "POISONBENCH_SANDBOX", "POISONBENCH_TRACKS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(ROOT)
    code = main(["leaderboard", "--check", *_base()])
    out = capsys.readouterr()
    assert code == 0, out.out[-6000:] + out.err[-6000:]
