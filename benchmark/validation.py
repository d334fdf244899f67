"""The harness's threat-model checks: what an attack returns is validated before use.

Every check reports a readable problem; a cell whose attack broke its threat model is marked
``invalid`` with these messages and never reaches the leaderboard as a number.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Any, TypeVar

import torch

from benchmark.api import AvailabilityPoison, DownstreamPoison, TargetedPoison

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


def _check_images(problems: list[str], images: object, shape: tuple[int, ...], what: str, *,
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


def _check_labels(problems: list[str], labels: object, n: int | None, num_classes: int) -> None:
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.dim() != 1:
        problems.append("labels: expected a 1-D int64 tensor")
        return
    if n is not None and len(labels) != n:
        problems.append(f"labels: {len(labels)} labels for {n} points")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        problems.append(f"labels: values in [{int(labels.min())}, {int(labels.max())}], outside [0, {num_classes - 1}]")


def _check_ball(problems: list[str], images: torch.Tensor, base: torch.Tensor, epsilon: float, what: str) -> None:
    if len(images) == 0:
        return
    dist = (images.float() - base.float()).abs().amax().item()
    if dist > epsilon + TOLERANCE:
        problems.append(f"{what}: ℓ∞ distance {dist:.5f} to the base images exceeds ε = {epsilon:.5f}")


def validate_downstream(poison: object, *, space: str, budget: int, image_shape: tuple[int, int, int],
                        feature_dim: int, num_classes: int, train_images: torch.Tensor,
                        input_epsilon: float | None) -> None:
    """Raise :class:`ThreatModelViolation` unless ``poison`` obeys the downstream threat model of ``space``
    (:data:`SPACES`): images in [0, 1] for ``input``, images of any finite value for ``input-unclipped``,
    features for ``feature``."""
    problems: list[str] = []
    if not isinstance(poison, DownstreamPoison):
        raise ThreatModelViolation([f"expected a DownstreamPoison, got {type(poison).__name__}"])
    n = len(poison.labels) if isinstance(poison.labels, torch.Tensor) else None
    _check_labels(problems, poison.labels, None, num_classes)
    if n is not None and n > budget:
        problems.append(f"count: {n} poisoned points exceed the budget of {budget}")
    if space not in SPACES:
        raise ThreatModelViolation([f"space: unknown attack space {space!r} (one of {', '.join(SPACES)})"])
    if space in INPUT_SPACES:
        if poison.features is not None or poison.images is None:
            problems.append("an input-space attack must return images (and no features)")
        elif _check_images(problems, poison.images, image_shape, "images",
                           pixel_range=space == "input") and n is not None:
            if len(poison.images) != n:
                problems.append(f"images: {len(poison.images)} images for {n} labels")
            elif input_epsilon is not None:
                _check_base(problems, poison, train_images, input_epsilon)
    else:
        feats = poison.features
        if poison.images is not None or not isinstance(feats, torch.Tensor):
            problems.append("a feature-space attack must return features (and no images)")
        elif feats.dim() != 2 or feats.shape[1] != feature_dim or (n is not None and len(feats) != n):
            problems.append(f"features: shape {tuple(feats.shape)}, expected ({n}, {feature_dim})")
        elif not torch.isfinite(feats).all():
            problems.append("features: contain NaN or infinite values")
    if problems:
        raise ThreatModelViolation(problems)


def _check_base(problems: list[str], poison: DownstreamPoison, train_images: torch.Tensor, epsilon: float) -> None:
    idx = poison.base_indices
    if not isinstance(idx, torch.Tensor) or idx.dtype != torch.int64 or len(idx) != len(poison.labels):
        problems.append("base_indices: an int64 index per poison is required under an input constraint")
        return
    if len(idx) and (idx.min() < 0 or idx.max() >= len(train_images)):
        problems.append("base_indices: out of range of the training set")
        return
    _check_ball(problems, poison.images.cpu(), train_images[idx.cpu()], epsilon, "input constraint")


def validate_availability(poison: object, *, budget: int, images: torch.Tensor, epsilon: float) -> None:
    problems: list[str] = []
    if not isinstance(poison, AvailabilityPoison):
        raise ThreatModelViolation([f"expected an AvailabilityPoison, got {type(poison).__name__}"])
    idx = poison.indices
    if not isinstance(idx, torch.Tensor) or idx.dtype != torch.int64 or idx.dim() != 1:
        raise ThreatModelViolation(["indices: expected a 1-D int64 tensor"])
    if len(idx) > budget:
        problems.append(f"count: {len(idx)} perturbed images exceed the budget of {budget}")
    if len(torch.unique(idx)) != len(idx):
        problems.append("indices: an image is perturbed more than once")
    if len(idx) and (idx.min() < 0 or idx.max() >= len(images)):
        problems.append("indices: out of range of the pre-training set")
    elif _check_images(problems, poison.images, tuple(images.shape[1:]), "images"):
        if len(poison.images) != len(idx):
            problems.append(f"images: {len(poison.images)} images for {len(idx)} indices")
        else:
            _check_ball(problems, poison.images.cpu(), images[idx.cpu()], epsilon, "perturbation")
    if problems:
        raise ThreatModelViolation(problems)


def _check_canvas(problems: list[str], images: object, shape: tuple[int, int, int], what: str) -> bool:
    """Injected images of one shape (M, C, H', W'): the dataset's channels, each side between the
    dataset's side and twice it (a stitched canvas), float32, finite, in [0, 1]."""
    if not isinstance(images, torch.Tensor):
        problems.append(f"{what}: expected a tensor, got {type(images).__name__}")
        return False
    c, h, w = shape
    if images.dim() != 4 or images.shape[1] != c or not (h <= images.shape[2] <= 2 * h and w <= images.shape[3] <= 2 * w):
        problems.append(f"{what}: shape {tuple(images.shape)}, expected (n, {c}, h', w') with {h} ≤ h' ≤ {2 * h} "
                        f"and {w} ≤ w' ≤ {2 * w}")
        return False
    return _check_images(problems, images, tuple(images.shape[1:]), what)


