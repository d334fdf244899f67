"""The harness's threat-model checks every track uses: what an attack returns is validated before use (each
track's ``validate`` module checks its own poison type with these).

Every check reports a readable problem; a cell whose attack broke its threat model is marked
``invalid`` with these messages and never reaches the leaderboard as a number.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Any, TypeVar

import torch

TOLERANCE = 1e-5
P = TypeVar("P")


class ThreatModelViolation(Exception):
    """The attack's output broke the threat model; ``problems`` lists every violation."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def fingerprint(*tensors: torch.Tensor) -> str:
    """A hash of tensor contents, to detect that an attack mutated what it was given."""
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def poison_from_answer(answer: Any, cls: type[P]) -> P:
    """The poison dataclass ``cls`` rebuilt from a plugin process's answer (:func:`benchmark.plugin_host.craft`):
    every field a contiguous copy of a plain tensor (or an integer ``target_class``), finite diagnostics.
    Raises :class:`ThreatModelViolation` listing every problem, including those the plugin process found
    (a wrong return type, inputs mutated in place)."""
    if not isinstance(answer, dict):
        raise ThreatModelViolation(["the attack's process sent no poison"])
    problems = [str(v) for v in answer.get("violations") or []]
    fields = answer.get("fields")
    if not isinstance(fields, dict):
        raise ThreatModelViolation(problems or ["the attack returned no poison"])
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name == "diagnostics":
            continue
        value = fields.get(f.name)
        if f.name == "target_class":
            if type(value) is torch.Tensor:
                value = value.detach().clone().contiguous()
            elif not isinstance(value, int) or isinstance(value, bool):
                problems.append(f"target_class: expected an integer or a tensor of one per target, got {type(value).__name__}")
            values[f.name] = value
        elif value is None or type(value) is torch.Tensor:
            values[f.name] = None if value is None else value.detach().clone().contiguous()
        else:
            problems.append(f"{f.name}: expected a tensor, got {type(value).__name__}")
    if problems:
        raise ThreatModelViolation(problems)
    raw = answer.get("diagnostics") if isinstance(answer.get("diagnostics"), dict) else {}
    diagnostics = {str(k): float(v) for k, v in raw.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    return cls(**values, diagnostics=diagnostics)


INPUT_SPACES = ("input", "input-unclipped")
"""Downstream attack spaces whose poisons are images: ``input`` (valid images, in [0, 1]) and
``input-unclipped`` (an attack whose poisons are NOT valid images: pixel values may leave [0, 1]; every other
image check applies, the ε ball under an input constraint included)."""
SPACES = (*INPUT_SPACES, "feature")


def check_images(problems: list[str], images: object, shape: tuple[int, ...], what: str, *,
                  pixel_range: bool = True) -> bool:
    if not isinstance(images, torch.Tensor):
        problems.append(f"{what}: expected a tensor, got {type(images).__name__}")
        return False
    ok = True
    if images.dtype != torch.float32:
        problems.append(f"{what}: dtype {images.dtype}, expected torch.float32")
        ok = False
    if tuple(images.shape[1:]) != tuple(shape):
        problems.append(f"{what}: shape {tuple(images.shape)}, expected (n, {', '.join(map(str, shape))})")
        return False
    if images.numel() and not torch.isfinite(images).all():
        problems.append(f"{what}: contains NaN or infinite values")
        return False
    if pixel_range and images.numel() and (images.min() < 0 or images.max() > 1):
        problems.append(f"{what}: pixel values in [{images.min():.4g}, {images.max():.4g}], outside [0, 1]")
        ok = False
    return ok


def check_labels(problems: list[str], labels: object, n: int | None, num_classes: int) -> None:
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.dim() != 1:
        problems.append("labels: expected a 1-D int64 tensor")
        return
    if n is not None and len(labels) != n:
        problems.append(f"labels: {len(labels)} labels for {n} points")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        problems.append(f"labels: values in [{int(labels.min())}, {int(labels.max())}], outside [0, {num_classes - 1}]")


def check_ball(problems: list[str], images: torch.Tensor, base: torch.Tensor, epsilon: float, what: str) -> None:
    if len(images) == 0:
        return
    dist = (images.float() - base.float()).abs().amax().item()
    if dist > epsilon + TOLERANCE:
        problems.append(f"{what}: ℓ∞ distance {dist:.5f} to the base images exceeds ε = {epsilon:.5f}")


def validate_kept(kept: object, n: int, who: str) -> torch.Tensor:
    """A sanitising defense's kept indices into a set of ``n`` points, checked (a 1-D integer tensor of
    distinct indices in [0, n), at least one) and returned sorted as int64; a ``ValueError`` naming every
    problem otherwise."""
    if type(kept) is not torch.Tensor:
        raise ValueError(f"{who}.keep_indices must return a torch.Tensor of indices, got {type(kept).__name__}")
    problems = []
    if kept.dim() != 1:
        problems.append(f"shape {tuple(kept.shape)} is not 1-D")
    if kept.dtype.is_floating_point or kept.dtype.is_complex or kept.dtype == torch.bool:
        problems.append(f"dtype {kept.dtype} is not an integer type")
    if not problems:
        kept = kept.detach().cpu().to(torch.int64)
        if len(kept) == 0:
            problems.append("it keeps no point")
        elif int(kept.min()) < 0 or int(kept.max()) >= n:
            problems.append(f"indices outside [0, {n - 1}]")
        elif len(kept.unique()) != len(kept):
            problems.append("indices repeat")
    if problems:
        raise ValueError(f"{who}.keep_indices returned an unusable selection of {n} points: " + "; ".join(problems))
    return kept.sort().values.contiguous()


def removed_shares(kept: torch.Tensor, n: int, poison_indices: torch.Tensor | None) -> dict[str, float]:
    """The share of clean points and (when ``poison_indices`` is given) of poisons that a sanitiser removed
    from a set of ``n`` points, of which ``poison_indices`` are the poisons."""
    is_kept = torch.zeros(n, dtype=torch.bool)
    is_kept[kept] = True
    is_poison = torch.zeros(n, dtype=torch.bool)
    if poison_indices is not None:
        is_poison[poison_indices.to(torch.int64)] = True
    clean = ~is_poison
    out = {"removed_clean_share": float((~is_kept & clean).sum()) / max(1, int(clean.sum()))}
    if poison_indices is not None and int(is_poison.sum()):
        out["removed_poison_share"] = float((~is_kept & is_poison).sum()) / int(is_poison.sum())
    return out
