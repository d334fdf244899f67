"""Plugins that declare their own cost model (``cost``, benchmark/cost_models.py) for the estimate's tests:
an attack, a subclass that inherits its model, one that declares none, and a data-stage defense."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from benchmark.api import (
    Defense,
    DefenseContext,
    DownstreamAttack,
    DownstreamAttackContext,
    DownstreamPoison,
    MethodConfig,
    register_attack,
    register_defense,
)


@dataclass(frozen=True, kw_only=True)
class CostedConfig(MethodConfig):
    steps: int = 7


@register_attack
class CostedAttack(DownstreamAttack):
    """Copies of clean points, relabelled by one; its declared loop: ``steps`` passes over the poisons."""

    id = "_test_costed"
    Config = CostedConfig
    citation = "test fixture"
    cost: ClassVar[Mapping[str, Any]] = {"downstream": {"passes": "steps * n_poison + (1 if steps > 5 else 0)"}}

    def craft_downstream(self, ctx: DownstreamAttackContext) -> DownstreamPoison:
        base = torch.randperm(len(ctx.train_labels), generator=ctx.generator)[: ctx.budget]
        labels = (ctx.train_labels[base] + 1) % ctx.num_classes
        return DownstreamPoison(images=ctx.train_images[base].clone(), labels=labels, base_indices=base)


@register_attack
class InheritedCost(CostedAttack):
    id = "_test_costed_child"


@register_attack
class Uncosted(CostedAttack):
    id = "_test_uncosted"
    cost = None  # declares none: the estimate lists it as not estimated


@dataclass(frozen=True, kw_only=True)
class BlurConfig(MethodConfig):
    rounds: int = 3


@register_defense
class CostedDefense(Defense):
    """A data-stage transform with a declared cost: ``rounds`` SVDs per image."""

    id = "_test_costed_defense"
    stage = "data"
    tracks = ("downstream",)
    Config = BlurConfig
    citation = "test fixture"
    cost: ClassVar[Mapping[str, Any]] = {"downstream": {"data": {"svds": "rounds * n"}}}

    def transform_images(self, images: torch.Tensor, ctx: DefenseContext) -> torch.Tensor:
        return images
