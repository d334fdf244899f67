"""Private helpers shared by the downstream attacks (not an attack; not auto-registered)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from benchmark.api import (
    LinearHead,
    chunked,
    head_objective,
)


def choose_base(n: int, budget: int, generator: torch.Generator) -> torch.Tensor:
    """``budget`` distinct training indices drawn uniformly with ``generator`` (CPU, int64)."""
    return torch.randperm(n, generator=generator)[: min(budget, n)]


POISON_LABELS = ("flipped", "clean")


def initial_poisons(labels: torch.Tensor, budget: int, num_classes: int, generator: torch.Generator, *,
                    poison_labels: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(base indices, poison labels) where a model-targeted attack starts: ``budget`` training points drawn
    with :func:`choose_base`, labelled as :mod:`attacks.label_flip` labels them (``"flipped"``: uniform over
    the other classes) or with their own labels (``"clean"``). Labels stay fixed while the attack runs."""
    base = choose_base(len(labels), budget, generator)
    own = labels[base.to(labels.device)].clone()
    if poison_labels == "clean" or num_classes < 2:
        return base, own
    shift = torch.randint(1, num_classes, (len(base),), generator=generator).to(own.device)
    return base, (own + shift) % num_classes


def project_images(x: torch.Tensor, base: torch.Tensor, epsilon: float | None) -> torch.Tensor:
    """Clip ``x`` to [0, 1] and, when ``epsilon`` is set, to the ℓ∞ ball of that radius around ``base``."""
    if epsilon is not None:
        x = torch.minimum(torch.maximum(x, base - epsilon), base + epsilon)
    return x.clamp(0.0, 1.0)


def head_gradient(weight: torch.Tensor, bias: torch.Tensor, features: torch.Tensor, labels: torch.Tensor,
                  *, create_graph: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient of the SUMMED cross-entropy over ``features`` w.r.t. the head (W, b), by autograd.

    ``weight``/``bias`` are treated as fixed points (copies requiring grad); with ``create_graph`` the
    result stays differentiable in ``features`` (second-order autograd)."""
    w = weight.detach().clone().requires_grad_(True)
    b = bias.detach().clone().requires_grad_(True)
    loss = head_objective(w, b, features, labels, 0.0) * len(labels)
    gw, gb = torch.autograd.grad(loss, (w, b), create_graph=create_graph)
    return gw, gb


class GradientResidual:
    """‖∇_θ [mean CE over D_c ∪ D_p + l2/2·‖W‖²] at a fixed head θ̂‖² as a function of the poisons' features.

    The clean part Σ_{D_c} ∇ℓ(θ̂) is computed once; the mean is over N + n_p points (the victim's objective).
    """

    def __init__(self, target: LinearHead, clean_features: torch.Tensor, clean_labels: torch.Tensor,
                 n_poison: int, l2: float) -> None:
        self.target = target
        self.total = len(clean_labels) + n_poison
        gw, gb = head_gradient(target.weight, target.bias, clean_features, clean_labels, create_graph=False)
        self.clean_w, self.clean_b = gw.detach(), gb.detach()
        self.reg_w = l2 * target.weight.detach()

    def squared(self, poison_features: torch.Tensor, poison_labels: torch.Tensor) -> torch.Tensor:
        gw, gb = head_gradient(self.target.weight, self.target.bias, poison_features, poison_labels,
                               create_graph=True)
        res_w = (self.clean_w + gw) / self.total + self.reg_w
        res_b = (self.clean_b + gb) / self.total
        return res_w.pow(2).sum() + res_b.pow(2).sum()

    def norm(self, poison_features: torch.Tensor, poison_labels: torch.Tensor) -> float:
        with torch.enable_grad():
            return self.squared(poison_features.detach(), poison_labels).sqrt().item()


def feature_loss_gradient(loss_of: Callable[[torch.Tensor], torch.Tensor],
                          features: torch.Tensor) -> tuple[float, torch.Tensor]:
    """``loss_of(features)`` and its gradient w.r.t. the (detached) features: a head-sized computation."""
    feats = features.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_of(feats)
        (grad,) = torch.autograd.grad(loss, feats)
    return float(loss.detach()), grad


def input_gradient(extractor: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                   feature_grad: torch.Tensor, batch: int) -> torch.Tensor:
    """∂L/∂x = J_f(x)ᵀ ∂L/∂f(x), image by image in chunks of ``batch``: exact, because the frozen extractor
    (eval mode) maps each image alone; only one chunk's graph is alive at a time."""
    def chunk_gradient(chunk: torch.Tensor, chunk_feature_grad: torch.Tensor) -> torch.Tensor:
        chunk = chunk.detach().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(extractor(chunk), chunk, grad_outputs=chunk_feature_grad)
        return g

    return chunked(chunk_gradient, x, feature_grad, size=batch) if len(x) else torch.empty_like(x)


def loss_and_input_gradient(extractor: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                            loss_of: Callable[[torch.Tensor], torch.Tensor], batch: int) -> tuple[float, torch.Tensor]:
    """``loss_of(f(x))`` and ∂/∂x for a loss of the features of the whole set ``x`` (GC's residual, feature
    matching), with memory bounded by ``batch`` images: f(x) without a graph (chunked), the loss's gradient
    w.r.t. the features, then :func:`input_gradient`. The extra forward is the price of the bound."""
    with torch.no_grad():
        features = chunked(extractor, x, size=batch)
    loss, feature_grad = feature_loss_gradient(loss_of, features)
    return loss, input_gradient(extractor, x, feature_grad, batch)


def chunked_features(extractor: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch: int) -> torch.Tensor:
    """f(x) without a graph, ``batch`` images at a time."""
    with torch.no_grad():
        return chunked(extractor, x, size=batch)
