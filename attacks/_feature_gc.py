"""Gradient canceling in feature space (stage 2 of the feature-targeted attacks).

Lu, Kamath, Yu, "Exploring the Limits of Model-Targeted Indiscriminate Data Poisoning Attacks", ICML 2023;
applied to the features of a frozen extractor as in Lu, Yang, Kamath, Yu, "Indiscriminate Data Poisoning
Attacks on Pre-trained Feature Extractors", SaTML 2024.

Treat the clean features as the dataset; optimise ``budget`` poisoned feature vectors ζ (initialised at
the features of randomly chosen clean training points, labels fixed to theirs) by Adam so that the target
head θ̂ is a stationary point of the victim's objective on D_c ∪ D_p:
min_ζ ‖∇_θ [mean CE over N + n_p points + l2/2·‖W‖²](θ̂)‖².

``zeta_constraint`` (default ``"clean_box"``): after every Adam step ζ is projected onto the clean-feature
box, the per-dimension [min, max] of the clean training features. Our choice, not the paper's: unconstrained
ζ reached norms of 57–372 against clean feature norms of ≈ 8 (REFERENCE §6), which no image maps to, so
the inversion stages (decoder, feature matching) could not work. ``"none"`` is the paper's unconstrained
stage 2 (meaningful for the feature-space upper bound ``ft_feature_space`` only); the diagnostic
``zeta_in_clean_box`` (1 / 0) tells the board which one ran. Diagnostics: ``gc_residual_start`` /
``gc_residual_end`` / ``gc_residual_ratio`` (end / start) and ``zeta_norm_ratio`` = mean ‖ζ_i‖ / mean clean
feature norm.
Private module: not an attack.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from attacks._common import GradientResidual, choose_base
from attacks._gradpc import GradPCConfig, target_for
from benchmark.api import DownstreamAttackContext, check_range
from benchmark.probe import LinearHead

ZETA_CONSTRAINTS = ("clean_box", "none")


def clean_feature_box(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-dimension [min, max] of the clean training features."""
    return features.amin(0), features.amax(0)


def residual_ratio(start: float, end: float) -> float:
    """end / start of a gradient residual (0 when the start is already 0)."""
    return end / start if start > 0 else 0.0


def feature_space_gc(features: torch.Tensor, labels: torch.Tensor, target: LinearHead, l2: float,
                     budget: int, generator: torch.Generator, *, steps: int, lr: float,
                     box: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, float]]:
    """Returns (ζ, poison labels, base indices, diagnostics). With ``box`` ζ stays in the clean-feature box
    (projected after every step)."""
    features = features.detach().float()
    base = choose_base(len(labels), budget, generator)
    idx = base.to(features.device)
    poison_labels = labels.to(features.device)[idx].clone()
    residual = GradientResidual(target, features, labels.to(features.device), len(base), l2)
    low, high = clean_feature_box(features)
    zeta = features[idx].clone().requires_grad_(True)
    start = residual.norm(zeta, poison_labels)
    optimizer = torch.optim.Adam([zeta], lr=lr)
    for _ in range(steps):
        loss = residual.squared(zeta, poison_labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if box:
            with torch.no_grad():
                zeta.copy_(torch.minimum(torch.maximum(zeta, low), high))
    end = residual.norm(zeta, poison_labels)
    zeta = zeta.detach()
    clean_norm = features.norm(dim=1).mean().clamp_min(1e-12)
    diagnostics = {"gc_residual_start": start, "gc_residual_end": end, "gc_residual_ratio": residual_ratio(start, end),
                   "zeta_norm_ratio": (zeta.norm(dim=1).mean() / clean_norm).item() if len(zeta) else 0.0,
                   "zeta_in_clean_box": float(box)}
    return zeta, poison_labels, base, diagnostics


@dataclass(frozen=True, kw_only=True)
class FeatureGCConfig(GradPCConfig):
    """GradPC settings plus the feature-space GC solver (Adam on ζ) and its constraint on ζ."""

    gc_steps: int = 1000
    gc_lr: float = 0.1  # in units of the standardised features
    zeta_constraint: str = "clean_box"  # "clean_box": per-dimension clean [min, max]; "none": the paper's

    def problems(self) -> list[str]:
        problems = super().problems()
        check_range(problems, "gc_steps", self.gc_steps, 0, 1_000_000)
        check_range(problems, "gc_lr", self.gc_lr, 0.0, 100.0, low_open=True)
        if self.zeta_constraint not in ZETA_CONSTRAINTS:
            problems.append(f"zeta_constraint: {self.zeta_constraint!r} must be one of {', '.join(ZETA_CONSTRAINTS)}")
        return problems


def feature_targeted_poison(config: FeatureGCConfig, ctx: DownstreamAttackContext
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, float]]:
    """Stages 1-2: (ζ, labels, base indices, diagnostics)."""
    features = ctx.train_features.to(ctx.device).float()
    labels = ctx.train_labels.to(ctx.device)
    target, diagnostics = target_for(config, features, labels, ctx.num_classes, ctx.head.l2)
    zeta, poison_labels, base, gc_diag = feature_space_gc(features, labels, target, ctx.head.l2, ctx.budget,
                                                          ctx.generator, steps=config.gc_steps, lr=config.gc_lr,
                                                          box=config.zeta_constraint == "clean_box")
    return zeta, poison_labels, base, {**diagnostics, **gc_diag}
