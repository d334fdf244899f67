"""Issue #29: a plugin process cannot act through the file system or the process table.

Each way out is a probe of ``tests/plugins/escape.py``: reading the embedded data sets' files, listing or
writing the results and the cache, writing the source tree, seeing the scoring process, reading its
environment, reaching the network, leaving a process behind; plus a cache kind that walks out of its
namespace and a plugin that would lie about its time. With the sandbox every probe fails; in the same run
without it (the control) the probes succeed, so the test can see an escape where one is possible, and the
honest cells have the same numbers in both.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from benchmark.__main__ import main
from benchmark.sandbox import namespace_processes, unavailable_reason
from tests.plugins.escape import SECRET_ENV, TARGETS_ENV

ROOT = Path(__file__).resolve().parents[1]
SANDBOX_MISSING = unavailable_reason()
needs_sandbox = pytest.mark.skipif(SANDBOX_MISSING is not None, reason=f"no sandbox on this machine: {SANDBOX_MISSING}")
PROBES = ("reads_embedded_data", "lists_results", "lists_cache", "writes_cache", "writes_results", "writes_source",
          "sees_scoring_process", "reads_secret_env", "network")


def _suite(tmp_path: Path, attacks: list[str]) -> Path:
    from tests.conftest import TINY_SUITE

    raw = {**TINY_SUITE, "scenarios": TINY_SUITE["scenarios"][:1]}
    raw["tracks"] = {"downstream": {**TINY_SUITE["tracks"]["downstream"], "attacks": attacks}}
    path = tmp_path / f"suite-{len(attacks)}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _run(tmp_path: Path, attacks: list[str], name: str, sandbox: str, monkeypatch: pytest.MonkeyPatch,
         restart_plugin_server: Callable[[], None]) -> dict[str, dict]:
    from benchmark.data import embedded_data_dirs

    results, cache = tmp_path / name / "results", tmp_path / name / "cache"
    (results / "x").mkdir(parents=True)  # something to list
    (cache / "x").mkdir(parents=True)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    threading.Thread(target=listener.accept, daemon=True).start()
    monkeypatch.setenv(TARGETS_ENV, json.dumps({
        "embedded_data": str(embedded_data_dirs()[0]), "results": str(results), "cache": str(cache),
        "source": str(ROOT / "attacks" / "__init__.py"), "port": listener.getsockname()[1], "scoring_pid": os.getpid(),
        "scoring_cmdline": Path("/proc/self/cmdline").read_bytes().hex(), "daemon_pids": str(tmp_path / name / "pids")}))
    monkeypatch.setenv(SECRET_ENV, "the scoring process's secret")
    restart_plugin_server()
    code = main(["run", "--suite", str(_suite(tmp_path, attacks)), "--results-dir", str(results), "--cache-dir", str(cache),
                 "--no-leaderboard", "--sandbox", sandbox, "--plugins", "tests.plugins.escape"])
    listener.close()
    _kill_daemons(tmp_path / name / "pids")
    assert code in (0, 1)
    return {json.loads(p.read_text())["cell"]["attack"]["id"]: json.loads(p.read_text())
            for p in (results / "tiny").glob("*.json")}


def _kill_daemons(pids: Path) -> None:
    """The sleepers the probe started where nothing stopped them (the control): they hold the plugin server's
    files open, so stopping the server (the next test's) would wait for them."""
    for pid in (pids.read_text().split() if pids.exists() else []):
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass


@needs_sandbox
@pytest.mark.heavy
def test_every_escape_is_contained_and_honest_cells_keep_their_numbers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                       restart_plugin_server: Callable[[], None]) -> None:
    from benchmark import workers

    records = _run(tmp_path, ["none", "label_flip", "escape_probe", "escape_cache_kind", "escape_slow"], "sandboxed",
                   "required", monkeypatch, restart_plugin_server)
    server = workers._SANDBOXED_SERVER
    assert server is not None and sorted(inner for _, inner in namespace_processes(server)) == [1, 2], \
        "a process a call started outlived it"
    probe = records["escape_probe"]
    assert probe["status"] == "ok" and probe["provenance"]["sandbox"] is True
    found = probe["details"]["attack_diagnostics"]
    assert {k: found[k] for k in PROBES} == dict.fromkeys(PROBES, 0.0)
    assert found["writes_scratch"] == 1.0  # its own scratch directory works
    assert found["started_daemon"] == 1.0  # it could start one; the namespace check above shows it was killed
    kind = records["escape_cache_kind"]
    assert kind["status"] == "error" and "not a plain name" in kind["message"]
    assert not any((tmp_path / "sandboxed").rglob("forged*"))
    assert records["escape_slow"]["metrics"]["attack_seconds"] >= 1.0

    # the control, without the sandbox: each probe reports 1 where nothing stops it (so a 0 above is the sandbox's
    # doing), and the honest cells have the numbers they had in it
    open_run = _run(tmp_path, ["none", "label_flip", "escape_probe"], "open", "off", monkeypatch, restart_plugin_server)
    assert open_run["escape_probe"]["status"] == "ok", open_run["escape_probe"]["message"]
    assert open_run["escape_probe"]["provenance"]["sandbox"] is False
    found = open_run["escape_probe"]["details"]["attack_diagnostics"]
    for name in ("reads_embedded_data", "lists_results", "lists_cache", "writes_cache", "writes_results",
                 "sees_scoring_process", "reads_secret_env", "network"):
        assert found[name] == 1.0, name
    for attack in ("none", "label_flip"):
        assert records[attack]["metrics"] | {"attack_seconds": 0} == open_run[attack]["metrics"] | {"attack_seconds": 0}


def test_required_without_a_sandbox_stops_before_compute(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import benchmark.sandbox as sandbox

    monkeypatch.setattr(sandbox, "bwrap_path", lambda: None)
    sandbox.unavailable_reason.cache_clear()
    try:
        code = main(["run", "--suite", str(_suite(tmp_path, ["none"])), "--results-dir", str(tmp_path / "r"),
                     "--cache-dir", str(tmp_path / "c"), "--sandbox", "required", "--no-leaderboard"])
        assert code == 2 and not (tmp_path / "r").exists()
        with pytest.warns(UserWarning, match="without the sandbox"):
            assert sandbox.resolve_mode("auto") is False
    finally:
        sandbox.unavailable_reason.cache_clear()


def test_the_cache_rebuilds_an_entry_changed_behind_its_back(tmp_path: Path) -> None:
    import torch

    from benchmark.cache import ArtifactCache

    cache = ArtifactCache(tmp_path)
    cache.save("features", {"a": 1}, {"t": torch.ones(3)})
    path = cache.path("features", {"a": 1})
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))  # a plugin, a stray process or a disk error
    with pytest.warns(UserWarning, match="changed since it was written"):
        assert cache.get("features", {"a": 1}) is None
    rebuilt = cache.get_or_build("features", {"a": 1}, lambda: {"t": torch.zeros(3)})
    assert torch.equal(rebuilt["t"], torch.zeros(3))
    assert ArtifactCache(tmp_path).get("features", {"a": 1}) is not None  # the sidecar digest, in a new process
    with pytest.raises(ValueError, match="plain name"):
        cache.path("x/../../results", {})
