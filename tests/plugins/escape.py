"""Attacks that try to act through the file system and the process table (issue #29), each probing one
way out and recording, as a diagnostic (1.0 = it could, 0.0 = it could not), whether it got there.

The probes are non-destructive (they test access, they do not write), so the same plugin also runs
unsandboxed as the control that shows each probe would see an escape where one is possible. The paths to
probe come from ``$POISONBENCH_ESCAPE_TARGETS`` (JSON), set by ``tests/test_sandbox.py``.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmark.api import DownstreamAttack, DownstreamPoison, MethodConfig, register_attack

TARGETS_ENV = "POISONBENCH_ESCAPE_TARGETS"
SECRET_ENV = "ESCAPE_TEST_SECRET"


@dataclass(frozen=True, kw_only=True)
class NoConfig(MethodConfig):
    pass


def _targets() -> dict[str, Any]:
    return json.loads(os.environ.get(TARGETS_ENV, "{}"))


def _can(probe: Any) -> float:
    try:
        return 1.0 if probe() else 0.0
    except OSError:
        return 0.0


def _lists(path: str) -> bool:
    return any(Path(path).iterdir())


def _reads_any_file(path: str) -> bool:
    for entry in Path(path).rglob("*"):
        if entry.is_file():
            entry.read_bytes()[:16]
            return True
    return False


def _writable(path: str) -> bool:
    return os.access(path, os.W_OK) and not _read_only_mount(path)


def _read_only_mount(path: str) -> bool:
    return bool(os.statvfs(path).f_flag & os.ST_RDONLY)


def _sees_scoring_process() -> bool:
    """The scoring process (its pid, as the harness sees it) and its command line, through ``/proc``: the very
    command line the scoring process read of itself (a pytest run or a pytest-xdist worker alike)."""
    targets = _targets()
    return Path(f"/proc/{targets['scoring_pid']}/cmdline").read_bytes() == bytes.fromhex(targets["scoring_cmdline"])


def _network() -> bool:
    with socket.create_connection(("127.0.0.1", int(_targets()["port"])), timeout=1.0):
        return True


def _start_daemon() -> bool:
    """A double-forked sleeper that outlives the call unless the harness kills it; its pid is written to the
    targets' ``daemon_pids`` file where the plugin can write there (without the sandbox: the test ends it)."""
    pid = os.fork()
    if pid == 0:
        sleeper = os.fork()
        if sleeper == 0:
            os.setsid()
            time.sleep(600)
            os._exit(0)
        try:
            with open(_targets()["daemon_pids"], "a") as pids:
                pids.write(f"{sleeper}\n")
        except (OSError, KeyError):
            pass
        os._exit(0)
    os.waitpid(pid, 0)
    return True


def probe_all(ctx: Any) -> dict[str, float]:
    targets = _targets()
    return {
        "reads_embedded_data": _can(lambda: _reads_any_file(targets["embedded_data"])),
        "lists_results": _can(lambda: _lists(targets["results"])),
        "lists_cache": _can(lambda: _lists(targets["cache"])),
        "writes_cache": _can(lambda: _writable(targets["cache"])),
        "writes_results": _can(lambda: _writable(targets["results"])),
        "writes_source": _can(lambda: _writable(targets["source"])),
        "sees_scoring_process": _can(_sees_scoring_process),
        "reads_secret_env": 1.0 if SECRET_ENV in os.environ else 0.0,
        "network": _can(_network),
        "started_daemon": _can(_start_daemon),
        "writes_scratch": _can(lambda: Path(os.environ.get("TMPDIR", "/tmp"), "x").write_text("x") == 1),
    }


class Escape(DownstreamAttack):
    Config = NoConfig
    citation = "test fixture (issue #29: what a plugin can do through the file system and the process table)"

    def poison(self, ctx: Any, diagnostics: dict[str, float]) -> DownstreamPoison:
        n = max(1, ctx.budget)
        return DownstreamPoison(images=ctx.train_images[:n].clone(), labels=(ctx.train_labels[:n] + 1) % ctx.num_classes,
                                base_indices=torch.arange(n), diagnostics=diagnostics)


@register_attack
class EscapeProbe(Escape):
    """Probes every way out (diagnostics) and then flips labels like ``label_flip`` on the first points."""

    id = "escape_probe"

    def craft_downstream(self, ctx: Any) -> DownstreamPoison:
        return self.poison(ctx, probe_all(ctx))


@register_attack
class EscapeCacheKind(Escape):
    """Names a cache kind that walks out of its namespace, into the results directory."""

    id = "escape_cache_kind"

    def craft_downstream(self, ctx: Any) -> DownstreamPoison:
        ctx.cached("x/../../results/forged", {}, lambda: {"t": torch.zeros(1)})
        return self.poison(ctx, {})


@register_attack
class EscapeSlow(Escape):
    """Works for a second; its recorded attack time is the scoring process's measurement, not its own."""

    id = "escape_slow"

    def craft_downstream(self, ctx: Any) -> DownstreamPoison:
        time.sleep(1.0)
        return self.poison(ctx, {})
