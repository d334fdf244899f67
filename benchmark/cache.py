"""The content-addressed artifact cache: encoders, features, poisons, decoders.

An artifact is a dict of tensors stored at ``ROOT/<kind>/<hash of its config>.pt`` (read back with
``torch.load(weights_only=True)``: no pickled code) beside a ``.json`` with the config that made it.
Writes are atomic (temp file + rename), so a run killed mid-write leaves either nothing or the whole
artifact, and a resumed run rebuilds or reuses it.

Trusted as written, not as found: every entry's sha256 is kept in memory when this process writes or
first reads it, and in its ``.json``; a read checks it (against the memory digest where there is one), and
an entry that changed, or has no digest, is treated as absent (rebuilt, with a warning). Plugins never
reach the files: they ask the scoring process through :class:`benchmark.workers.CacheBridge`.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from benchmark.utils import atomic_write_bytes, atomic_write_json, canonical_json, config_hash

TensorDict = dict[str, torch.Tensor]


KIND = re.compile(r"[A-Za-z0-9_-]{1,200}")


class ArtifactCache:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.hits = 0
        self.builds = 0
        self.digests: dict[Path, str] = {}

    def key(self, kind: str, config: Mapping[str, Any]) -> str:
        return config_hash({"kind": kind, "config": config}, 24)

    def path(self, kind: str, config: Mapping[str, Any]) -> Path:
        if not KIND.fullmatch(kind):
            raise ValueError(f"cache kind {kind[:80]!r} is not a plain name (letters, digits, '-', '_')")
        return self.root / kind / f"{self.key(kind, config)}.pt"

    def has(self, kind: str, config: Mapping[str, Any]) -> bool:
        """Whether a trusted entry exists: present, and its bytes have the digest it was written with."""
        return self._read(self.path(kind, config)) is not None

    def load(self, kind: str, config: Mapping[str, Any]) -> TensorDict:
        found = self.get(kind, config)
        if found is None:
            raise FileNotFoundError(f"no trusted cache entry for {kind} (absent or changed since it was written)")
        return found

    def get(self, kind: str, config: Mapping[str, Any]) -> TensorDict | None:
        """The trusted entry for ``config``, or None."""
        data = self._read(self.path(kind, config))
        return None if data is None else torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)

    def save(self, kind: str, config: Mapping[str, Any], tensors: TensorDict) -> None:
        path = self.path(kind, config)
        buffer = io.BytesIO()
        torch.save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, buffer)
        data = buffer.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        atomic_write_bytes(path, data)
        atomic_write_json(path.with_suffix(".json"),
                          {"kind": kind, "config": json.loads(canonical_json(config)), "sha256": digest})
        self.digests[path] = digest

    def _read(self, path: Path) -> bytes | None:
        """The entry's bytes when they match its digest; None (with a warning for a changed one) otherwise."""
        if not path.exists():
            return None
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        expected = self.digests.get(path) or self._sidecar_digest(path)
        if digest != expected:
            warnings.warn(f"cache entry {path} changed since it was written (or has no digest): rebuilding it",
                          stacklevel=3)
            return None
        self.digests[path] = digest
        return data

    @staticmethod
    def _sidecar_digest(path: Path) -> str | None:
        try:
            digest = json.loads(path.with_suffix(".json").read_text()).get("sha256")
        except (OSError, ValueError, AttributeError):
            return None
        return digest if isinstance(digest, str) else None

    def get_or_build(self, kind: str, config: Mapping[str, Any], build: Callable[[], TensorDict]) -> TensorDict:
        """The artifact for ``config``, built (and stored) only when absent."""
        found = self.get(kind, config)
        if found is not None:
            self.hits += 1
            return found
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
