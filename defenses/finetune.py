"""Fine-tuning on clean data as a post-hoc defense. Liu, Jia, Gong, "PoisonedEncoder: Poisoning the
Unlabeled Pre-training Data in Contrastive Learning", USENIX Security 2022 (§ defenses: fine-tuning the
poisoned encoder on clean labeled data); also Liu, Dolan-Gavitt, Garg, "Fine-Pruning", RAID 2018.

:meth:`repair_encoder` receives the encoder the victim downloaded and the *clean labeled training data of
the track* (never which points are poisoned; the attacker never sees what is drawn): it draws
``clean_size`` points uniformly with ``ctx.generator`` (all of them when fewer are given), fine-tunes a copy
of the backbone end to end with a temporary linear head (cross-entropy, SGD + momentum, small ``lr``,
``epochs`` epochs, random-resized-crop augmentation, BatchNorm in train mode), discards the head and
returns a new frozen ``FeatureExtractor`` whose standardisation (mean/std) is refitted on the backbone's
features of the clean subset. The downstream classifier is then trained on the repaired encoder.

To report accuracy / ASR against the clean-set size, list several entries with distinct names, e.g.
``{id: finetune, name: finetune-500, settings: {clean_size: 500}}``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.api import (
    Defense,
    DefenseContext,
    FeatureExtractor,
    MethodConfig,
    check_range,
    epoch_batches,
    fast_layout,
    fast_path,
    fit,
    make_extractor,
    register_defense,
    shuffled_batches,
)


@dataclass(frozen=True, kw_only=True)
class FinetuneConfig(MethodConfig):
    clean_size: int = 1000  # clean labeled points used for fine-tuning
    epochs: int = 10
    lr: float = 0.01  # SGD, backbone and temporary head
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    crop_scale_min: float = 0.5  # random-resized-crop augmentation (1.0 = none)

    def problems(self) -> list[str]:
        problems: list[str] = []
        if not isinstance(self.clean_size, int) or self.clean_size < 1:
            problems.append(f"clean_size: {self.clean_size!r} must be an integer ≥ 1 (list sizes as separate entries)")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name}: {getattr(self, name)} must be ≥ 1")
        check_range(problems, "lr", self.lr, 0.0, 10.0, low_open=True)
        check_range(problems, "momentum", self.momentum, 0.0, 1.0, high_open=True)
        check_range(problems, "weight_decay", self.weight_decay, 0.0, 1.0)
        check_range(problems, "crop_scale_min", self.crop_scale_min, 0.0, 1.0, low_open=True)
        return problems


def _augment(scale_min: float, size: int) -> nn.Module:
    import kornia.augmentation as K

    if scale_min >= 1.0:
        return nn.Identity()
    return K.RandomResizedCrop((size, size), scale=(scale_min, 1.0))


@register_defense
class Finetune(Defense[FinetuneConfig]):
    id = "finetune"
    # the repair: ``epochs`` over at most ``clean_size`` clean training points
    cost: ClassVar[Mapping[str, Any]] = {"downstream": {"head": {}, "repair": {"passes": "epochs * min(clean_size, train)"}},
            "pretrain-availability": {"repair": {"passes": "epochs * min(clean_size, train)"}},
            "pretrain-targeted": {"repair": {"passes": "epochs * min(clean_size, train)"}},
            "pretrain-backdoor": {"repair": {"passes": "epochs * min(clean_size, train)"}}}
    stage = "posthoc"
    tracks = ("downstream", "pretrain-availability", "pretrain-targeted", "pretrain-backdoor")
    Config = FinetuneConfig
    citation = "Liu, Jia, Gong, PoisonedEncoder, USENIX Security 2022 (fine-tuning defense)"
    paper_url = "https://arxiv.org/abs/2205.06401"
    config: FinetuneConfig

    def clean_subset(self, images: torch.Tensor, labels: torch.Tensor,
                     ctx: DefenseContext) -> tuple[torch.Tensor, torch.Tensor]:
        n = min(self.config.clean_size, len(images))
        idx = torch.randperm(len(images), generator=ctx.generator)[:n].sort().values
        return images[idx], labels[idx]

    def repair_encoder(self, extractor: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                       ctx: DefenseContext) -> FeatureExtractor:
        cfg, device = self.config, ctx.device
        x_all, y_all = self.clean_subset(images, labels, ctx)
        x_all, y_all = x_all.to(device), y_all.to(device)
        backbone = fast_layout(copy.deepcopy(extractor.backbone).to(device), device).requires_grad_(True)
        head = nn.Linear(int(extractor.feature_dim), ctx.num_classes).to(device)
        params = list(backbone.parameters()) + list(head.parameters())
        optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        augment = _augment(cfg.crop_scale_min, x_all.shape[-1]).to(device)
        torch.manual_seed(int(ctx.seed))  # kornia draws from the global generator
        backbone.train()

        def loss(idx: torch.Tensor) -> torch.Tensor:
            with fast_path(device):
                feats = backbone(fast_layout(augment(x_all[idx]).clamp(0, 1), device))
            return F.cross_entropy(head(feats.float()), y_all[idx])

        # batches of fewer than two samples are left out: BatchNorm needs two
        fit(optimizer, epoch_batches(cfg.epochs, lambda _: shuffled_batches(len(x_all), cfg.batch_size, ctx.generator,
                                                                             device=device, min_size=2)), loss)
        backbone.eval().requires_grad_(False)
        return make_extractor(backbone, x_all, device)
