"""Gradient canceling (GC) in input space: Lu, Kamath, Yu, "Exploring the Limits of Model-Targeted
Indiscriminate Data Poisoning Attacks", ICML 2023; on a frozen feature extractor as in Lu, Yang, Kamath, Yu,
"Indiscriminate Data Poisoning Attacks on Pre-trained Feature Extractors", SaTML 2024.

Threat model (downstream): white-box access to the frozen extractor f and the clean training set; the attacker adds
``budget`` images, each started at a random clean training point (``base_indices`` kept) and labelled as
:mod:`attacks.label_flip` labels it (``poison_labels: clean`` keeps its own label; labels stay fixed). Objective:
make the target head θ̂ (GradPC, :mod:`attacks._gradpc`; ε_w chosen per cell by the attacker's own sweep,
:func:`attacks._feature_gc.attainable_target`) a stationary point of the victim's objective on D_c ∪ D_p:

    min_{x_p} ‖∇_θ [ 1/(N+n_p) Σ_{D_c ∪ D_p} CE(θ̂; f(x), y) + l2/2·‖W‖² ]‖²   (differentiated through f).

Solver: ``steps`` Adam steps decayed from ``lr`` to 0 by a cosine (min(lr, ε/4) under an input constraint ε), each
followed by a clip to [0, 1] (ours; :mod:`attacks.gc_unclipped` omits it, as the authors' code does) and, under ε,
the projection onto the ℓ∞ ball around the base images. ``target_attained``: the residual fell to ``attained_ratio``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from attacks._common import GradientResidual, initial_poisons, loss_and_input_gradient, project_images
from attacks._feature_gc import attainable_target, cosine_adam, poisoned_head_diagnostics, schedule_diagnostics
from attacks._gradpc import GradPCConfig
from benchmark.api import DownstreamAttack, DownstreamAttackContext, DownstreamPoison, check_range, register_attack


@dataclass(frozen=True, kw_only=True)
class GCConfig(GradPCConfig):
    steps: int = 300
    lr: float = 0.05  # Adam step on pixels in [0, 1]; under an input constraint ε: min(lr, ε/4)

    def problems(self) -> list[str]:
        problems = super().problems()
        check_range(problems, "steps", self.steps, 1, 1_000_000)
        check_range(problems, "lr", self.lr, 0.0, 10.0, low_open=True)
        return problems


@register_attack
class GradientCanceling(DownstreamAttack[GCConfig]):
    id = "gc"
    cost: ClassVar[Mapping[str, Any]] = {"downstream": {"passes": "steps * n_poison"}}  # every step one pass over the poison set
    Config = GCConfig
    clip_pixels: ClassVar[bool] = True  # keep the poisons in [0, 1] (valid images)
    paper_url = "https://arxiv.org/abs/2303.03592"
    citation = ("Lu, Kamath, Yu, Exploring the Limits of Model-Targeted Indiscriminate Data Poisoning Attacks, "
                "ICML 2023")

    def craft_downstream(self, ctx: DownstreamAttackContext) -> DownstreamPoison:
        cfg = self.config
        features = ctx.train_features.to(ctx.device).float()
        labels = ctx.train_labels.to(ctx.device)
        target, clean_head, diagnostics = attainable_target(cfg, features, labels, ctx.num_classes, ctx.head.l2,
                                                            ctx.budget, ctx.generator, box=True)
        base, poison_labels = initial_poisons(labels, ctx.budget, ctx.num_classes, ctx.generator,
                                              poison_labels=cfg.poison_labels)
        clean = ctx.train_images[base].to(ctx.device).float()
        residual = GradientResidual(target, features, labels, len(base), ctx.head.l2)
        images, trajectory = self._optimise(ctx, residual, clean, poison_labels)
        diagnostics |= schedule_diagnostics(trajectory, cfg.attained_ratio)
        diagnostics |= poisoned_head_diagnostics(features, labels, ctx.extractor.features(images), poison_labels,
                                                 target, clean_head, ctx.num_classes, ctx.head.l2)
        return DownstreamPoison(images=images.cpu(), labels=poison_labels.long().cpu(), base_indices=base,
                                diagnostics=diagnostics)

    def _optimise(self, ctx: DownstreamAttackContext, residual: GradientResidual, clean: torch.Tensor,
                  labels: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
        """(poison images, residual norm before every step and at the end)."""
        cfg = self.config
        x = clean.clone().requires_grad_(True)
        batch = ctx.extractor.batch_size
        lr = cfg.lr if ctx.input_epsilon is None else min(cfg.lr, ctx.input_epsilon / 4)
        optimizer, schedule = cosine_adam([x], lr, cfg.steps)
        trajectory = []
        for _ in range(cfg.steps):  # the exact full-set gradient, one chunk of images at a time
            squared, x.grad = loss_and_input_gradient(ctx.extractor, x, lambda f: residual.squared(f, labels), batch)
            trajectory.append(max(squared, 0.0) ** 0.5)
            optimizer.step()
            schedule.step()
            with torch.no_grad():
                x.copy_(self._project(x, clean, ctx.input_epsilon))
        x = x.detach()
        trajectory.append(residual.norm(ctx.extractor.features(x), labels))
        return x, trajectory

    def _project(self, x: torch.Tensor, clean: torch.Tensor, epsilon: float | None) -> torch.Tensor:
        """Into the ε ball around the base images (under an input constraint) and, with ``clip_pixels``, [0, 1]."""
        if self.clip_pixels:
            return project_images(x, clean, epsilon)
        return x if epsilon is None else torch.minimum(torch.maximum(x, clean - epsilon), clean + epsilon)
