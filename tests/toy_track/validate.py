"""The toy threat model: at most ``budget`` images of the training images' shape in [0, 1], labels in range."""

from __future__ import annotations

import torch

from benchmark.validation import ThreatModelViolation, check_images, check_labels
from tests.toy_track.interface import ToyPoison


def validate_toy(poison: ToyPoison, *, budget: int, shape: tuple[int, ...], num_classes: int) -> None:
    problems: list[str] = []
    if check_images(problems, poison.images, shape, "images") and len(poison.images) > budget:
        problems.append(f"count: {len(poison.images)} images exceed the budget of {budget}")
    check_labels(problems, poison.labels, len(poison.images) if isinstance(poison.images, torch.Tensor) else None,
                 num_classes)
    if problems:
        raise ThreatModelViolation(problems)
