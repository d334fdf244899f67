"""GradPC target parameters (stage 1 of the feature-targeted attacks; the target of GC).

Sun, Zhang, Ren, Luo, Li, "Exploring the Vulnerability of Deep Neural Networks: A Study of Parameter
Corruption", AAAI 2021, as used by Lu, Kamath, Yu, "Exploring the Limits of Model-Targeted Indiscriminate
Data Poisoning Attacks", ICML 2023 and Lu, Yang, Kamath, Yu, "Indiscriminate Data Poisoning Attacks on
Pre-trained Feature Extractors", SaTML 2024.

From the clean head θ = (W, b) (the victim's own L-BFGS fit on the clean training features), take
``steps`` steps of *normalised* gradient ascent on the clean training cross-entropy,
θ ← θ + lr · g/‖g‖, each followed by projection onto the ball ‖θ − θ_clean‖₂ ≤ ε_w. Here ``epsilon_w``
and ``lr`` are RELATIVE to ‖θ_clean‖₂ (the corruption size is scale-free; our choice, documented: the
papers tune an absolute ε per model). Defaults: ε_w = 0.5·‖θ‖, 100 steps of 0.05·‖θ‖.

Private module: not an attack. Attacks that use the target report its clean-train accuracy as
``target_train_acc`` (the parameter-corruption reference).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from benchmark.api import MethodConfig, check_range
from benchmark.probe import LinearHead, fit_linear_head, head_accuracy

GRADPC_DEFAULTS = {"epsilon_w": 0.5, "steps": 100, "lr": 0.05}


def gradpc_target(features: torch.Tensor, labels: torch.Tensor, num_classes: int, l2: float, *,
                  epsilon_w: float, steps: int, lr: float, clean: LinearHead | None = None) -> LinearHead:
    """The GradPC target head: normalised gradient ascent on the train CE from the clean head, projected
    to ‖Δθ‖₂ ≤ epsilon_w·‖θ_clean‖₂ (``lr`` is also relative to ‖θ_clean‖₂)."""
    features, labels = features.detach().float(), labels.to(features.device)
    clean = clean if clean is not None else fit_linear_head(features, labels, num_classes, l2=l2)
    theta0 = torch.cat([clean.weight.flatten(), clean.bias])
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


def target_diagnostics(target: LinearHead, clean: LinearHead, features: torch.Tensor,
                       labels: torch.Tensor) -> dict[str, float]:
    """Clean-train accuracy of the target and of the clean head, and the relative corruption size."""
    t = torch.cat([target.weight.flatten(), target.bias])
    c = torch.cat([clean.weight.flatten(), clean.bias])
    return {"target_train_acc": head_accuracy(target, features, labels),
            "clean_train_acc": head_accuracy(clean, features, labels),
            "target_rel_distance": ((t - c).norm() / c.norm().clamp_min(1e-12)).item()}


@dataclass(frozen=True, kw_only=True)
class GradPCConfig(MethodConfig):
    """GradPC settings shared by the attacks that need a target head (relative to ‖θ_clean‖₂)."""

    epsilon_w: float = GRADPC_DEFAULTS["epsilon_w"]
    gradpc_steps: int = GRADPC_DEFAULTS["steps"]
    gradpc_lr: float = GRADPC_DEFAULTS["lr"]

    def problems(self) -> list[str]:
        problems: list[str] = []
        check_range(problems, "epsilon_w", self.epsilon_w, 0.0, 100.0, low_open=True)
        check_range(problems, "gradpc_steps", self.gradpc_steps, 1, 100_000)
        check_range(problems, "gradpc_lr", self.gradpc_lr, 0.0, 100.0, low_open=True)
        return problems


def target_for(config: GradPCConfig, features: torch.Tensor, labels: torch.Tensor, num_classes: int,
               l2: float) -> tuple[LinearHead, dict[str, float]]:
    """Fit the clean head, run GradPC with ``config``; return the target and its diagnostics."""
    clean = fit_linear_head(features, labels, num_classes, l2=l2)
    target = gradpc_target(features, labels, num_classes, l2, epsilon_w=config.epsilon_w,
                           steps=config.gradpc_steps, lr=config.gradpc_lr, clean=clean)
    return target, target_diagnostics(target, clean, features, labels.to(features.device))
