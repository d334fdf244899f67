"""The supervised victim of the pre-training availability track: the encoder's backbone plus a linear
layer, trained end to end (built in the scoring process and, for a training-stage defense, in its plugin
process: one builder for both)."""

from __future__ import annotations

from typing import Any

import kornia.augmentation as K
import torch
from torch import nn

from benchmark.backbones import create_backbone
from benchmark.training import epoch_batches, fit, shuffled_batches
from benchmark.utils import fast_layout, fast_path, seed_everything


class SupervisedNet(nn.Module):
    """The encoder's backbone plus a linear layer, trained end to end (the supervised victim)."""

    def __init__(self, backbone: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Linear(backbone.feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.backbone(x))


def supervised_net(recipe: Any, in_chans: int, num_classes: int, seed: int) -> SupervisedNet:
    """The supervised victim of ``recipe``'s backbone, initialised from ``seed`` alone: the same weights
    whichever SSL method the recipe names (its projection heads are never built), so the victim cached
    under :func:`supervised_key`, which names no method, is the one any cell would build."""
    seed_everything(seed)
    backbone = create_backbone(recipe.backbone, in_chans=in_chans, cifar_stem=recipe.cifar_stem, norm=recipe.norm)
    return SupervisedNet(backbone, num_classes)


def train_supervised(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, epochs: int = 5,
                     batch_size: int = 128, lr: float = 2e-3, seed: int = 0,
                     device: torch.device | None = None) -> nn.Module:
    """Adam + cross-entropy with random-crop (padding size/8) augmentation; returns the model in eval mode."""
    device = device or torch.device("cpu")
    seed_everything(seed)
    model = fast_layout(model.to(device), device).train()
    size = images.shape[-1]
    crop = K.RandomCrop((size, size), padding=max(1, size // 8)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    data, targets = images.to(device), labels.to(device)
    gen = torch.Generator().manual_seed(seed)

    def loss(idx: torch.Tensor) -> torch.Tensor:
        with fast_path(device):
            logits = model(fast_layout(crop(data[idx]), device))
        return nn.functional.cross_entropy(logits.float(), targets[idx])

    fit(optimizer, epoch_batches(epochs, lambda _: shuffled_batches(len(data), batch_size, gen, device=device)), loss)
    return model.eval()
