"""Plugin isolation: attack and defense code never runs in the process that scores victims.

Every call into plugin code (crafting a poison, a defense's transform, a defended victim's training, even
reading a plugin's ``Config``) runs in a child process forked from a *pristine server*: a process that has
imported torch and the engine but no plugin module and has computed nothing (Python's ``forkserver`` start
method, with the engine modules preloaded). A call costs a fork (tens of milliseconds), not an interpreter
start, and each call starts from the same pristine state: a plugin that patches the engine, mutates the
data it was handed, changes the global RNG or leaves threads behind affects only its own call.

The child receives copies of what its track's threat model grants (``benchmark.plugin_host`` builds the
context from them), imports only the plugin's own module, and sends back plain data. Both directions use
:func:`encode` / :func:`decode`: ``torch.save`` bytes read with ``torch.load(weights_only=True)``, which
accepts tensors, numbers, strings and containers and nothing else: no pickled objects, no code, no
tensor subclasses. The scoring process validates what comes back and uses exactly that.

Limits: a per-call time limit (the child is killed; :class:`PluginTimeout`); any ``BaseException`` raised
by plugin code (``SystemExit`` and ``KeyboardInterrupt`` included) is reported as :class:`PluginError`; a
child that dies without answering is a :class:`PluginError` too. A Ctrl-C of the user interrupts the
scoring process, which kills the child and stops the run (no record is written for the interrupted cell).
The child ignores SIGINT, so only the user's interrupt of the scoring process stops the run.

The pristine server can itself run in an operating-system sandbox (:mod:`benchmark.sandbox`,
:func:`configure_sandbox`): then no plugin call can read or write the disk outside its scratch directory,
see the scoring process, or leave a process behind (every process a call started is killed when it
returns). Without it, a plugin can still open files by name, which review and ``verify`` must catch.
"""

from __future__ import annotations

import multiprocessing
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmark.codec import decode, encode
from benchmark.plugin_host import child_entry
from benchmark.sandbox import SandboxSpec, kill_strays, launcher_directory, resolve_mode
from benchmark.utils import atomic_write_bytes

PRELOAD = ("torch", "numpy", "kornia", "timm", "opacus", "benchmark.api", "benchmark.pretrain", "benchmark.probe",
           "benchmark.tracks.common", "benchmark.plugin_host")
"""Modules the pristine server imports once (engine and libraries only; never a plugin module)."""

PLAIN_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""What a plugin may name a cache kind: no path separators, no dots."""


class PluginError(Exception):
    """Plugin code raised (any ``BaseException``) or its process died; ``details`` holds the traceback."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


class PluginTimeout(Exception):
    """A plugin call ran past its time limit; the child was killed."""


# --------------------------------------------------------------------------------------------- the pool
_CONTEXT: Any = None
_LOCK = threading.Lock()
_SANDBOX: SandboxSpec | None = None
_SANDBOXED_SERVER: int | None = None  # the pid of the (bwrap) server process started in the sandbox


def configure_sandbox(mode: str, hidden: Iterable[str | Path] = ()) -> bool:
    """Run plugin calls in the sandbox (``mode`` auto / required / off, :func:`benchmark.sandbox.resolve_mode`)
    with ``hidden`` directories out of sight; returns whether calls are sandboxed. A server already
    running under other settings is stopped (the next call starts the right one)."""
    global _SANDBOX
    spec = SandboxSpec(hidden=tuple(str(Path(p).resolve()) for p in hidden)) if resolve_mode(mode) else None
    with _LOCK:
        if spec != _SANDBOX:
            _stop_server()
            _SANDBOX = spec
    return spec is not None


def sandboxed() -> bool:
    """Whether this process's plugin calls run in the sandbox (recorded as ``provenance.sandbox``)."""
    return _SANDBOX is not None


def _stop_server() -> None:
    global _SANDBOXED_SERVER
    from multiprocessing import forkserver

    if forkserver._forkserver._forkserver_pid is not None:
        forkserver._forkserver._stop()
    _SANDBOXED_SERVER = None


def _context() -> Any:
    """The forkserver context with the engine preloaded (started on first use, once per process; in the
    sandbox when one is configured)."""
    global _CONTEXT, _SANDBOXED_SERVER
    from multiprocessing import forkserver, resource_tracker, spawn

    with _LOCK:
        if _CONTEXT is None:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(list(PRELOAD))
            _CONTEXT = ctx
        if _SANDBOX is not None and (_SANDBOXED_SERVER is None or _SANDBOXED_SERVER != _server_pid()):
            _stop_server()
            resource_tracker.ensure_running()  # outside the sandbox, with the plain interpreter
            interpreter = spawn.get_executable()
            spawn.set_executable(str(_SANDBOX.launcher(launcher_directory())))
            try:
                forkserver.ensure_running()
            finally:
                spawn.set_executable(interpreter)
            _SANDBOXED_SERVER = _server_pid()
        return _CONTEXT


def _server_pid() -> int | None:
    from multiprocessing import forkserver

    return forkserver._forkserver._forkserver_pid


@dataclass
class CallStats:
    """How many plugin calls this process made and the seconds they cost beyond the plugin's own work."""

    calls: int = 0
    seconds: float = 0.0
    plugin_seconds: float = 0.0
    last_seconds: float = 0.0  # the wall time of the latest call, measured here (never reported by a plugin)

    @property
    def overhead_seconds(self) -> float:
        return self.seconds - self.plugin_seconds


STATS = CallStats()


