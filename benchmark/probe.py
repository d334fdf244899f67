"""Victim heads: the linear probe on cached features (default) and the reference SGD protocol.

``fit_linear_head`` solves the convex problem min_W mean CE(W f + b, y) + l2/2·‖W‖² with full-batch
L-BFGS (strong-Wolfe line search) on cached features: seconds where the reference protocol takes
minutes, and deterministic. ``train_sgd_probe`` is the reference linear evaluation: SGD through the
frozen encoder with crop + flip augmentation, momentum 0.9, step decay.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.plugin_base import MethodConfig, check_range
from benchmark.training import epoch_batches, fit, shuffled_batches
from benchmark.utils import fast_layout, fast_path, seed_everything


@dataclass(frozen=True)
class LinearHead:
    weight: torch.Tensor  # (K, D)
    bias: torch.Tensor  # (K,)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return features @ self.weight.T + self.bias

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        return self.logits(features).argmax(dim=1)


def head_objective(weight: torch.Tensor, bias: torch.Tensor, features: torch.Tensor, labels: torch.Tensor,
                   l2: float) -> torch.Tensor:
    """The victim's training objective: mean cross-entropy + l2/2·‖W‖² (bias unpenalised)."""
    return F.cross_entropy(features @ weight.T + bias, labels) + 0.5 * l2 * weight.pow(2).sum()


def fit_linear_head(features: torch.Tensor, labels: torch.Tensor, num_classes: int, *, l2: float,
                    max_iter: int = 300, init: LinearHead | None = None) -> LinearHead:
    """Multinomial logistic regression with L2 weight ``l2`` by L-BFGS; deterministic."""
    features, labels = features.detach().float(), labels.to(features.device)
    d = features.shape[1]
    weight = (init.weight.clone() if init else torch.zeros(num_classes, d, device=features.device)).requires_grad_(True)
    bias = (init.bias.clone() if init else torch.zeros(num_classes, device=features.device)).requires_grad_(True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, history_size=20,
                                  tolerance_grad=1e-6, tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = head_objective(weight, bias, features, labels, l2)
        loss.backward()
        return loss

    optimizer.step(closure)
    return LinearHead(weight.detach(), bias.detach())


@torch.no_grad()
def head_accuracy(head: LinearHead, features: torch.Tensor, labels: torch.Tensor) -> float:
    return (head.predict(features) == labels.to(features.device)).float().mean().item()


def stratified_split(labels: torch.Tensor, fraction: float, *, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (kept, held-out) with ``fraction`` of every class held out, seeded."""
    generator = torch.Generator().manual_seed(seed)
    keep, held = [], []
    for c in torch.unique(labels.cpu()):
        idx = torch.nonzero(labels.cpu() == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        n_held = max(1, round(fraction * len(idx)))
        held.append(idx[:n_held])
        keep.append(idx[n_held:])
    return torch.cat(keep).sort().values, torch.cat(held).sort().values


def select_l2(features: torch.Tensor, labels: torch.Tensor, num_classes: int, grid: list[float], *,
              seed: int) -> tuple[float, dict[str, float]]:
    """Choose the head's L2 weight by accuracy on a stratified 20 % validation split of clean training
    data (ties go to the larger weight). Returns the choice and every grid point's validation accuracy."""
    keep, held = stratified_split(labels, 0.2, seed=seed)
    scores: dict[str, float] = {}
    for l2 in sorted(grid):
        head = fit_linear_head(features[keep], labels[keep], num_classes, l2=l2)
        scores[repr(l2)] = head_accuracy(head, features[held], labels[held])
    best = max(sorted(grid), key=lambda l2: (scores[repr(l2)], l2))
    return best, scores


# ----------------------------------------------------------------------------------- reference protocol
@dataclass(frozen=True, kw_only=True)
class SGDProbeConfig(MethodConfig):
    """The reference SGD linear probe (a suite's ``victim.sgd``)."""

    epochs: int = 100
    lr: float = 1.0
    momentum: float = 0.9
    batch_size: int = 256
    milestones: tuple[float, ...] = (0.6, 0.8)  # fractions of training where lr is divided by 10
    crop_padding: int = 4
    flip: bool = True

    def problems(self) -> list[str]:
        problems: list[str] = []
        check_range(problems, "epochs", self.epochs, 1, 100_000)
        check_range(problems, "lr", self.lr, 0.0, 100.0, low_open=True)
        check_range(problems, "momentum", self.momentum, 0.0, 1.0, high_open=True)
        check_range(problems, "batch_size", self.batch_size, 1, 1 << 20)
        check_range(problems, "crop_padding", self.crop_padding, 0, 1024)
        problems += [f"milestones: {m!r} is not a fraction in [0, 1]" for m in self.milestones if not 0 <= m <= 1]
        return problems


def train_sgd_probe(extractor: nn.Module, images: torch.Tensor, labels: torch.Tensor, num_classes: int, *,
                    l2: float, config: SGDProbeConfig, seed: int, device: torch.device,
                    desc: str = "sgd probe") -> LinearHead:
    """The reference linear evaluation: a linear layer trained by SGD through the frozen ``extractor``
    with random-crop (padding) + horizontal-flip augmentation, weight decay ``l2``, step decay."""
    import kornia.augmentation as K

    seed_everything(seed)
    size = images.shape[-1]
    ops: list[nn.Module] = [K.RandomCrop((size, size), padding=config.crop_padding)]
    if config.flip:
        ops.append(K.RandomHorizontalFlip())
    augment = K.AugmentationSequential(*ops).to(device)
    dim = int(extractor.feature_dim)
    layer = nn.Linear(dim, num_classes).to(device)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    optimizer = torch.optim.SGD(layer.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=l2)
    milestones = [int(m * config.epochs) for m in config.milestones]
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.1)
    data, targets = images.to(device), labels.to(device)
    generator = torch.Generator().manual_seed(seed)

    def loss(idx: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), fast_path(device):
            feats = extractor(fast_layout(augment(data[idx]), device)).float()
        return F.cross_entropy(layer(feats), targets[idx])

    batches = epoch_batches(config.epochs, lambda _: shuffled_batches(len(data), config.batch_size, generator, device=device),
                            after_epoch=lambda _: scheduler.step(), desc=desc)
    fit(optimizer, batches, loss)
    return LinearHead(layer.weight.detach(), layer.bias.detach())
