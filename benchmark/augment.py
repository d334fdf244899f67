"""Batched, differentiable SSL augmentations on the compute device (kornia).

The SimCLR-family recipe: random resized crop, horizontal flip, colour jitter (p = 0.8), random
grayscale (p = 0.2), optionally a small rotation (useful for digits, where flips change the class).
Every op is differentiable w.r.t. its input, which Contrastive Poisoning relies on (gradients reach δ
through the augmentation). :func:`place_augmentation` moves a pipeline to the compute device *and* draws
its random parameters there (kornia samples on the CPU unless told otherwise, then copies every batch's
parameters to the device).
"""

from __future__ import annotations

from dataclasses import dataclass

import kornia.augmentation as K
import torch
from torch import nn

from benchmark.plugin_base import MethodConfig, check_range


@dataclass(frozen=True, kw_only=True)
class AugmentConfig(MethodConfig):
    crop_scale_min: float = 0.2
    flip: bool = True
    jitter_strength: float = 0.4  # brightness/contrast/saturation = s, hue = s/4
    jitter_prob: float = 0.8
    grayscale_prob: float = 0.2
    rotation_degrees: float = 0.0

    def problems(self) -> list[str]:
        problems: list[str] = []
        check_range(problems, "crop_scale_min", self.crop_scale_min, 0.0, 1.0, low_open=True)
        check_range(problems, "jitter_strength", self.jitter_strength, 0.0, 1.0)
        check_range(problems, "jitter_prob", self.jitter_prob, 0.0, 1.0)
        check_range(problems, "grayscale_prob", self.grayscale_prob, 0.0, 1.0)
        check_range(problems, "rotation_degrees", self.rotation_degrees, 0.0, 180.0)
        return problems


def build_augmentation(config: AugmentConfig, *, image_size: int, channels: int) -> nn.Module:
    """A kornia pipeline mapping a (N, C, H, W) batch in [0, 1] to one random view per image."""
    ops: list[nn.Module] = [K.RandomResizedCrop((image_size, image_size), scale=(config.crop_scale_min, 1.0))]
    if config.rotation_degrees > 0:
        ops.append(K.RandomRotation(config.rotation_degrees))
    if config.flip:
        ops.append(K.RandomHorizontalFlip())
    s = config.jitter_strength
    if s > 0 and config.jitter_prob > 0:
        if channels == 3:
            ops.append(K.ColorJitter(s, s, s, s / 4, p=config.jitter_prob))
        else:  # saturation and hue are undefined on one channel
            ops.append(K.ColorJitter(s, s, 0.0, 0.0, p=config.jitter_prob))
    if channels == 3 and config.grayscale_prob > 0:
        ops.append(K.RandomGrayscale(p=config.grayscale_prob))
    return _ClampedSequential(K.AugmentationSequential(*ops))


def place_augmentation(module: nn.Module, device: torch.device | str) -> nn.Module:
    """``module`` (a :func:`build_augmentation` pipeline) on ``device``, its random parameters drawn there.

    Every kornia op's samplers are set to ``device`` (``set_rng_device_and_dtype``; their dtype is kept,
    float32 as built): the parameters of each view are then drawn from the device's generator, not drawn
    on the CPU and copied per batch. Recent kornia does this on ``.to(device)`` already; older releases
    (the project allows ≥ 0.7) do not, so this is explicit. On the CPU the samplers stay on the CPU and
    every view is bit-identical to an unplaced pipeline's; on CUDA the views come from the CUDA generator
    (seeded by ``torch.manual_seed`` as well), so they differ from the CPU's.
    """
    device = torch.device(device)
    module = module.to(device)
    for op in module.modules():
        if isinstance(op, K.base._BasicAugmentationBase):  # the ops (each updates its own parameter generator)
            op.set_rng_device_and_dtype(device, getattr(op, "dtype", None) or torch.get_default_dtype())
    return module


class _ClampedSequential(nn.Module):
    def __init__(self, pipeline: nn.Module) -> None:
        super().__init__()
        self.pipeline = pipeline

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pipeline(images).clamp(0.0, 1.0)
