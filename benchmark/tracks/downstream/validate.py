"""The downstream threat model, checked on what an attack returns (:mod:`benchmark.validation`'s checks)."""

from __future__ import annotations

import torch

from benchmark.tracks.downstream.interface import DownstreamPoison
from benchmark.validation import INPUT_SPACES, SPACES, ThreatModelViolation, check_ball, check_images, check_labels


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
    check_labels(problems, poison.labels, None, num_classes)
    if n is not None and n > budget:
        problems.append(f"count: {n} poisoned points exceed the budget of {budget}")
    if space not in SPACES:
        raise ThreatModelViolation([f"space: unknown attack space {space!r} (one of {', '.join(SPACES)})"])
    if space in INPUT_SPACES:
        if poison.features is not None or poison.images is None:
            problems.append("an input-space attack must return images (and no features)")
        elif check_images(problems, poison.images, image_shape, "images",
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
    check_ball(problems, poison.images.cpu(), train_images[idx.cpu()], epsilon, "input constraint")
