"""Gradient canceling in feature space (stage 2 of the feature-targeted attacks), choice of the GradPC target:
Lu, Kamath, Yu, "Exploring the Limits of Model-Targeted Indiscriminate Data Poisoning Attacks", ICML 2023; on the
features of a frozen extractor as in Lu, Yang, Kamath, Yu, "Indiscriminate Data Poisoning Attacks on Pre-trained
Feature Extractors", SaTML 2024 (private module: not an attack).

Threat model as in :mod:`attacks.gc`, but the attacker moves ``budget`` feature vectors ζ (started at the features
of random clean training points labelled as label flipping labels them, ``poison_labels``; labels fixed) instead of
images. Objective, θ̂ the target head: min_ζ ‖∇_θ [mean CE over N + n_p points + l2/2·‖W‖²](θ̂)‖². Solver: Adam
for ``gc_steps`` steps, decayed to 0 by a cosine, no early stop; after every step ζ is projected onto the clean-
feature box (per-dimension clean [min, max]; ``zeta_constraint: none``: the paper's unconstrained stage 2).
Target choice (:func:`attainable_target`): θ̂ is the victim's optimum only if ε_d of poison can cancel the clean
gradient there (*attainable*). On a stratified split of the clean training set (never test data) the attacker runs
GradPC and ``sweep_gc_steps`` of this GC for each ε_w of ``epsilon_w_grid``, fits the victim on the split plus the
poisons and keeps the ε_w with the lowest validation accuracy (``strongest``), or the lowest among those whose
residual fell to ``attained_ratio`` (``strongest_attained``); the cell's own ``target_attained`` is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from attacks._common import GradientResidual, initial_poisons
from attacks._gradpc import GradPCConfig, gradpc_target, target_diagnostics, target_distance_ratio
from benchmark.api import (
    DownstreamAttackContext,
    LinearHead,
    check_range,
    fit,
    fit_linear_head,
    head_accuracy,
    stratified_split,
)

ZETA_CONSTRAINTS = ("clean_box", "none")
Box = tuple[torch.Tensor, torch.Tensor]


def clean_feature_box(features: torch.Tensor) -> Box:
    """The per-dimension [min, max] of the clean training features."""
    return features.amin(0), features.amax(0)


def residual_ratio(start: float, end: float) -> float:
    """end / start of a gradient residual (0 when the start is already 0)."""
    return end / start if start > 0 else 0.0


def schedule_diagnostics(trajectory: list[float], attained_ratio: float) -> dict[str, float]:
    """GC's residual norms, one before every step and one at the end: start, end, ratio, whether the
    target counts as attained, and the share of the fall made in the last quarter of the steps."""
    start, end = trajectory[0], trajectory[-1]
    steps = len(trajectory) - 1
    three_quarters = trajectory[(3 * steps) // 4]
    fall = start - end
    ratio = residual_ratio(start, end)
    return {"gc_residual_start": start, "gc_residual_end": end, "gc_residual_ratio": ratio,
            "gc_last_quarter_share": (three_quarters - end) / fall if fall > 0 else 0.0,
            "target_attained": float(ratio <= attained_ratio)}


def cosine_adam(params: list[torch.Tensor], lr: float, steps: int
                ) -> tuple[torch.optim.Adam, torch.optim.lr_scheduler.CosineAnnealingLR]:
    """Adam whose step decays from ``lr`` to 0 over ``steps`` (cosine)."""
    optimizer = torch.optim.Adam(params, lr=lr)
    return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(steps, 1))


def solve_feature_gc(residual: GradientResidual, zeta: torch.Tensor, labels: torch.Tensor, *, steps: int,
                     lr: float, box: Box | None) -> tuple[torch.Tensor, list[float]]:
    """GC on the poison features from ``zeta``: (ζ, residual norm before every step and at the end)."""
    zeta = zeta.detach().clone().requires_grad_(True)
    optimizer, schedule = cosine_adam([zeta], lr, steps)
    trajectory: list[float] = []

    def squared_residual(_: int) -> torch.Tensor:
        loss = residual.squared(zeta, labels)
        trajectory.append(loss.detach().clamp_min(0).sqrt().item())
        return loss

    def decay_and_project(_: int) -> None:
        schedule.step()
        if box is not None:
            with torch.no_grad():
                zeta.copy_(torch.minimum(torch.maximum(zeta, box[0]), box[1]))

    fit(optimizer, range(steps), squared_residual, after_step=decay_and_project)
    zeta = zeta.detach()
    trajectory.append(residual.norm(zeta, labels))
    return zeta, trajectory


def feature_space_gc(features: torch.Tensor, labels: torch.Tensor, target: LinearHead, l2: float,
                     budget: int, generator: torch.Generator, *, num_classes: int, poison_labels: str,
                     steps: int, lr: float, box: bool = True, attained_ratio: float = 0.2
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, float]]:
    """Returns (ζ, poison labels, base indices, diagnostics). The poisons start at
    :func:`attacks._common.initial_poisons`; with ``box`` ζ stays in the clean-feature box (projected after
    every step)."""
    features = features.detach().float()
    labels = labels.to(features.device)
    base, zeta_labels = initial_poisons(labels, budget, num_classes, generator, poison_labels=poison_labels)
    idx = base.to(features.device)
    residual = GradientResidual(target, features, labels, len(base), l2)
    zeta, trajectory = solve_feature_gc(residual, features[idx], zeta_labels, steps=steps, lr=lr,
                                        box=clean_feature_box(features) if box else None)
    clean_norm = features.norm(dim=1).mean().clamp_min(1e-12)
    diagnostics = {**schedule_diagnostics(trajectory, attained_ratio),
                   "zeta_norm_ratio": (zeta.norm(dim=1).mean() / clean_norm).item() if len(zeta) else 0.0,
                   "zeta_in_clean_box": float(box)}
    return zeta, zeta_labels, base, diagnostics


def attainable_target(config: GradPCConfig, features: torch.Tensor, labels: torch.Tensor, num_classes: int,
                      l2: float, budget: int, generator: torch.Generator, *, box: bool
                      ) -> tuple[LinearHead, LinearHead, dict[str, float]]:
    """(target, clean head, diagnostics): GradPC on the whole clean training set with ε_w fixed by the
    config or chosen by the attacker's sweep (see the module docstring)."""
    features, labels = features.detach().float(), labels.to(features.device)
    clean = fit_linear_head(features, labels, num_classes, l2=l2)
    diagnostics: dict[str, float] = {}
    epsilon_w = config.epsilon_w
    if epsilon_w is None:
        epsilon_w, diagnostics = _sweep(config, features, labels, num_classes, l2, budget, generator, box=box)
    target = gradpc_target(features, labels, clean, epsilon_w=epsilon_w, steps=config.gradpc_steps,
                           lr=config.gradpc_lr)
    return target, clean, {"epsilon_w": epsilon_w, **diagnostics,
                           **target_diagnostics(target, clean, features, labels)}


