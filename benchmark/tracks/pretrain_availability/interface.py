"""The availability track's side of the plugin API (re-exported by :mod:`benchmark.api`): what an availability
attack returns and the base its attacks subclass (the context is the pre-training tracks' shared one)."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from benchmark.plugin_base import CheckpointStore, ConfigT, TrackAttack
from benchmark.tracks._pretrain_interface import PretrainAttackContext, pretrain_context
from benchmark.tracks.pretrain_availability.info import INFO


@dataclass(frozen=True)
class AvailabilityPoison:
    """Perturbed pre-training images: ``images[i]`` replaces the clean image ``indices[i]``."""

    images: torch.Tensor
    indices: torch.Tensor
    diagnostics: dict[str, float] = field(default_factory=dict)


class PretrainAvailabilityAttack(TrackAttack[ConfigT]):
    """Perturbs unlabeled pre-training images within an ℓ∞ ball."""

    track = INFO.name
    craft_method = "craft_availability"
    poison_type = AvailabilityPoison

    @abstractmethod
    def craft_availability(self, ctx: PretrainAttackContext) -> AvailabilityPoison:
        """Return perturbed copies of at most ``ctx.budget`` pre-training images within ``ctx.epsilon``."""

    @classmethod
    def context_from(cls, plain: Mapping[str, Any], *, generator: torch.Generator, device: torch.device,
                     cached: Any, checkpoints: CheckpointStore) -> tuple[PretrainAttackContext, list[torch.Tensor]]:
        return pretrain_context(plain, generator=generator, device=device, cached=cached, checkpoints=checkpoints)
