"""Feature-targeted attack, feature-space upper bound: Lu, Yang, Kamath, Yu, "Indiscriminate Data Poisoning
Attacks on Pre-trained Feature Extractors", SaTML 2024 (stages 1-2 of the FT attack).

Stage 1: GradPC target head θ̂ (:mod:`attacks._gradpc`). Stage 2: gradient canceling on the *features*
(:mod:`attacks._feature_gc`): poisoned feature vectors ζ, unconstrained, labels fixed. The poisons are
returned as features, not images: this row is the feature-space UPPER BOUND of the FT attacks (no image
maps to ζ necessarily), NOT an input-space attack, and is reported as such (``space = "feature"``).
"""

from __future__ import annotations

from attacks._feature_gc import FeatureGCConfig, feature_targeted_poison
from benchmark.api import DownstreamAttack, DownstreamAttackContext, DownstreamPoison, register_attack


@register_attack
class FTFeatureSpace(DownstreamAttack):
    id = "ft_feature_space"
    space = "feature"
    Config = FeatureGCConfig
    citation = ("Lu, Yang, Kamath, Yu, Indiscriminate Data Poisoning Attacks on Pre-trained Feature Extractors, "
                "SaTML 2024 (feature-space upper bound)")

    def craft_downstream(self, ctx: DownstreamAttackContext) -> DownstreamPoison:
        zeta, labels, base, diagnostics = feature_targeted_poison(self.config, ctx)
        return DownstreamPoison(features=zeta, labels=labels.long(), base_indices=base, diagnostics=diagnostics)
