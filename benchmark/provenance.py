"""Which source files a result depends on, and whether a committed result still describes the code.

Every record lists, under ``provenance.sources.files``, the sha256 (16 hex digits) of each file on its
compute path: the engine modules every track uses, its own track's modules, its attack's and defense's
modules and the modules of their packages (``attacks/_common.py``, ``attacks/gc.py`` …) that those
modules import, directly or through one another. :func:`staleness` says what no longer
matches the working tree (an edited or removed file, or a record computed from a dirty tree); the board's
``--check`` fails on any, and ``run --stale`` recomputes exactly those cells. No torch here: the board
check stays fast.
"""

from __future__ import annotations

import ast
import hashlib
import subprocess
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from benchmark.tracks.info import track_info

REPO_ROOT = Path(__file__).resolve().parent.parent

ENGINE_FILES = (
    "benchmark/api.py", "benchmark/plugin_base.py", "benchmark/augment.py", "benchmark/backbones.py",
    "benchmark/cache.py", "benchmark/data.py", "benchmark/plugin_host.py", "benchmark/pretrain.py",
    "benchmark/probe.py", "benchmark/runner.py", "benchmark/utils.py", "benchmark/validation.py",
    "benchmark/workers.py", "benchmark/ssl/__init__.py", "benchmark/ssl/simclr.py", "benchmark/ssl/mocov2.py",
    "benchmark/ssl/byol.py", "benchmark/tracks/__init__.py", "benchmark/tracks/base.py",
    "benchmark/tracks/common.py", "benchmark/__init__.py", "benchmark/sandbox.py", "benchmark/plugins.py",
    "benchmark/registry.py", "benchmark/results.py", "benchmark/codec.py", "benchmark/supervised.py",
    "benchmark/ssl/base.py", "benchmark/training.py", "benchmark/tracks/specs.py",
)
"""The engine modules on every cell's compute path (the CLI, the suite schema, the board and the plots are
not: the resolved cell config is in the cell id, and rendering does not change a number)."""

VERIFY_SECONDS = 300.0
"""The default time limit of ``leaderboard --check --base``: recorded compute seconds re-computed in CI (here,
not in :mod:`benchmark.verify`, so that the CLI reads it without importing torch)."""



def relative(path: str | Path) -> str:
    """``path`` relative to the repository when inside it (records stay valid across clones)."""
    resolved = Path(path).resolve()
    try:
        return resolved.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return resolved.as_posix()


def plugin_files(source: str) -> list[str]:
    """A plugin module, its package's ``__init__.py`` (run when the module is imported) and the modules of
    its package that it imports (a private helper, another plugin)."""
    path = Path(source).resolve()
    init = path.parent / "__init__.py"
    return [relative(path)] + ([relative(init)] if init.exists() and init != path else []) \
        + [relative(p) for p in package_imports(path) if p != path]


def package_imports(path: Path) -> list[Path]:
    """The modules of ``path``'s package (``<package>/*.py``) that the module imports, directly or through
    one another, read from its ``import`` statements (absolute imports, as the plugins write them). Parsed
    once per version of the package's files: ``--check`` asks for every record."""
    package = path.parent
    versions = tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(package.glob("*.py")))
    return list(_package_imports(path, versions))


@lru_cache(maxsize=256)
def _package_imports(path: Path, versions: tuple[tuple[str, int, int], ...]) -> tuple[Path, ...]:
    package = path.parent
    found: set[Path] = set()
    todo = [path]
    while todo:
        for name in _imported_names(todo.pop()):
            head, _, rest = name.partition(".")
            helper = package / f"{rest}.py"
            if head == package.name and rest and "." not in rest and rest != "__init__" and helper.exists() \
                    and helper not in found:
                found.add(helper)
                todo.append(helper)
    return tuple(sorted(found))


def _imported_names(path: Path) -> list[str]:
    """``a.b`` for every ``import a.b``, ``from a.b import …`` and ``from a import b`` in ``path``."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def _is_package_module(path: str) -> bool:
    """A module of a plugin package (``attacks/``, ``defenses/``), other than its ``__init__.py``."""
    return Path(path).name != "__init__.py" and Path(path).parent.name in ("attacks", "defenses")


def _plugin_paths(provenance: Mapping[str, Any]) -> set[str] | None:
    """The files the record's attack and defense modules depend on now, or None when it names no module."""
    sources = provenance.get("sources") if isinstance(provenance.get("sources"), Mapping) else {}
    modules = [entry.get("module") for kind, entry in sources.items()
               if kind != "files" and isinstance(entry, Mapping) and isinstance(entry.get("module"), str)]
    paths = [REPO_ROOT / (module.replace(".", "/") + ".py") for module in modules]
    if not paths or not all(p.exists() for p in paths):
        return None
    return {f for p in paths for f in plugin_files(str(p))}


def dependencies(track: str, plugin_sources: Iterable[str]) -> list[str]:
    """Every file a cell of ``track`` with these plugin source files depends on (sorted, unique)."""
    info = track_info(track)
    files = set(ENGINE_FILES) | set(info.sources() if info is not None else ())
    for source in plugin_sources:
        files.update(plugin_files(source))
    return sorted(files)