class Bridge:
    """What a child may ask the scoring process for while it runs: artifacts in its own cache namespace
    and its own checkpoints. Override :meth:`get` / :meth:`put` / :meth:`load_checkpoint` /
    :meth:`save_checkpoint`; the default grants nothing."""

    def get(self, kind: str, config: Any) -> dict[str, torch.Tensor] | None:
        return None

    def put(self, kind: str, config: Any, tensors: dict[str, torch.Tensor]) -> None:
        return None

    def load_checkpoint(self, name: str) -> bytes | None:
        return None

    def save_checkpoint(self, name: str, data: bytes) -> None:
        return None


def call_plugin(function: str, request: Mapping[str, Any], *, timeout: float | None, bridge: Bridge | None = None) -> Any:
    """Run ``benchmark.plugin_host.<function>(request)`` in a fresh child of the pristine server and return
    its decoded answer. Raises :class:`PluginTimeout` or :class:`PluginError`."""
    start = time.perf_counter()
    ctx = _context()
    server = _SANDBOXED_SERVER
    parent, child = ctx.Pipe(duplex=True)
    process = ctx.Process(target=child_entry, args=(child, function, encode(dict(request)), server is not None),
                          daemon=True)
    process.start()
    child.close()
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        if server is not None and _server_pid() != server:
            raise PluginError("the sandboxed plugin server was replaced during the call")
        answer, plugin_seconds = _serve(parent, process, bridge or Bridge(), deadline, timeout)
    finally:
        _end_call(process, server)
        parent.close()
        STATS.calls += 1
        STATS.last_seconds = time.perf_counter() - start
        STATS.seconds += STATS.last_seconds
    STATS.plugin_seconds += plugin_seconds
    return answer


def _end_call(process: Any, server: int | None) -> None:
    """Stop the call's process; in the sandbox, every process the call started too (its pid there is
    a pid of the sandbox's namespace, so it is found through ``/proc``, never signalled by number)."""
    if server is not None:
        kill_strays(server)
    elif process.is_alive():
        process.kill()
    process.join()


def _serve(conn: Any, process: Any, bridge: Bridge, deadline: float | None, timeout: float | None) -> tuple[Any, float]:
    while True:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not conn.poll(remaining):
            raise PluginTimeout(f"plugin call exceeded its time limit of {timeout:g} s")
        try:
            message = decode(conn.recv_bytes())
        except (EOFError, OSError):
            process.join(5)
            raise PluginError(f"the plugin process ended without an answer (exit code {process.exitcode})") from None
        except Exception as exc:  # not plain data: weights_only refused it
            raise PluginError(f"the plugin process sent something that is not plain data: {exc}") from None
        op = message.get("op") if isinstance(message, dict) else None
        if op == "result":
            return message.get("value"), float(message.get("seconds", 0.0))
        if op == "error":
            raise PluginError(str(message.get("message")), str(message.get("traceback", "")))
        if op == "cache_get":
            conn.send_bytes(encode({"tensors": bridge.get(str(message.get("kind")), message.get("config"))}))
        elif op == "cache_put":
            tensors = message.get("tensors")
            if isinstance(tensors, dict) and all(isinstance(k, str) and type(v) is torch.Tensor for k, v in tensors.items()):
                bridge.put(str(message.get("kind")), message.get("config"), tensors)
            conn.send_bytes(encode({"ok": True}))
        elif op == "checkpoint_load":
            conn.send_bytes(encode({"data": bridge.load_checkpoint(str(message.get("name")))}))
        elif op == "checkpoint_save":
            data = message.get("data")
            if isinstance(data, bytes):
                decode(data)  # only plain data is ever stored
                bridge.save_checkpoint(str(message.get("name")), data)
            conn.send_bytes(encode({"ok": True}))
        else:
            raise PluginError(f"the plugin process sent an unknown message {op!r}")


# --------------------------------------------------------------------------------------------- cache bridge
class CacheBridge(Bridge):
    """A bridge to the artifact cache, confined to one namespace (``attack-<id>-<kind>`` under a fixed
    scope) and to checkpoints under one key: a plugin can reach only artifacts of its own kind."""

    def __init__(self, cache: Any, namespace: str, scope: Mapping[str, Any], checkpoint_key: str | None = None) -> None:
        self.cache, self.namespace, self.scope, self.checkpoint_key = cache, namespace, dict(scope), checkpoint_key

    def _kind(self, kind: str) -> str:
        if not PLAIN_NAME.fullmatch(kind):
            raise PluginError(f"cache kind {kind[:80]!r} is not a plain name (letters, digits, '-', '_'; at most 64)")
        return f"{self.namespace}-{kind}"

    def _config(self, config: Any) -> dict[str, Any]:
        return {"scope": self.scope, "config": config}

    def get(self, kind: str, config: Any) -> dict[str, torch.Tensor] | None:
        return self.cache.get(self._kind(kind), self._config(config))

    def put(self, kind: str, config: Any, tensors: dict[str, torch.Tensor]) -> None:
        self.cache.save(self._kind(kind), self._config(config), tensors)

    def _checkpoint(self, name: str) -> Path | None:
        if self.checkpoint_key is None:
            return None
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:100] or "checkpoint"
        return Path(self.cache.root) / "checkpoints" / self.checkpoint_key / f"{safe}.pt"

    def load_checkpoint(self, name: str) -> bytes | None:
        path = self._checkpoint(name)
        return path.read_bytes() if path is not None and path.exists() else None

    def save_checkpoint(self, name: str, data: bytes) -> None:

        path = self._checkpoint(name)
        if path is not None:
            atomic_write_bytes(path, data)