def _sweep(config: GradPCConfig, features: torch.Tensor, labels: torch.Tensor, num_classes: int, l2: float,
           budget: int, generator: torch.Generator, *, box: bool) -> tuple[float, dict[str, float]]:
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    keep, held = (i.to(features.device) for i in stratified_split(labels, config.sweep_val_fraction, seed=seed))
    fit_f, fit_y, val_f, val_y = features[keep], labels[keep], features[held], labels[held]
    n_poison = max(1, round(budget * len(keep) / len(labels)))  # the cell's poison fraction ε_d
    clean = fit_linear_head(fit_f, fit_y, num_classes, l2=l2)
    scored = []  # (ε_w, poisoned validation accuracy, residual ratio)
    for epsilon_w in config.epsilon_w_grid:
        target = gradpc_target(fit_f, fit_y, clean, epsilon_w=epsilon_w, steps=config.gradpc_steps,
                               lr=config.gradpc_lr)
        zeta, zeta_y, _, gc = feature_space_gc(fit_f, fit_y, target, l2, n_poison, torch.Generator().manual_seed(seed),
                                               num_classes=num_classes, poison_labels=config.poison_labels,
                                               steps=config.sweep_gc_steps, lr=config.sweep_gc_lr, box=box)
        poisoned = fit_linear_head(torch.cat([fit_f, zeta]), torch.cat([fit_y, zeta_y]), num_classes, l2=l2)
        scored.append((epsilon_w, head_accuracy(poisoned, val_f, val_y), gc["gc_residual_ratio"]))
    chosen = _choose(scored, config)
    return chosen[0], {"sweep_val_acc": chosen[1], "sweep_clean_val_acc": head_accuracy(clean, val_f, val_y),
                       "sweep_residual_ratio": chosen[2], "sweep_attained": float(chosen[2] <= config.attained_ratio)}


