"""The availability threat model, checked on what an attack returns (:mod:`benchmark.validation`'s checks)."""

from __future__ import annotations

import torch

from benchmark.tracks.pretrain_availability.interface import AvailabilityPoison
from benchmark.validation import ThreatModelViolation, check_ball, check_images


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
    elif check_images(problems, poison.images, tuple(images.shape[1:]), "images"):
        if len(poison.images) != len(idx):
            problems.append(f"images: {len(poison.images)} images for {len(idx)} indices")
        else:
            check_ball(problems, poison.images.cpu(), images[idx.cpu()], epsilon, "perturbation")
    if problems:
        raise ThreatModelViolation(problems)
