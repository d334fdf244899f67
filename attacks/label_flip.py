"""Label flip: the classic indiscriminate-poisoning baseline (see e.g. Biggio, Nelson, Laskov, "Poisoning
Attacks against Support Vector Machines", ICML 2012, and the baselines of Lu et al., "Indiscriminate Data
Poisoning Attacks on Pre-trained Feature Extractors", SaTML 2024).

Threat model (downstream): the attacker adds ``budget`` labelled points to the clean training set, using neither
the extractor nor any optimisation. It copies ``budget`` clean training points chosen uniformly at random and gives
each a label drawn uniformly from the *other* classes. The images are exact copies, so the attack satisfies any
input constraint.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from attacks._common import initial_poisons
from benchmark.api import DownstreamAttack, DownstreamAttackContext, DownstreamPoison, MethodConfig, register_attack


@dataclass(frozen=True, kw_only=True)
class LabelFlipConfig(MethodConfig):
    pass


@register_attack
class LabelFlip(DownstreamAttack[LabelFlipConfig]):
    id = "label_flip"
    cost: ClassVar[Mapping[str, Any]] = {"downstream": {}}  # relabelled copies: no counted work
    Config = LabelFlipConfig
    paper_url = "https://arxiv.org/abs/1206.6389"
    citation = "Biggio et al., Poisoning Attacks against Support Vector Machines, ICML 2012 (baseline)"

    def craft_downstream(self, ctx: DownstreamAttackContext) -> DownstreamPoison:
        base, labels = initial_poisons(ctx.train_labels, ctx.budget, ctx.num_classes, ctx.generator,
                                       poison_labels="flipped")
        return DownstreamPoison(images=ctx.train_images[base].clone(), labels=labels, base_indices=base)
