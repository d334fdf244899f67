"""Backbones: tiny CNNs registered for CPU runs, and any timm model (optionally with a CIFAR stem).

``create_backbone(name, in_chans=..., cifar_stem=...)`` returns a module mapping (N, C, H, W) images to
(N, D) features and exposes ``feature_dim``. Names not registered here are passed to
``timm.create_model(name, num_classes=0)``: ``resnet18``, ``resnet50``, ``vit_tiny_patch16_224`` …
The CIFAR stem (3×3 stride-1 first convolution, no max-pool) is the usual ResNet change for 32 px inputs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from benchmark.registry import Registry, UnknownNameError

TINY_BACKBONES: Registry[Callable[..., nn.Module]] = Registry("backbone")


class ConvNet(nn.Module):
    """A small VGG-style CNN: conv blocks of (conv3×3 → norm → ReLU) with 2× pooling, then global pooling."""

    def __init__(self, in_chans: int, widths: tuple[int, ...], norm: str = "batch") -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_chans
        for i, width in enumerate(widths):
            layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), _norm(norm, width), nn.ReLU(inplace=True)]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            channels = width
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.net = nn.Sequential(*layers)
        self.feature_dim = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":  # per-sample statistics: needed by DP-SGD
        return nn.GroupNorm(min(8, channels), channels)
    raise ValueError(f"norm must be 'batch' or 'group', not {kind!r}")


@TINY_BACKBONES.decorator("cnn_micro")
def cnn_micro(in_chans: int, norm: str = "batch") -> nn.Module:
    """3 conv blocks, 16-32-64 channels (≈ 24k parameters): for the smoke tier."""
    return ConvNet(in_chans, (16, 32, 64), norm)


@TINY_BACKBONES.decorator("cnn_tiny")
def cnn_tiny(in_chans: int, norm: str = "batch") -> nn.Module:
    """4 conv blocks, 32-32-64-128 channels (≈ 120k parameters): the cpu tier's backbone."""
    return ConvNet(in_chans, (32, 32, 64, 128), norm)


class TimmBackbone(nn.Module):
    """A timm model with its classifier removed (``num_classes=0``)."""

    def __init__(self, name: str, in_chans: int, cifar_stem: bool, norm: str) -> None:
        super().__init__()
        import timm

        if norm not in ("batch", "group"):
            raise ValueError(f"norm must be 'batch' or 'group', not {norm!r}")
        kwargs = {}
        if norm == "group":
            kwargs["norm_layer"] = lambda ch: nn.GroupNorm(min(32, ch), ch)
        self.model = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans, **kwargs)
        if cifar_stem:
            _apply_cifar_stem(self.model, name)
        self.feature_dim = int(self.model.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _apply_cifar_stem(model: nn.Module, name: str) -> None:
    conv1 = getattr(model, "conv1", None)
    if not isinstance(conv1, nn.Conv2d) or not hasattr(model, "maxpool"):
        raise ValueError(f"cifar_stem is defined for ResNet-style timm models (conv1 + maxpool), not {name!r}")
    model.conv1 = nn.Conv2d(conv1.in_channels, conv1.out_channels, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()


def backbone_names() -> list[str]:
    return TINY_BACKBONES.names()


def is_known_backbone(name: str) -> bool:
    if name in TINY_BACKBONES:
        return True
    import timm

    return name in timm.list_models()


def create_backbone(name: str, *, in_chans: int, cifar_stem: bool = False, norm: str = "batch") -> nn.Module:
    """Build backbone ``name`` (a tiny CNN id or a timm model name) with ``feature_dim`` set."""
    if name in TINY_BACKBONES:
        return TINY_BACKBONES.get(name)(in_chans, norm=norm)
    if not is_known_backbone(name):
        raise UnknownNameError("backbone", name, TINY_BACKBONES.names() + ["<any timm model name>"])
    return TimmBackbone(name, in_chans, cifar_stem, norm)
