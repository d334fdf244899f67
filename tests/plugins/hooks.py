"""Test defenses of every stage that record each call as a marker file (they run in plugin processes, so
a counter in the test process would never move): ``calls(name)`` counts them."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmark.api import Defense, DefenseContext, MethodConfig, register_defense
from benchmark.pretrain import SSLTrainingHooks

MARKERS_ENV = "POISONBENCH_TEST_CALLS"


def record(name: str) -> None:
    folder = Path(os.environ[MARKERS_ENV])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}-{uuid.uuid4().hex}").touch()


def calls(name: str) -> int:
    folder = Path(os.environ[MARKERS_ENV])
    return len(list(folder.glob(f"{name}-*"))) if folder.exists() else 0


def reset() -> None:
    folder = Path(os.environ[MARKERS_ENV])
    for marker in folder.glob("*-*") if folder.exists() else []:
        marker.unlink()


@dataclass(frozen=True, kw_only=True)
class NoConfig(MethodConfig):
    pass


@register_defense
class DataDefense(Defense):
    id = "_test_data"
    stage = "data"
    tracks = ("pretrain-availability", "pretrain-targeted")
    Config = NoConfig

    def transform_images(self, images: torch.Tensor, ctx: DefenseContext) -> torch.Tensor:
        record("transform")
        return (images * 0.9 + 0.05).clamp(0, 1)


@register_defense
class TrainingDefense(Defense):
    id = "_test_training"
    stage = "training"
    tracks = ("pretrain-availability", "pretrain-targeted")
    Config = NoConfig

    def ssl_hooks(self, ssl: Any, ctx: DefenseContext) -> SSLTrainingHooks:
        def loss_fn(model: Any, x: torch.Tensor, v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
            record("loss")
            return model.loss(v1, v2)

        return SSLTrainingHooks(loss_fn=loss_fn)


@register_defense
class PosthocDefense(Defense):
    id = "_test_posthoc"
    stage = "posthoc"
    tracks = ("pretrain-availability", "pretrain-targeted")
    Config = NoConfig

    def repair_encoder(self, extractor: Any, images: torch.Tensor, labels: torch.Tensor, ctx: DefenseContext) -> Any:
        record("repair")
        assert len(images) == len(labels)
        return extractor


@register_defense
class KeepAll(Defense):
    """A sanitiser that keeps every point: its victim must be the undefended one, exactly."""

    id = "_test_keep_all"
    stage = "sanitise"
    tracks = ("downstream", "pretrain-availability", "pretrain-targeted")
    Config = NoConfig

    def keep_indices(self, extractor: Any, images: torch.Tensor, labels: torch.Tensor | None,
                     ctx: DefenseContext) -> torch.Tensor:
        record("keep")
        return torch.arange(len(images))


@register_defense
class KeepEven(Defense):
    """A sanitiser that keeps the points of even index (known shares of whatever it is given)."""

    id = "_test_keep_even"
    stage = "sanitise"
    tracks = ("downstream", "pretrain-availability")
    Config = NoConfig

    def keep_indices(self, extractor: Any, images: torch.Tensor, labels: torch.Tensor | None,
                     ctx: DefenseContext) -> torch.Tensor:
        return torch.arange(0, len(images), 2)


@register_defense
class KeepTwice(Defense):
    """A sanitiser whose selection repeats an index: the cell must fail, naming the problem."""

    id = "_test_keep_twice"
    stage = "sanitise"
    tracks = ("downstream",)
    Config = NoConfig

    def keep_indices(self, extractor: Any, images: torch.Tensor, labels: torch.Tensor | None,
                     ctx: DefenseContext) -> torch.Tensor:
        return torch.tensor([0, 1, 1])
