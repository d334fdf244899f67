"""Gradient canceling in feature space (stage 2 of the feature-targeted attacks).

Lu, Kamath, Yu, "Exploring the Limits of Model-Targeted Indiscriminate Data Poisoning Attacks", ICML 2023;
applied to the features of a frozen extractor as in Lu, Yang, Kamath, Yu, "Indiscriminate Data Poisoning
Attacks on Pre-trained Feature Extractors", SaTML 2024.

Treat the clean features as the dataset; optimise ``budget`` poisoned feature vectors ζ (initialised at
the features of randomly chosen clean training points, labels fixed to theirs, unconstrained) by Adam so
that the target head θ̂ is a stationary point of the victim's objective on D_c ∪ D_p:
min_ζ ‖∇_θ [mean CE over N + n_p points + l2/2·‖W‖²](θ̂)‖².
Private module: not an attack.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from attacks._common import GradientResidual, choose_base
from attacks._gradpc import GradPCConfig, target_for
from benchmark.api import DownstreamAttackContext, check_range
from benchmark.probe import LinearHead


def feature_space_gc(features: torch.Tensor, labels: torch.Tensor, target: LinearHead, l2: float,
                     budget: int, generator: torch.Generator, *, steps: int, lr: float
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, float]]:
    """Returns (ζ, poison labels, base indices, diagnostics with gc_residual_start / gc_residual_end)."""
    features = features.detach().float()
    base = choose_base(len(labels), budget, generator)
    idx = base.to(features.device)
    poison_labels = labels.to(features.device)[idx].clone()
    residual = GradientResidual(target, features, labels.to(features.device), len(base), l2)
    zeta = features[idx].clone().requires_grad_(True)
    start = residual.norm(zeta, poison_labels)
    optimizer = torch.optim.Adam([zeta], lr=lr)
    for _ in range(steps):
        loss = residual.squared(zeta, poison_labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    end = residual.norm(zeta, poison_labels)
    return zeta.detach(), poison_labels, base, {"gc_residual_start": start, "gc_residual_end": end}


@dataclass(frozen=True, kw_only=True)
class FeatureGCConfig(GradPCConfig):
    """GradPC settings plus the feature-space GC solver (Adam on ζ)."""

    gc_steps: int = 1000
    gc_lr: float = 0.1  # in units of the standardised features

    def problems(self) -> list[str]:
        problems = super().problems()
        check_range(problems, "gc_steps", self.gc_steps, 0, 1_000_000)
        check_range(problems, "gc_lr", self.gc_lr, 0.0, 100.0, low_open=True)
        return problems


def feature_targeted_poison(config: FeatureGCConfig, ctx: DownstreamAttackContext
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, float]]:
    """Stages 1-2: (ζ, labels, base indices, diagnostics)."""
    features = ctx.train_features.to(ctx.device).float()
    labels = ctx.train_labels.to(ctx.device)
    target, diagnostics = target_for(config, features, labels, ctx.num_classes, ctx.head.l2)
    zeta, poison_labels, base, gc_diag = feature_space_gc(features, labels, target, ctx.head.l2, ctx.budget,
                                                          ctx.generator, steps=config.gc_steps, lr=config.gc_lr)
    return zeta, poison_labels, base, {**diagnostics, **gc_diag}