def _choose(scored: list[tuple[float, float, float]], config: GradPCConfig) -> tuple[float, float, float]:
    """The (ε_w, validation accuracy, residual ratio) the config's ``target_choice`` keeps: the lowest
    accuracy (ties: the smaller ε_w), among the attained candidates for ``strongest_attained`` (none
    attained: the lowest residual ratio)."""
    if config.target_choice == "strongest":
        return min(scored, key=lambda s: (s[1], s[0]))
    attained = [s for s in scored if s[2] <= config.attained_ratio]
    return min(attained, key=lambda s: (s[1], s[0])) if attained else min(scored, key=lambda s: (s[2], s[0]))


def poisoned_head_diagnostics(features: torch.Tensor, labels: torch.Tensor, poison_features: torch.Tensor,
                              poison_labels: torch.Tensor, target: LinearHead, clean: LinearHead, num_classes: int,
                              l2: float) -> dict[str, float]:
    """How close the victim trained on clean ∪ poison (the attacker's copy, on training data) gets to θ̂."""
    poisoned = fit_linear_head(torch.cat([features, poison_features.float()]), torch.cat([labels, poison_labels]),
                               num_classes, l2=l2)
    return {"target_distance_ratio": target_distance_ratio(poisoned, target, clean),
            "poisoned_train_acc": head_accuracy(poisoned, features, labels)}


@dataclass(frozen=True, kw_only=True)
class FeatureGCConfig(GradPCConfig):
    """GradPC settings plus the feature-space GC solver (Adam on ζ, cosine decay) and its constraint on ζ."""

    gc_steps: int = 1000
    gc_lr: float = 0.1  # in units of the standardised features
    zeta_constraint: str = "clean_box"  # "clean_box": per-dimension clean [min, max]; "none": the paper's

    def problems(self) -> list[str]:
        problems = super().problems()
        check_range(problems, "gc_steps", self.gc_steps, 1, 1_000_000)
        check_range(problems, "gc_lr", self.gc_lr, 0.0, 100.0, low_open=True)
        if self.zeta_constraint not in ZETA_CONSTRAINTS:
            problems.append(f"zeta_constraint: {self.zeta_constraint!r} must be one of {', '.join(ZETA_CONSTRAINTS)}")
        return problems


def feature_targeted_poison(config: FeatureGCConfig, ctx: DownstreamAttackContext
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, float]]:
    """Stages 1-2: (ζ, labels, base indices, diagnostics)."""
    features = ctx.train_features.to(ctx.device).float()
    labels = ctx.train_labels.to(ctx.device)
    box = config.zeta_constraint == "clean_box"
    target, clean, diagnostics = attainable_target(config, features, labels, ctx.num_classes, ctx.head.l2,
                                                   ctx.budget, ctx.generator, box=box)
    zeta, poison_labels, base, gc_diag = feature_space_gc(features, labels, target, ctx.head.l2, ctx.budget,
                                                          ctx.generator, num_classes=ctx.num_classes,
                                                          poison_labels=config.poison_labels, steps=config.gc_steps,
                                                          lr=config.gc_lr, box=box,
                                                          attained_ratio=config.attained_ratio)
    diagnostics |= gc_diag | poisoned_head_diagnostics(features, labels, zeta, poison_labels, target, clean,
                                                       ctx.num_classes, ctx.head.l2)
    return zeta, poison_labels, base, diagnostics

