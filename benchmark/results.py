"""Result records: one JSON per cell with status, metrics and provenance, written atomically.

Layout: ``RESULTS_DIR/<suite name>/<cell id>.json``. A record with status ``ok`` or ``invalid`` is final
(re-running the suite skips it); ``error`` records are retried. The schema version and required fields
are in :mod:`leaderboard.schema`, which the board validates without importing torch.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmark.utils import atomic_write_json
from leaderboard.schema import SCHEMA_VERSION

PACKAGES = ("torch", "torchvision", "timm", "kornia", "opacus", "numpy", "scikit-learn", "mlxtend")
REPO_ROOT = Path(__file__).resolve().parent.parent

def result_path(results_dir: Path, suite_name: str, cell_id: str) -> Path:
    return Path(results_dir) / suite_name / f"{cell_id}.json"

def read_record(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


DEFAULT_RESULTS = Path("leaderboard/results")
"""Where the committed records live (relative to the repository root, where the CLI runs)."""

# the benchmark's own outputs: rewritten by runs, never read to compute a cell, so a tree that differs from
# its commit only in them is not dirty (a run started while another one's records are uncommitted)
OUTPUT_PATHS = ("leaderboard/results", "leaderboard/README.md", "leaderboard/index.html", "leaderboard/plots")
SOURCE_FOLDERS = ("benchmark", "attacks", "defenses")
"""Where an untracked file makes the tree dirty too (a module a plugin could import that no commit holds)."""


def _git(root: Path, *args: str, strip: bool = True) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=False).stdout
        return out.strip() if strip else out
    except (OSError, subprocess.SubprocessError):
        return ""


def uncommitted_files(root: Path) -> list[str]:
    """What makes a record computed from the checkout at ``root`` dirty: tracked files other than outputs
    that differ from its commit, and untracked files in a source folder."""
    outputs = [f":(exclude){p}" for p in OUTPUT_PATHS]
    lines = (_git(root, "status", "--porcelain", "--untracked-files=no", "--", ".", *outputs, strip=False).splitlines()
             + _git(root, "status", "--porcelain", "--untracked-files=all", "--", *SOURCE_FOLDERS, strip=False).splitlines())
    return sorted({line[3:] for line in lines if line.strip()})


def git_version(root: Path) -> dict[str, Any]:
    """The commit of the checkout at ``root`` and whether it is dirty (:func:`uncommitted_files`)."""
    commit = _git(root, "rev-parse", "HEAD")
    return {"commit": commit or "unknown", "dirty": bool(uncommitted_files(root)) if commit else None}


@lru_cache(maxsize=1)
def code_version() -> dict[str, Any]:
    return git_version(REPO_ROOT)

@lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions

def device_info(device: Any) -> dict[str, Any]:
    return dict(_device_info(str(device)))

@lru_cache(maxsize=8)
def _device_info(name: str) -> dict[str, Any]:
    import torch

    device = torch.device(name)

    info: dict[str, Any] = {"type": device.type, "threads": torch.get_num_threads(), "platform": sys.platform}
    if device.type == "cuda":
        info["name"] = torch.cuda.get_device_name(device)
    else:
        info["name"] = platform.processor() or platform.machine()
        info |= _cpu_model()
    return info


def _cpu_model() -> dict[str, Any]:
    """The CPU model and its vector extensions: float results on a CPU can differ between models (the same
    code and seeds gave a clean accuracy of 92.9 % on one Xeon and 91.6 % on another)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return {}
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    return {"cpu": fields.get("model name", "unknown"),
            "cpu_isa": sorted(f for f in flags if f.startswith(("avx", "amx", "fma", "sse4")))}

def write_record(path: Path, record: dict[str, Any]) -> None:
    record = {"schema_version": SCHEMA_VERSION, **record}
    atomic_write_json(path, record)
