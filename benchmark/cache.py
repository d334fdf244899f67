"""The content-addressed artifact cache: encoders, features, poisons, decoders.

An artifact is a dict of tensors stored at ``ROOT/<kind>/<hash of its config>.pt`` (read back with
``torch.load(weights_only=True)``: no pickled code) beside a ``.json`` with the config that made it.
Writes are atomic (temp file + rename), so a run killed mid-write leaves either nothing or the whole
artifact, and a resumed run rebuilds or reuses it.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from benchmark.utils import atomic_write_bytes, atomic_write_json, canonical_json, config_hash

TensorDict = dict[str, torch.Tensor]


class ArtifactCache:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.hits = 0
        self.builds = 0

    def key(self, kind: str, config: Mapping[str, Any]) -> str:
        return config_hash({"kind": kind, "config": config}, 24)

    def path(self, kind: str, config: Mapping[str, Any]) -> Path:
        return self.root / kind / f"{self.key(kind, config)}.pt"

    def has(self, kind: str, config: Mapping[str, Any]) -> bool:
        return self.path(kind, config).exists()

    def load(self, kind: str, config: Mapping[str, Any]) -> TensorDict:
        return torch.load(self.path(kind, config), map_location="cpu", weights_only=True)

    def save(self, kind: str, config: Mapping[str, Any], tensors: TensorDict) -> None:
        path = self.path(kind, config)
        buffer = io.BytesIO()
        torch.save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, buffer)
        atomic_write_bytes(path, buffer.getvalue())
        atomic_write_json(path.with_suffix(".json"), {"kind": kind, "config": json.loads(canonical_json(config))})

    def get_or_build(self, kind: str, config: Mapping[str, Any], build: Callable[[], TensorDict]) -> TensorDict:
        """The artifact for ``config``, built (and stored) only when absent."""
        if self.has(kind, config):
            self.hits += 1
            return self.load(kind, config)
        tensors = build()
        self.save(kind, config, tensors)
        self.builds += 1
        return tensors

    def clean_temporaries(self) -> int:
        """Remove temp files left by a killed run; returns how many."""
        removed = 0
        if self.root.exists():
            for tmp in self.root.rglob(".*.tmp"):
                tmp.unlink(missing_ok=True)
                removed += 1
        return removed
