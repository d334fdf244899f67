"""The operating-system sandbox of plugin processes, built on bubblewrap (``bwrap``).

The pristine plugin server (:mod:`benchmark.workers`) is started through ``env -i … bwrap … python``, so it
and every plugin call forked from it run with

- a read-only view of the whole file system (the source tree included: nothing can edit the code under a
  run), with the results directory, the artifact cache, the data root and the embedded data sets' package
  files hidden behind empty read-only directories;
- a private ``/tmp`` (an empty tmpfs), wiped at the start of every call: a call's scratch directory;
- no network (a new network namespace with only loopback), no capabilities, no new user namespaces;
- its own PID namespace and ``/proc``: the scoring process, its memory, command line and environment are
  out of sight, and after every call the scoring process kills every process of the namespace except the
  server itself (:meth:`SandboxServer.kill_strays`), so nothing a call starts outlives it;
- a clean environment (``env -i`` plus :data:`ENV_KEEP`), and it dies with the scoring process.

``--sandbox auto`` (the default) uses it where the kernel and ``bwrap`` allow and otherwise warns in one
line and runs plugins unsandboxed; ``required`` stops with an error instead; ``off`` never uses it. Each
record says which (``provenance.sandbox``); ``leaderboard --check`` fails on a committed record computed
without it. Cost: about 3 s once per run to start the server, tens of milliseconds per call (the stray
sweep reads ``/proc``).
"""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

MODES = ("auto", "required", "off")
ENV_KEEP = ("PATH", "LANG", "LC_ALL", "HOME", "PYTHONPATH", "PYTHONHASHSEED", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
            "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "CUBLAS_WORKSPACE_CONFIG")
ENV_KEEP_PREFIXES = ("POISONBENCH_", "TORCH_", "KMP_")
"""The environment a sandboxed plugin process sees; everything else is dropped."""

BWRAP_FLAGS = ("--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
               "--cap-drop", "ALL", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp")


class SandboxUnavailable(RuntimeError):
    """``--sandbox required`` on a machine where bubblewrap cannot build the sandbox."""


@dataclass(frozen=True)
class SandboxSpec:
    """What the sandbox hides (``hidden``: directories that appear empty and read-only inside)."""

    hidden: tuple[str, ...] = ()
    python: str = field(default_factory=lambda: sys.executable)

    def bwrap_arguments(self) -> list[str]:
        args = list(BWRAP_FLAGS)
        for path in _kept_under_tmp():  # the interpreter, the code and the working directory stay visible
            args += ["--ro-bind", path, path]
        for path in sorted({str(Path(p).resolve()) for p in self.hidden if Path(p).exists()}):
            if Path(path).is_dir():
                args += ["--tmpfs", path, "--remount-ro", path]
            else:
                args += ["--ro-bind", "/dev/null", path]
        for device in sorted(Path("/dev").glob("nvidia*")) + sorted(Path("/dev").glob("dri")):
            args += ["--dev-bind", str(device), str(device)]
        return args

    def environment(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if k in ENV_KEEP or k.startswith(ENV_KEEP_PREFIXES)}

    def command(self, argv: Iterable[str] = ()) -> list[str]:
        """The command line that runs ``python argv…`` inside the sandbox."""
        env = [f"{k}={v}" for k, v in sorted(self.environment().items())]
        return ["/usr/bin/env", "-i", *env, bwrap_path() or "bwrap", *self.bwrap_arguments(), "--", self.python, *argv]

    def launcher(self, directory: Path) -> Path:
        """An executable script standing in for the interpreter (``multiprocessing``'s executable)."""
        path = Path(directory) / "sandboxed-python"
        path.write_text("#!/bin/sh\nexec " + " ".join(shlex.quote(a) for a in self.command()) + ' "$@"\n')
        path.chmod(0o700)
        return path


def _kept_under_tmp() -> list[str]:
    """Paths the plugin process needs that the private ``/tmp`` would cover (a virtual environment or a
    checkout under ``/tmp``): the interpreter's prefix, ``sys.path``, the working directory and the main
    script (``multiprocessing`` runs it again in the server)."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    candidates = [sys.prefix, os.getcwd(), *sys.path, *([main_file] if main_file else [])]
    kept: list[str] = []
    for candidate in sorted({str(Path(p).resolve()) for p in candidates if p and Path(p).exists()}):
        if Path(candidate).is_relative_to("/tmp") and candidate != "/tmp" and not any(Path(candidate).is_relative_to(k) for k in kept):
            kept.append(candidate)
    return kept


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


@functools.lru_cache(maxsize=1)
def unavailable_reason() -> str | None:
    """Why the sandbox cannot be built here (None when it can): no ``bwrap``, or the kernel refuses it."""
    if not sys.platform.startswith("linux"):
        return f"bubblewrap needs Linux (this is {sys.platform})"
    if bwrap_path() is None:
        return "bubblewrap (bwrap) is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    probe = subprocess.run([bwrap_path() or "bwrap", *BWRAP_FLAGS, "--", "/bin/true"], capture_output=True, text=True,
                           check=False)
    if probe.returncode != 0:
        return f"bwrap cannot build the sandbox on this kernel: {probe.stderr.strip()[:300]}"
    return None


def resolve_mode(mode: str) -> bool:
    """Whether plugin calls are sandboxed under ``mode``; ``required`` without a sandbox raises."""
    if mode not in MODES:
        raise ValueError(f"--sandbox {mode!r}: choose one of {', '.join(MODES)}")
    if mode == "off":
        return False
    reason = unavailable_reason()
    if reason is None:
        return True
    if mode == "required":
        raise SandboxUnavailable(f"--sandbox required: {reason}")
    warnings.warn(f"plugin calls run without the sandbox: {reason} (records say sandbox: false)", stacklevel=2)
    return False


# --------------------------------------------------------------------------------------------- the namespace
def namespace_processes(outer_pid: int) -> list[tuple[int, int]]:
    """``(host pid, pid inside)`` of every process in the PID namespace that the bwrap process
    ``outer_pid`` created (bwrap's init is 1 inside, the command it runs 2)."""
    init = _children(outer_pid)
    if not init:
        return []
    try:
        namespace = os.readlink(f"/proc/{init[0]}/ns/pid")
    except OSError:
        return []
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "ns" / "pid") != namespace:
                continue
            inner = _inner_pid(entry / "status")
        except OSError:
            continue
        if inner is not None:
            found.append((int(entry.name), inner))
    return found


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _inner_pid(status: Path) -> int | None:
    for line in status.read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    return None


def kill_strays(outer_pid: int, keep_inner: tuple[int, ...] = (1, 2)) -> int:
    """Kill every process of the sandbox's PID namespace except bwrap's init and the server; returns how
    many were killed."""
    killed = 0
    for host_pid, inner in namespace_processes(outer_pid):
        if inner not in keep_inner:
            try:
                os.kill(host_pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
    return killed


def fresh_scratch() -> str:
    """In a sandboxed call (run first): empty the private ``/tmp`` (what an earlier call left there) and
    make it the call's temporary directory."""
    for entry in Path("/tmp").iterdir():
        if os.path.ismount(entry) or any(Path(k).is_relative_to(entry) for k in _kept_under_tmp()):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    scratch = tempfile.mkdtemp(prefix="call-", dir="/tmp")
    os.environ["TMPDIR"] = scratch
    tempfile.tempdir = scratch
    return scratch


def launcher_directory() -> Path:
    """A private directory for the launcher script (removed with the scoring process's temp files)."""
    return Path(tempfile.mkdtemp(prefix="poisonbench-sandbox-"))
