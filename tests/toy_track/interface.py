"""What a toy-track attacker sees and returns, the base its attacks subclass, and how a plugin process builds
the context from the harness's plain data."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from benchmark.api import CheckpointStore, ConfigT, TrackAttack
from tests.toy_track.info import INFO

__all__ = ["ToyAttack", "ToyContext", "ToyPoison"]  # reachable from benchmark.api


@dataclass(frozen=True)
class ToyContext:
    images: torch.Tensor  # the clean training images; must not be mutated
    labels: torch.Tensor
    num_classes: int
    budget: int
    generator: torch.Generator


@dataclass(frozen=True)
class ToyPoison:
    images: torch.Tensor
    labels: torch.Tensor
    diagnostics: dict[str, float] = field(default_factory=dict)


class ToyAttack(TrackAttack[ConfigT]):
    """Adds at most ``budget`` labelled images to the toy victim's training set."""

    track = INFO.name
    craft_method = "craft_toy"
    poison_type = ToyPoison

    @abstractmethod
    def craft_toy(self, ctx: ToyContext) -> ToyPoison: ...

    @classmethod
    def context_from(cls, plain: Mapping[str, Any], *, generator: torch.Generator, device: torch.device,
                     cached: Any, checkpoints: CheckpointStore) -> tuple[ToyContext, list[torch.Tensor]]:
        ctx = ToyContext(plain["images"], plain["labels"], int(plain["num_classes"]), int(plain["budget"]), generator)
        return ctx, [plain["images"], plain["labels"]]
