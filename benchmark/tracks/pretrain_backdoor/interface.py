"""The backdoor track's side of the plugin API (its names are found through :mod:`benchmark.api`): what a backdoor
attack sees and returns, and the base its attacks subclass."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from benchmark.plugin_base import CheckpointStore, ConfigT, TrackAttack
from benchmark.tracks._pretrain_interface import PretrainAttackContext, pretrain_context
from benchmark.tracks.pretrain_backdoor.info import INFO
from benchmark.tracks.pretrain_backdoor.triggers import add_frequency, paste_patch, random_locations

# what the API offers a backdoor attack (found through benchmark.api): the trigger functions are the harness's own
__all__ = ["BackdoorAttack", "BackdoorAttackContext", "BackdoorPoison", "add_frequency", "paste_patch", "random_locations"]


@dataclass(frozen=True)
class BackdoorAttackContext(PretrainAttackContext):
    """The pre-training tracks' context (the clean unlabeled pre-training images, their labels to find the target
    class's images, the budget, the victim's SSL recipe) and the class the backdoor must lead to, which the track
    draws per cell (every attack of a cell aims at the same class)."""

    target_class: int = 0


@dataclass(frozen=True)
class BackdoorPoison:
    """At most ``budget`` poisoned pre-training images and the trigger they carry, as plain tensors: the harness,
    not the attack, applies the trigger to the test images (``benchmark/tracks/pretrain_backdoor/triggers.py``), and
    the validator checks that it is the trigger the poisons carry.

    ``images`` (M, C, H, W) in [0, 1] replace the pre-training images ``indices`` (M distinct indices), or are
    injected as extra images (``indices`` None). One trigger kind:

    * a **patch** (``patch``: (C, h, w) in [0, 1]) pasted in each poison with its top-left corner at
      ``patch_locations`` (M, 2: row, col), opaque or blended at ``patch_opacity`` (one number in (0, 1]:
      ``(1 − a) · image + a · patch``); at test time the harness pastes it the same way at seeded random locations,
      anywhere or with the corner in ``patch_test_region`` ((2,): low, high fractions of the side);
    * a **frequency** trigger (``frequency``: (K, 3) rows (u, v, magnitude)): each poison is its base image with
      ``magnitude`` (in 0–255 pixel units) added to the orthonormal DCT-II coefficient (u, v) of every
      ``frequency_window``-sided tile of its chroma channels (the intensity of a grey image); at test time the
      harness adds ``frequency_test_scale`` × the magnitudes."""

    images: torch.Tensor
    indices: torch.Tensor | None
    target_class: int
    patch: torch.Tensor | None = None
    patch_locations: torch.Tensor | None = None
    patch_opacity: torch.Tensor | None = None
    patch_test_region: torch.Tensor | None = None
    frequency: torch.Tensor | None = None
    frequency_window: torch.Tensor | None = None
    frequency_test_scale: torch.Tensor | None = None
    diagnostics: dict[str, float] = field(default_factory=dict)


class BackdoorAttack(TrackAttack[ConfigT]):
    """Poisons unlabeled pre-training images so that a trigger leads to the target class downstream."""

    track = INFO.name
    craft_method = "craft_backdoor"
    poison_type = BackdoorPoison

    @abstractmethod
    def craft_backdoor(self, ctx: BackdoorAttackContext) -> BackdoorPoison:
        """Return at most ``ctx.budget`` poisoned images and their trigger, aimed at ``ctx.target_class``."""

    @classmethod
    def context_from(cls, plain: Mapping[str, Any], *, generator: torch.Generator, device: torch.device,
                     cached: Any, checkpoints: CheckpointStore) -> tuple[BackdoorAttackContext, list[torch.Tensor]]:
        base, protected = pretrain_context(plain, generator=generator, device=device, cached=cached,
                                           checkpoints=checkpoints)
        fields = {f: getattr(base, f) for f in base.__dataclass_fields__}
        return BackdoorAttackContext(**fields, target_class=int(plain["target_class"])), protected
