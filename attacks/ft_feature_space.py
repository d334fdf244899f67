"""Feature-targeted attack, feature-space upper bound: Lu, Yang, Kamath, Yu, "Indiscriminate Data Poisoning
Attacks on Pre-trained Feature Extractors", SaTML 2024 (stages 1-2 of the FT attack).

Threat model as in :mod:`attacks.gc`, except that the poisons are returned as features, not images: the attacker
writes training features directly. Stage 1: GradPC target head θ̂, ε_w chosen per cell by the attacker's
feature-space GC sweep at the cell's ε_d (:func:`attacks._feature_gc.attainable_target`). Stage 2: gradient
canceling on the *features* (:mod:`attacks._feature_gc`): poisoned feature vectors ζ, labels fixed (by default
flipped as label flipping flips them), kept in the clean-feature box (per-dimension [min, max] of the clean training
features, ``zeta_constraint: clean_box``): the same ζ that ``ft_decoder`` and ``ft_feature_matching`` then try to
reach. The paper's unconstrained stage 2 is ``zeta_constraint: none`` (its cells carry ``zeta_in_clean_box = 0``).
This row (``space = "feature"``) is the feature-space UPPER BOUND of the attacks that aim at the same target (GC,
the FT inversions), NOT an input-space attack. It is not a certified bound on TGDA (which degrades the head without
a target); the board marks a column where it falls below the best input-space attack beyond the seed spread.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from attacks._feature_gc import FeatureGCConfig, feature_targeted_poison
from benchmark.api import DownstreamAttack, DownstreamAttackContext, DownstreamPoison, register_attack


@register_attack
class FTFeatureSpace(DownstreamAttack[FeatureGCConfig]):
    id = "ft_feature_space"
    cost: ClassVar[Mapping[str, Any]] = {"downstream": {}}  # GradPC and GC in feature space: seconds, not counted
    space = "feature"
    Config = FeatureGCConfig
    paper_url = "https://arxiv.org/abs/2402.12626"
    citation = ("Lu, Yang, Kamath, Yu, Indiscriminate Data Poisoning Attacks on Pre-trained Feature Extractors, "
                "SaTML 2024 (feature-space upper bound)")

    def craft_downstream(self, ctx: DownstreamAttackContext) -> DownstreamPoison:
        zeta, labels, base, diagnostics = feature_targeted_poison(self.config, ctx)
        return DownstreamPoison(features=zeta, labels=labels.long(), base_indices=base, diagnostics=diagnostics)
