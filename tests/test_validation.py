"""The harness enforces the threat model: budget, pixel range, shape, dtype, finiteness, labels, ε ball."""

from __future__ import annotations

import pytest
import torch

from benchmark.api import AvailabilityPoison, DownstreamPoison
from benchmark.tracks.downstream.validate import validate_downstream
from benchmark.tracks.pretrain_availability.validate import validate_availability
from benchmark.validation import ThreatModelViolation, fingerprint

TRAIN = torch.rand(20, 1, 8, 8)


def check(poison: DownstreamPoison, *, budget: int = 5, eps: float | None = None, space: str = "input") -> None:
    validate_downstream(poison, space=space, budget=budget, image_shape=(1, 8, 8), feature_dim=4, num_classes=3,
                        train_images=TRAIN, input_epsilon=eps)


def ok_poison(n: int = 5) -> DownstreamPoison:
    return DownstreamPoison(images=TRAIN[:n].clone(), labels=torch.zeros(n, dtype=torch.long), base_indices=torch.arange(n))


def test_valid_poison_passes() -> None:
    check(ok_poison())
    check(ok_poison(), eps=0.01)


@pytest.mark.parametrize(
    ("poison", "kwargs", "needle"),
    [
        (ok_poison(6), {}, "exceed the budget"),
        (DownstreamPoison(images=TRAIN[:2] * 3, labels=torch.zeros(2, dtype=torch.long)), {}, "outside [0, 1]"),
        (DownstreamPoison(images=TRAIN[:2].double(), labels=torch.zeros(2, dtype=torch.long)), {}, "dtype"),
        (DownstreamPoison(images=TRAIN[:2, :, :4], labels=torch.zeros(2, dtype=torch.long)), {}, "shape"),
        (DownstreamPoison(images=torch.full((2, 1, 8, 8), float("nan")), labels=torch.zeros(2, dtype=torch.long)), {}, "NaN"),
        (DownstreamPoison(images=TRAIN[:2], labels=torch.tensor([0, 3])), {}, "labels"),
        (DownstreamPoison(images=TRAIN[:2], labels=torch.tensor([0.0, 1.0])), {}, "int64"),
        (DownstreamPoison(images=(TRAIN[:2] + 0.1).clamp(0, 1), labels=torch.zeros(2, dtype=torch.long),
                          base_indices=torch.arange(2)), {"eps": 0.05}, "exceeds ε"),
        (DownstreamPoison(images=TRAIN[:2], labels=torch.zeros(2, dtype=torch.long)), {"eps": 0.05}, "base_indices"),
        (DownstreamPoison(features=torch.zeros(2, 4), labels=torch.zeros(2, dtype=torch.long)), {}, "must return images"),
        (DownstreamPoison(images=TRAIN[:2], labels=torch.zeros(2, dtype=torch.long)), {"space": "feature"}, "must return features"),
    ],
)
def test_violations_are_named(poison: DownstreamPoison, kwargs: dict, needle: str) -> None:
    with pytest.raises(ThreatModelViolation) as info:
        check(poison, **kwargs)
    assert needle in str(info.value)


def test_availability_checks_ball_and_budget() -> None:
    images = torch.rand(10, 1, 8, 8)
    good = AvailabilityPoison(images=(images[:4] + 0.01).clamp(0, 1), indices=torch.arange(4))
    validate_availability(good, budget=4, images=images, epsilon=8 / 255)
    with pytest.raises(ThreatModelViolation, match="exceeds"):
        validate_availability(AvailabilityPoison(images=(images[:4] + 0.2).clamp(0, 1), indices=torch.arange(4)),
                              budget=4, images=images, epsilon=8 / 255)
    with pytest.raises(ThreatModelViolation, match="budget"):
        validate_availability(good, budget=3, images=images, epsilon=8 / 255)


def test_fingerprint_sees_mutation() -> None:
    x = torch.rand(4, 3)
    before = fingerprint(x)
    x[0, 0] += 1
    assert fingerprint(x) != before