def validate_targeted(poison: object, *, budget: int, image_shape: tuple[int, int, int], num_classes: int,
                      target_pool: torch.Tensor | None = None) -> None:
    """Raise :class:`ThreatModelViolation` unless ``poison`` obeys the targeted pre-training threat model:
    at most ``budget`` injected images (canvases of one shape, see :func:`_check_canvas`), target images of
    the dataset's shape that are each an exact copy of an image of ``target_pool`` (when the track hands
    the attacker one), and a target class in range."""
    problems: list[str] = []
    if not isinstance(poison, TargetedPoison):
        raise ThreatModelViolation([f"expected a TargetedPoison, got {type(poison).__name__}"])
    if _check_canvas(problems, poison.images, image_shape, "images") and len(poison.images) > budget:
        problems.append(f"count: {len(poison.images)} injected images exceed the budget of {budget}")
    targets_ok = _check_images(problems, poison.target_images, image_shape, "target_images")
    if targets_ok and target_pool is not None:
        missing = pool_indices(poison.target_images, target_pool).lt(0).nonzero().flatten().tolist()
        if missing:
            problems.append(f"target_images: {len(missing)} of {len(poison.target_images)} targets (first: #{missing[0]}) "
                            "are not images of the target pool the track handed over")
    _check_target_classes(problems, poison, num_classes)
    if problems:
        raise ThreatModelViolation(problems)


def _check_target_classes(problems: list[str], poison: TargetedPoison, num_classes: int) -> None:
    """One class in range, or an integer tensor of one class in range per target input."""
    classes = poison.target_class
    if isinstance(classes, torch.Tensor):
        if classes.dtype.is_floating_point or classes.dtype.is_complex or classes.dtype == torch.bool:
            problems.append(f"target_class: expected an integer tensor, got {classes.dtype}")
            return
        if classes.dim() != 1 or len(classes) != len(poison.target_images):
            problems.append(f"target_class: a tensor of one class per target input, shape ({len(poison.target_images)},); "
                            f"got {tuple(classes.shape)}")
            return
        if len(classes) and not (0 <= int(classes.min()) and int(classes.max()) < num_classes):
            problems.append(f"target_class: classes {sorted(set(classes.tolist()))} outside [0, {num_classes - 1}]")
    elif not 0 <= int(classes) < num_classes:
        problems.append(f"target_class: {classes} outside [0, {num_classes - 1}]")


def pool_indices(images: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
    """For each image, the index of an exactly equal image of ``pool`` (same shape and bytes), or −1."""
    def rows(t: torch.Tensor) -> list[bytes]:
        flat = t.detach().cpu().float().contiguous().reshape(len(t), -1)
        return [r.numpy().tobytes() for r in flat]

    if tuple(images.shape[1:]) != tuple(pool.shape[1:]):
        return torch.full((len(images),), -1, dtype=torch.int64)
    index = {r: i for i, r in reversed(list(enumerate(rows(pool))))}
    return torch.tensor([index.get(r, -1) for r in rows(images)], dtype=torch.int64)


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
