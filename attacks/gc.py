"""Gradient canceling (GC) in input space: Lu, Kamath, Yu, "Exploring the Limits of Model-Targeted
Indiscriminate Data Poisoning Attacks", ICML 2023; on a frozen feature extractor as in Lu, Yang, Kamath, Yu,
"Indiscriminate Data Poisoning Attacks on Pre-trained Feature Extractors", SaTML 2024.

Given a target head θ̂ (GradPC, :mod:`attacks._gradpc`), choose ``budget`` clean training points at
random (labels fixed to theirs, ``base_indices`` kept) and optimise their *images* x_p by Adam so that θ̂
is a stationary point of the victim's objective on D_c ∪ D_p:

    min_{x_p} ‖∇_θ [ 1/(N+n_p) Σ_{D_c ∪ D_p} CE(θ̂; f(x), y) + l2/2·‖W‖² ]‖²,

differentiating the head gradient w.r.t. the images through the frozen f (second-order autograd,
``create_graph=True``). After every step the images are clipped to [0, 1] and, under an input
constraint ε, projected onto the ℓ∞ ball of radius ε around their base images. The pixel clip is ours
(the poisons must be valid images); the authors' code does not clip, which :mod:`attacks.gc_unclipped`
reproduces (same code, ``clip_pixels = False``). The [0, 1] box limits GC: on the cpu tier it plateaus at
≈ 1000 steps (REFERENCE §6).
Published setting: GC runs until the residual stops decreasing (thousands of steps); default here
300 Adam steps of 0.05 on the pixels (min(0.05, ε/4) under an input constraint). Diagnostics:
``gc_residual_start`` / ``gc_residual_end`` (residual norm at θ̂ with the poisons) and
``gc_residual_ratio`` = end / start (how far the schedule got: near 1 means it barely moved),
``target_train_acc``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from attacks._common import GradientResidual, choose_base, loss_and_input_gradient, project_images
from attacks._feature_gc import residual_ratio
from attacks._gradpc import GradPCConfig, target_for
from benchmark.api import DownstreamAttack, DownstreamAttackContext, DownstreamPoison, check_range, register_attack


@dataclass(frozen=True, kw_only=True)
class GCConfig(GradPCConfig):
    steps: int = 300
    lr: float = 0.05  # Adam step on pixels in [0, 1]; under an input constraint ε: min(lr, ε/4)

    def problems(self) -> list[str]:
        problems = super().problems()
        check_range(problems, "steps", self.steps, 0, 1_000_000)
        check_range(problems, "lr", self.lr, 0.0, 10.0, low_open=True)
        return problems


@register_attack
class GradientCanceling(DownstreamAttack):
    id = "gc"
    Config = GCConfig
    clip_pixels: ClassVar[bool] = True  # keep the poisons in [0, 1] (valid images)
    paper_url = "https://arxiv.org/abs/2303.03592"
    citation = ("Lu, Kamath, Yu, Exploring the Limits of Model-Targeted Indiscriminate Data Poisoning Attacks, "
                "ICML 2023")

    def craft_downstream(self, ctx: DownstreamAttackContext) -> DownstreamPoison:
        cfg: GCConfig = self.config
        features = ctx.train_features.to(ctx.device).float()
        labels = ctx.train_labels.to(ctx.device)
        target, diagnostics = target_for(cfg, features, labels, ctx.num_classes, ctx.head.l2)
        base = choose_base(len(labels), ctx.budget, ctx.generator)
        clean = ctx.train_images[base].to(ctx.device).float()
        poison_labels = labels[base.to(ctx.device)].clone()
        residual = GradientResidual(target, features, labels, len(base), ctx.head.l2)
        images = self._optimise(ctx, residual, clean, poison_labels, diagnostics)
        return DownstreamPoison(images=images.cpu(), labels=poison_labels.long().cpu(), base_indices=base,
                                diagnostics=diagnostics)

    def _optimise(self, ctx: DownstreamAttackContext, residual: GradientResidual, clean: torch.Tensor,
                  labels: torch.Tensor, diagnostics: dict[str, float]) -> torch.Tensor:
        cfg: GCConfig = self.config
        x = clean.clone().requires_grad_(True)
        batch = ctx.extractor.batch_size
        diagnostics["gc_residual_start"] = residual.norm(ctx.extractor.features(x), labels)
        lr = cfg.lr if ctx.input_epsilon is None else min(cfg.lr, ctx.input_epsilon / 4)
        optimizer = torch.optim.Adam([x], lr=lr)
        for _ in range(cfg.steps):  # the exact full-set gradient, one chunk of images at a time
            _, x.grad = loss_and_input_gradient(ctx.extractor, x, lambda f: residual.squared(f, labels), batch)
            optimizer.step()
            with torch.no_grad():
                x.copy_(self._project(x, clean, ctx.input_epsilon))
        x = x.detach()
        diagnostics["gc_residual_end"] = residual.norm(ctx.extractor.features(x), labels)
        diagnostics["gc_residual_ratio"] = residual_ratio(diagnostics["gc_residual_start"],
                                                          diagnostics["gc_residual_end"])
        return x

    def _project(self, x: torch.Tensor, clean: torch.Tensor, epsilon: float | None) -> torch.Tensor:
        """Into the ε ball around the base images (under an input constraint) and, with ``clip_pixels``, [0, 1]."""
        if self.clip_pixels:
            return project_images(x, clean, epsilon)
        return x if epsilon is None else torch.minimum(torch.maximum(x, clean - epsilon), clean + epsilon)