@lru_cache(maxsize=1024)
def _hash(path: str, mtime_ns: int, size: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def file_hash(path: str) -> str | None:
    """sha256 (16 hex digits) of a repository-relative or absolute path; None when it does not exist."""
    full = Path(path) if Path(path).is_absolute() else REPO_ROOT / path
    try:
        stat = full.stat()
    except OSError:
        return None
    return _hash(str(full), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=1024)
def recorded_hash(path: str) -> str | None:
    """The hash of ``path`` as this process first read it (the code it imported), for a record."""
    return file_hash(path)


def recorded_hashes(files: Iterable[str]) -> dict[str, str | None]:
    return {f: recorded_hash(f) for f in files}


def snapshot(files: Iterable[str]) -> dict[str, str | None]:
    """The hashes of ``files`` read from disk now (no cache: an edit that keeps size and time shows too)."""
    found = {}
    for f in files:
        full = Path(f) if Path(f).is_absolute() else REPO_ROOT / f
        try:
            found[f] = hashlib.sha256(full.read_bytes()).hexdigest()[:16]
        except OSError:
            found[f] = None
    return found


def changed_during(before: Mapping[str, str | None]) -> list[str]:
    """The files of a :func:`snapshot` that differ now, or differ from what this process imported."""
    now = snapshot(before)
    return sorted(f for f in before if now[f] != before[f] or before[f] != recorded_hash(f))


def _hashed_files(record: Mapping[str, Any]) -> tuple[dict[str, Any], list[str], Mapping[str, Any]] | None:
    """The record's source hashes of the files on its path now, the package modules newly on it, and its
    provenance; None when it names no hashes. A module its plugins do not import is off its path; one they
    now import is on it."""
    provenance = record.get("provenance") if isinstance(record.get("provenance"), Mapping) else {}
    files = (provenance.get("sources") or {}).get("files") if isinstance(provenance.get("sources"), Mapping) else None
    if not isinstance(files, Mapping) or not files:
        return None
    on_path = _plugin_paths(provenance)
    if on_path is None:
        return dict(files), [], provenance
    kept = {p: d for p, d in files.items() if not _is_package_module(p) or p in on_path}
    return kept, sorted(p for p in on_path - set(kept) if _is_package_module(p)), provenance


def staleness(record: Mapping[str, Any]) -> list[str]:
    """Why ``record`` no longer describes the code in this tree (empty when it does)."""
    hashed = _hashed_files(record)
    if hashed is None:
        return ["it names no source hashes (computed before provenance checks)"]
    files, added, provenance = hashed
    reasons = [f"{path} changed" if file_hash(path) is not None else f"{path} is gone"
               for path, digest in sorted(files.items()) if file_hash(path) != digest]
    reasons += [f"{path} is now on its path" for path in added]
    if (provenance.get("code") or {}).get("dirty"):
        reasons.append("it was computed from a working tree with uncommitted changes")
    return reasons


def sandboxed(record: Mapping[str, Any]) -> bool:
    """Whether the record says its plugin calls ran in the sandbox (``run --sandbox``)."""
    provenance = record.get("provenance") if isinstance(record.get("provenance"), Mapping) else {}
    return provenance.get("sandbox") is True


# --------------------------------------------------------------------------------------------- recomputes
RECOMPUTE_FILE = "recompute.yaml"
"""Beside the results directory: an engine change whose recompute of a tier takes longer than one sitting."""


def pending_recompute(results_dir: str | Path) -> dict[str, Any] | None:
    """The recompute in progress for the records under ``results_dir`` (``reason``, ``before``: the commits
    whose code the not-yet-recomputed records describe, one or a list, returned as a list, ``suites``), or
    None. Malformed: ValueError."""
    import yaml

    path = Path(results_dir).parent / RECOMPUTE_FILE
    if not path.exists():
        return None
    spec = yaml.safe_load(path.read_text())
    before = spec.get("before") if isinstance(spec, dict) else None
    commits = [before] if isinstance(before, str) else before
    if not isinstance(spec, dict) or not (isinstance(spec.get("reason"), str) and spec["reason"]) \
            or not isinstance(commits, list) or not commits or not all(isinstance(c, str) and c for c in commits) \
            or not isinstance(spec.get("suites"), list) or not spec["suites"]:
        raise ValueError(f"{path}: expected reason: str, before: a commit or a list of commits, suites: [suite, ...]")
    for commit in commits:
        if _git_hash_at(commit, "benchmark/api.py") is None:
            raise ValueError(f"{path}: before: {commit!r} is not a commit of this repository")
    return {**spec, "before": commits}


def fresh_at(record: Mapping[str, Any], commit: str) -> bool:
    """Whether ``record`` described the code of ``commit``: every source file it hashed had that content
    then, and it was computed from a clean tree."""
    hashed = _hashed_files(record)
    if hashed is None or (hashed[2].get("code") or {}).get("dirty") is not False:
        return False
    return all(_git_hash_at(commit, path) == digest for path, digest in hashed[0].items())


@lru_cache(maxsize=4096)
def _git_hash_at(commit: str, path: str) -> str | None:
    try:
        data = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=REPO_ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return hashlib.sha256(data).hexdigest()[:16]
