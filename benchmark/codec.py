"""The one codec between the scoring process and plugin processes: plain data (tensors, numbers, strings,
None, lists, tuples, dicts) as ``torch.save`` bytes, read back with ``torch.load(weights_only=True)``, so
nothing but plain data can cross (no pickled objects, no code, no tensor subclasses)."""

from __future__ import annotations

import io
from typing import Any

import torch


def encode(obj: Any) -> bytes:
    """Plain data (tensors, numbers, strings, None, lists, tuples, dicts) as bytes."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def decode(data: bytes) -> Any:
    """The inverse of :func:`encode`, with ``weights_only=True``: nothing but plain data can come back."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
