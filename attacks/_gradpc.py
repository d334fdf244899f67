"""GradPC target parameters (stage 1 of the feature-targeted attacks; the target of GC): Sun, Zhang, Ren, Luo,
Li, "Exploring the Vulnerability of Deep Neural Networks: A Study of Parameter Corruption", AAAI 2021, as used by
Lu, Kamath, Yu, "Exploring the Limits of Model-Targeted Indiscriminate Data Poisoning Attacks", ICML 2023 and Lu,
Yang, Kamath, Yu, "Indiscriminate Data Poisoning Attacks on Pre-trained Feature Extractors", SaTML 2024.

Threat model: the attacker's own computation on the clean training features (the victim is not touched).
Objective: the head that maximises the clean training cross-entropy within ‖θ − θ_clean‖₂ ≤ ε_w. Solver: from the
clean head θ = (W, b) (the victim's own L-BFGS fit on the clean training features), ``gradpc_steps`` steps of
*normalised* gradient ascent θ ← θ + lr · g/‖g‖, each followed by the projection onto that ball. ``epsilon_w`` and
``gradpc_lr`` are RELATIVE to ‖θ_clean‖₂ (the corruption size is scale-free; the papers tune an absolute ε per
model). By default ε_w is not fixed: the attacker picks it per cell from ``epsilon_w_grid``
(:func:`attacks._feature_gc.attainable_target`). ``poison_labels``: the labels GC's poisons start with (``flipped``
as label flipping labels them, or ``clean``, their own). Private module: not an attack.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from attacks._common import POISON_LABELS
from benchmark.api import (
    LinearHead,
    MethodConfig,
    check_range,
    head_accuracy,
)


def gradpc_target(features: torch.Tensor, labels: torch.Tensor, clean: LinearHead, *, epsilon_w: float,
                  steps: int, lr: float) -> LinearHead:
    """The GradPC target head: normalised gradient ascent on the train CE from ``clean``, projected to
    ‖Δθ‖₂ ≤ epsilon_w·‖θ_clean‖₂ (``lr`` is also relative to ‖θ_clean‖₂)."""
    features, labels = features.detach().float(), labels.to(features.device)
    theta0 = flat(clean)
    scale = theta0.norm().clamp_min(1e-12)
    radius, step = epsilon_w * scale, lr * scale
    theta = theta0.clone()
    k, d = clean.weight.shape
    for _ in range(steps):
        theta = theta.detach().requires_grad_(True)
        loss = F.cross_entropy(features @ theta[: k * d].view(k, d).T + theta[k * d :], labels)
        (grad,) = torch.autograd.grad(loss, theta)
        theta = theta.detach() + step * grad / grad.norm().clamp_min(1e-12)
        delta = theta - theta0
        theta = theta0 + delta * torch.clamp(radius / delta.norm().clamp_min(1e-12), max=1.0)
    return LinearHead(theta[: k * d].view(k, d).clone(), theta[k * d :].clone())


def flat(head: LinearHead) -> torch.Tensor:
    """θ = (W, b) as one vector."""
    return torch.cat([head.weight.flatten(), head.bias])


def target_diagnostics(target: LinearHead, clean: LinearHead, features: torch.Tensor,
                       labels: torch.Tensor) -> dict[str, float]:
    """Clean-train accuracy of the target and of the clean head, and the relative corruption size."""
    t, c = flat(target), flat(clean)
    return {"target_train_acc": head_accuracy(target, features, labels),
            "clean_train_acc": head_accuracy(clean, features, labels),
            "target_rel_distance": ((t - c).norm() / c.norm().clamp_min(1e-12)).item()}


def target_distance_ratio(poisoned: LinearHead, target: LinearHead, clean: LinearHead) -> float:
    """‖θ_poisoned − θ̂‖ / ‖θ_clean − θ̂‖: 0 when the poisoned head is the target, 1 when it is as far from
    the target as the clean head."""
    return ((flat(poisoned) - flat(target)).norm() / (flat(clean) - flat(target)).norm().clamp_min(1e-12)).item()


TARGET_CHOICES = ("strongest", "strongest_attained")


@dataclass(frozen=True, kw_only=True)
class GradPCConfig(MethodConfig):
    """GradPC settings shared by the attacks that need a target head (sizes relative to ‖θ_clean‖₂).

    ``epsilon_w`` None: chosen per cell from ``epsilon_w_grid``: each candidate target is scored by the
    validation accuracy of the head trained with ``sweep_gc_steps`` Adam steps of feature-space GC's poisons
    on a ``sweep_val_fraction`` split of the clean training set; ``target_choice`` keeps the lowest
    (``strongest``) or the lowest among those GC attains, residual ratio ≤ ``attained_ratio``
    (``strongest_attained``); a number fixes it. ``poison_labels``: the labels GC's poisons carry."""

    epsilon_w: float | None = None
    epsilon_w_grid: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
    attained_ratio: float = 0.2
    target_choice: str = "strongest"  # or "strongest_attained"
    poison_labels: str = "flipped"  # or "clean" (the base points' own labels)
    sweep_val_fraction: float = 0.2
    sweep_gc_steps: int = 200
    sweep_gc_lr: float = 0.1  # Adam on ζ, in units of the standardised features (cosine decay to 0)
    gradpc_steps: int = 100
    gradpc_lr: float = 0.05

    def problems(self) -> list[str]:
        problems: list[str] = []
        if self.epsilon_w is not None:
            check_range(problems, "epsilon_w", self.epsilon_w, 0.0, 100.0, low_open=True)
        if not self.epsilon_w_grid:
            problems.append("epsilon_w_grid: must name at least one ε_w")
        for value in self.epsilon_w_grid:
            check_range(problems, "epsilon_w_grid", value, 0.0, 100.0, low_open=True)
        check_range(problems, "attained_ratio", self.attained_ratio, 0.0, 1.0, low_open=True)
        if self.target_choice not in TARGET_CHOICES:
            problems.append(f"target_choice: {self.target_choice!r} must be one of {', '.join(TARGET_CHOICES)}")
        if self.poison_labels not in POISON_LABELS:
            problems.append(f"poison_labels: {self.poison_labels!r} must be one of {', '.join(POISON_LABELS)}")
        check_range(problems, "sweep_val_fraction", self.sweep_val_fraction, 0.0, 0.9, low_open=True)
        check_range(problems, "sweep_gc_steps", self.sweep_gc_steps, 1, 1_000_000)
        check_range(problems, "sweep_gc_lr", self.sweep_gc_lr, 0.0, 100.0, low_open=True)
        check_range(problems, "gradpc_steps", self.gradpc_steps, 1, 100_000)
        check_range(problems, "gradpc_lr", self.gradpc_lr, 0.0, 100.0, low_open=True)
        return problems
