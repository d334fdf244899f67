"""Random noise: the uninformed baseline of every poisoning paper (e.g. Huang et al., "Unlearnable
Examples", ICLR 2021; He et al., "Indiscriminate Poisoning Attacks on Unsupervised Contrastive
Learning", ICLR 2023).

Threat model: each track's attacker, using only the clean images (and, downstream, labels); no model, no
optimisation.

* downstream track, unconstrained: ``budget`` uniformly random images with uniformly random labels;
  under an input constraint ε: clean base images plus uniform noise in [−ε, ε] (clipped), labels kept.
* pre-training availability track: uniform ℓ∞ noise of size ε on the poisoned fraction of images.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from benchmark.api import (
    AvailabilityPoison,
    DownstreamAttack,
    DownstreamAttackContext,
    DownstreamPoison,
    MethodConfig,
    PretrainAttackContext,
    PretrainAvailabilityAttack,
    register_attack,
)


@dataclass(frozen=True, kw_only=True)
class RandomNoiseConfig(MethodConfig):
    pass


def uniform_like(x: torch.Tensor, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(x.shape, generator=generator, dtype=x.dtype) * (high - low) + low


@register_attack
class RandomNoise(DownstreamAttack[RandomNoiseConfig], PretrainAvailabilityAttack[RandomNoiseConfig]):
    id = "random_noise"
    cost: ClassVar[Mapping[str, Any]] = {"downstream": {}, "pretrain-availability": {}}  # one draw: no counted work
    recipe_fields = ()  # reads no part of the victim recipe: one poison for every recipe
    Config = RandomNoiseConfig
    paper_url = "https://arxiv.org/abs/2101.04898"
    citation = "Uniform-noise baseline (Huang et al., Unlearnable Examples, ICLR 2021)"

    def craft_downstream(self, ctx: DownstreamAttackContext) -> DownstreamPoison:
        n = len(ctx.train_labels)
        base = torch.randperm(n, generator=ctx.generator)[: ctx.budget]
        clean = ctx.train_images[base]
        if ctx.input_epsilon is None:
            images = torch.rand(clean.shape, generator=ctx.generator)
            labels = torch.randint(0, ctx.num_classes, (len(base),), generator=ctx.generator)
            return DownstreamPoison(images=images, labels=labels)
        eps = ctx.input_epsilon
        images = (clean + uniform_like(clean, -eps, eps, ctx.generator)).clamp(0, 1)
        return DownstreamPoison(images=images, labels=ctx.train_labels[base].clone(), base_indices=base)


    def craft_availability(self, ctx: PretrainAttackContext) -> AvailabilityPoison:
        indices = torch.randperm(len(ctx.images), generator=ctx.generator)[: ctx.budget].sort().values
        clean = ctx.images[indices]
        noise = uniform_like(clean, -ctx.epsilon, ctx.epsilon, ctx.generator)
        return AvailabilityPoison(images=(clean + noise).clamp(0, 1), indices=indices)
