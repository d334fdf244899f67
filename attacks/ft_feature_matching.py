"""Feature-targeted attack with feature-matching inversion: Lu, Yang, Kamath, Yu, "Indiscriminate Data
Poisoning Attacks on Pre-trained Feature Extractors", SaTML 2024 (stages 1-3).

Threat model as in :mod:`attacks.gc` (downstream: white-box frozen extractor f, the clean training set, ``budget``
poisons). Stages 1-2 (:mod:`attacks._feature_gc`): a GradPC target head, then poisoned features ζ by feature-space
GC, kept in the clean-feature box by default (the unconstrained ζ of ``zeta_constraint: none`` has norms many times
the clean features' and feature matching cannot reach it). Stage 3, feature matching: from each poison's clean base
image x_b, min_x ‖f(x) − ζ‖² + β‖x − x_b‖² (per-image sums) by Adam, clipped to [0, 1] after every step and
projected into the ℓ∞ ball of radius ε around x_b when ``ctx.input_epsilon`` is set.
Published: β ∈ {0.25, 0.1, 0.05} (the paper's figure); default β = 0.1, 300 Adam steps of 0.01.
Diagnostics: ``feature_match_error`` = ‖f(x_p) − ζ‖_F / ‖ζ‖_F (and at the base images,
``feature_match_error_start``), plus GradPC/GC diagnostics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from attacks._common import project_images
from attacks._feature_gc import FeatureGCConfig, feature_targeted_poison
from benchmark.api import DownstreamAttack, DownstreamAttackContext, DownstreamPoison, check_range, register_attack


@dataclass(frozen=True, kw_only=True)
class FTFeatureMatchingConfig(FeatureGCConfig):
    beta: float = 0.1
    match_steps: int = 300
    match_lr: float = 0.01

    def problems(self) -> list[str]:
        problems = super().problems()
        check_range(problems, "beta", self.beta, 0.0, 1e6)
        check_range(problems, "match_steps", self.match_steps, 0, 1_000_000)
        check_range(problems, "match_lr", self.match_lr, 0.0, 10.0, low_open=True)
        return problems


def match_features(extractor: torch.nn.Module, zeta: torch.Tensor, base: torch.Tensor, *, beta: float, steps: int,
                   lr: float, epsilon: float | None, batch: int = 512) -> torch.Tensor:
    """min_x mean_i ‖f(x_i) − ζ_i‖² + β‖x_i − base_i‖² from ``base``, kept in [0, 1] and the ε ball; the
    objective is a mean of per-image terms, so its gradient is computed ``batch`` images at a time (exact)."""
    x = base.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=lr)
    n = len(x)
    for _ in range(steps):
        grad = torch.empty_like(x)
        for i in range(0, n, batch):
            xi = x[i : i + batch].detach().requires_grad_(True)
            with torch.enable_grad():
                terms = (extractor(xi) - zeta[i : i + batch]).pow(2).flatten(1).sum(1)
                terms = terms + beta * (xi - base[i : i + batch]).pow(2).flatten(1).sum(1)
                (grad[i : i + batch],) = torch.autograd.grad(terms.sum() / n, xi)
        x.grad = grad
        optimizer.step()
        with torch.no_grad():
            x.copy_(project_images(x, base, epsilon))
    return x.detach()


@register_attack
class FTFeatureMatching(DownstreamAttack[FTFeatureMatchingConfig]):
    id = "ft_feature_matching"
    cost: ClassVar[Mapping[str, Any]] = {"downstream": {"passes": "match_steps * n_poison"}}  # pixels matched to ζ
    Config = FTFeatureMatchingConfig
    paper_url = "https://arxiv.org/abs/2402.12626"
    citation = ("Lu, Yang, Kamath, Yu, Indiscriminate Data Poisoning Attacks on Pre-trained Feature Extractors, "
                "SaTML 2024 (FT, feature matching)")

    def craft_downstream(self, ctx: DownstreamAttackContext) -> DownstreamPoison:
        cfg = self.config
        zeta, labels, base, diagnostics = feature_targeted_poison(cfg, ctx)
        zeta = zeta.to(ctx.device)
        clean = ctx.train_images[base].to(ctx.device).float()
        images = match_features(ctx.extractor, zeta, clean, beta=cfg.beta, steps=cfg.match_steps, lr=cfg.match_lr,
                                epsilon=ctx.input_epsilon, batch=ctx.extractor.batch_size)
        norm = zeta.norm().clamp_min(1e-12)
        diagnostics["feature_match_error_start"] = ((ctx.extractor.features(clean) - zeta).norm() / norm).item()
        diagnostics["feature_match_error"] = ((ctx.extractor.features(images) - zeta).norm() / norm).item()
        return DownstreamPoison(images=images.cpu(), labels=labels.long().cpu(), base_indices=base,
                                diagnostics=diagnostics)
