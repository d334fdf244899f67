"""The targeted track's side of the plugin API (re-exported by :mod:`benchmark.api`): what a targeted attack
returns and the base its attacks subclass (the context is the pre-training tracks' shared one, with the target
pool)."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from benchmark.plugin_base import CheckpointStore, ConfigT, TrackAttack
from benchmark.tracks._pretrain_interface import PretrainAttackContext, pretrain_context
from benchmark.tracks.pretrain_targeted.info import INFO


@dataclass(frozen=True)
class TargetedPoison:
    """Extra unlabeled images injected into pre-training, with the attacker's goal: every image in
    ``target_images`` (each an exact copy of an image of the context's target pool) should be classified as
    ``target_class`` by the downstream classifier. ``images`` are (M, C, H', W') with the dataset's
    channels and each side between the dataset's side and twice it (one shape for the whole set: a
    stitched canvas; the victim crops each view from the whole image and resizes it).

    ``target_class`` is one class for every target (the paper's setting) or a 1-D integer tensor with one
    class per row of ``target_images`` (several target classes attacked at once: rates then average over
    classes, see :func:`target_classes_of`)."""

    images: torch.Tensor
    target_images: torch.Tensor
    target_class: int | torch.Tensor
    diagnostics: dict[str, float] = field(default_factory=dict)


def target_classes_of(poison: TargetedPoison) -> torch.Tensor:
    """The target class of each target input of ``poison`` as an int64 tensor (one row per target)."""
    if isinstance(poison.target_class, torch.Tensor):
        return poison.target_class.detach().to("cpu", torch.int64).reshape(-1).clone()
    return torch.full((len(poison.target_images),), int(poison.target_class), dtype=torch.int64)


class PretrainTargetedAttack(TrackAttack[ConfigT]):
    """Injects extra unlabeled pre-training images so that chosen targets get a chosen class."""

    track = INFO.name
    craft_method = "craft_targeted"
    poison_type = TargetedPoison

    @abstractmethod
    def craft_targeted(self, ctx: PretrainAttackContext) -> TargetedPoison:
        """Return at most ``ctx.budget`` extra pre-training images and the attack's targets."""

    @classmethod
    def context_from(cls, plain: Mapping[str, Any], *, generator: torch.Generator, device: torch.device,
                     cached: Any, checkpoints: CheckpointStore) -> tuple[PretrainAttackContext, list[torch.Tensor]]:
        return pretrain_context(plain, generator=generator, device=device, cached=cached, checkpoints=checkpoints)
