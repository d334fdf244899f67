"""Small shared helpers: seeding, device choice, hashing of configs, atomic file writes, progress bars."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # torch is imported lazily: the leaderboard path never loads it
    import torch

T = TypeVar("T")


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: equal configs give equal strings."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(obj: Any, length: int = 16) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


def cell_id(track: str, spec: dict[str, Any]) -> str:
    """A cell's id: its readable axes, then the hash of its full resolved spec (what names its record file)."""
    parts = [track, spec["encoder"]["method"], spec["encoder"]["backbone"], spec["scenario"]["name"],
             spec["attack"]["name"], spec["defense"]["name"], f"b{spec['budget']:g}"]
    if spec.get("input_epsilon") is not None:
        parts.append(f"eps{spec['input_epsilon']:.4g}")
    parts.append(f"s{spec['seed']}")
    return "__".join(parts).replace("/", "-") + "__" + config_hash(spec, 10)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA). kornia draws from torch's global generator."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derive_seed(*parts: Any) -> int:
    """A 31-bit seed derived from any JSON-able parts (stable across runs and machines)."""
    return int(config_hash(list(parts), 8), 16) & 0x7FFFFFFF


def fast_path(device: torch.device) -> contextlib.AbstractContextManager:
    """The device's fast path for a forward pass: bf16 autocast on CUDA; on a CPU nothing changes (the same
    code runs, autocast disabled), so CPU results stay bit-identical."""
    import torch

    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def fast_layout(obj: Any, device: torch.device) -> Any:
    """A module or a 4-D batch in channels_last on CUDA (convolutions run faster); unchanged on a CPU."""
    import torch

    if device.type != "cuda":
        return obj
    if isinstance(obj, torch.Tensor):
        return obj.contiguous(memory_format=torch.channels_last) if obj.dim() == 4 else obj
    return obj.to(memory_format=torch.channels_last)


def resolve_device(name: str = "auto") -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def progress_bar(iterable: Iterable[T], *, desc: str, total: int | None = None, leave: bool = False) -> Any:
    """A tqdm progress bar (iterate it; ``set_postfix_str`` names the current item), silenced by
    POISONBENCH_PROGRESS=0 (tests, CI logs)."""
    from tqdm.auto import tqdm

    disable = os.environ.get("POISONBENCH_PROGRESS", "1") == "0"
    return tqdm(iterable, desc=desc, total=total, leave=leave, disable=disable, dynamic_ncols=True)


def progress(iterable: Iterable[T], *, desc: str, total: int | None = None, leave: bool = False) -> Iterator[T]:
    """An iterator over ``iterable`` with a progress bar (see :func:`progress_bar`)."""
    return iter(progress_bar(iterable, desc=desc, total=total, leave=leave))
