"""The attack context both pre-training tracks share (re-exported by :mod:`benchmark.api`), and how a plugin
process rebuilds it from the plain data the harness sends."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from benchmark.plugin_base import CheckpointStore
from benchmark.pretrain import SSLRecipe


@dataclass(frozen=True)
class PretrainAttackContext:
    """What a pre-training attacker sees: the clean unlabeled pre-training images (labels only for
    class-wise attacks that the threat model lets know them), the SSL recipe and its budget."""

    images: torch.Tensor  # (N, C, H, W) in [0, 1]; must not be mutated
    labels: torch.Tensor  # (N,) int64; class-wise poisons use them
    num_classes: int
    epsilon: float  # l_inf bound on the perturbation (availability track)
    poison_fraction: float  # fraction p of images the attacker may perturb (availability track)
    budget: int  # number of images it may perturb (availability) or inject (targeted)
    ssl: Any  # benchmark.ssl.SSLRecipe: method id, backbone, augmentation, optimiser settings
    generator: torch.Generator
    device: torch.device
    checkpoints: CheckpointStore  # where a long generation may checkpoint and resume (no path: the harness stores)
    cached: Callable[[str, Mapping[str, Any], Callable[[], dict[str, torch.Tensor]]], dict[str, torch.Tensor]]
    # targeted track: clean labeled inputs of the downstream task, disjoint from the pre-training set and
    # from the downstream training set; every returned target image must be one of them (exact copy)
    target_pool_images: torch.Tensor | None = None  # (P, C, H, W) in [0, 1]; must not be mutated
    target_pool_labels: torch.Tensor | None = None  # (P,) int64 labels of the downstream task


def pretrain_context(plain: Mapping[str, Any], *, generator: torch.Generator, device: torch.device, cached: Any,
                     checkpoints: CheckpointStore) -> tuple[PretrainAttackContext, list[torch.Tensor]]:
    """The context from the harness's plain data, and the tensors the attack must not mutate."""
    pool = [plain[k] for k in ("target_pool_images", "target_pool_labels") if plain.get(k) is not None]
    ctx = PretrainAttackContext(
        images=plain["images"], labels=plain["labels"], num_classes=int(plain["num_classes"]),
        epsilon=float(plain["epsilon"]), poison_fraction=float(plain["poison_fraction"]), budget=int(plain["budget"]),
        ssl=SSLRecipe(**plain["recipe"]), generator=generator, device=device, checkpoints=checkpoints, cached=cached,
        target_pool_images=plain.get("target_pool_images"), target_pool_labels=plain.get("target_pool_labels"))
    return ctx, [plain["images"], plain["labels"], *pool]
