"""DECREE (Feng, Ma, Mu, Shen, Sabuncu, Yang, Gu, Lin, "Detecting Backdoors in Pre-trained Encoders", CVPR 2023).

Threat model: the defender holds the released encoder (white box) and a few clean unlabeled images, never a poison
or a label. A backdoored encoder maps every image carrying its trigger close to one embedding, so DECREE searches
for the smallest trigger that does that: a mask m (H × W, shared by the channels) and a pattern p, stamped as
(1 − m)·x + m·p on ``shadow_images`` clean images, minimising −(mean pairwise cosine similarity of their
embeddings) + λ‖m‖₁ with Adam. λ adapts as in the reference code: ×``lambda_factor`` after more than ``patience``
steps in a row above the ``similarity_threshold``, ÷ after as many below (down to ``lambda_min``, then reset).
The smallest mask seen above the threshold gives the statistic, its PL1-norm (the share of the image it covers):
a backdoored encoder has a small one. The score is −PL1 (higher = more suspicious); the verdict flags a PL1-norm
under ``pl1_threshold``. Defaults: the reference code's CIFAR-10 settings (50 shadow images, lr 0.5 then 0.1 from
epoch 30 and 0.05 from 50, Adam betas (0.5, 0.9), threshold 0.99, λ from 1e-3, early stop after 10 steps
without a smaller mask).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from benchmark.api import (
    Defense,
    DefenseContext,
    Detection,
    FeatureExtractorView,
    MethodConfig,
    check_range,
    fit,
    register_defense,
    shuffled_batches,
)

EPSILON = 1e-7


@dataclass(frozen=True, kw_only=True)
class DecreeConfig(MethodConfig):
    shadow_images: int = 50
    batch_size: int = 128
    epochs: int = 1000
    lr: float = 0.5
    lr_first_drop: int = 30  # epoch from which lr = 0.1
    lr_second_drop: int = 50  # epoch from which lr = 0.05
    similarity_threshold: float = 0.99
    lambda_init: float = 1e-3
    lambda_min: float = 1e-5
    lambda_factor: float = 5.0
    patience: int = 5
    pl1_threshold: float = 0.1

    def problems(self) -> list[str]:
        problems: list[str] = []
        for name in ("shadow_images", "batch_size", "epochs", "patience"):
            check_range(problems, name, getattr(self, name), 2 if name in ("shadow_images", "batch_size") else 1, 10**7)
        check_range(problems, "lr", self.lr, 0.0, 100.0, low_open=True)
        check_range(problems, "similarity_threshold", self.similarity_threshold, 0.0, 1.0, low_open=True, high_open=True)
        check_range(problems, "lambda_init", self.lambda_init, 0.0, 1e5, low_open=True)
        check_range(problems, "lambda_min", self.lambda_min, 0.0, self.lambda_init, low_open=True)
        check_range(problems, "lambda_factor", self.lambda_factor, 1.0, 100.0, low_open=True)
        check_range(problems, "pl1_threshold", self.pl1_threshold, 0.0, 1.0)
        if self.lr_second_drop < self.lr_first_drop:
            problems.append(f"lr_second_drop: {self.lr_second_drop} comes before lr_first_drop {self.lr_first_drop}")
        return problems


def self_similarity(features: torch.Tensor) -> torch.Tensor:
    """The mean cosine similarity of every pair of distinct rows."""
    unit = F.normalize(features, dim=1)
    n = len(unit)
    return ((unit @ unit.T).sum() - n) / (n * (n - 1))


def squash(parameter: torch.Tensor) -> torch.Tensor:
    """The tanh parametrisation of the reference code: any real → (0, 1)."""
    return (torch.tanh(parameter) / (2 - EPSILON) + 0.5).clamp(0, 1)


def unsquash(value: torch.Tensor) -> torch.Tensor:
    return torch.atanh((value - 0.5) * (2 - EPSILON))


@dataclass
class _Search:
    """The inversion's running state: λ and its counters, the smallest successful mask, early stopping."""

    config: DecreeConfig
    weight: float
    best_l1: float = float("inf")
    best_similarity: float = float("nan")
    stale_steps: int = 0
    above: int = 0
    below: int = 0
    low_lambda_steps: int = 0
    similarities: list[float] = field(default_factory=list)

    def after_step(self, similarity: float, l1: float) -> None:
        cfg, success = self.config, similarity > self.config.similarity_threshold
        self.similarities.append(similarity)
        found_before = self.best_l1 < float("inf")
        if success and l1 < self.best_l1:
            self.best_l1, self.best_similarity = l1, similarity
            self.stale_steps = 0
        elif found_before:
            self.stale_steps += 1
        self.low_lambda_steps = self.low_lambda_steps + 1 if self.weight < cfg.lambda_min and success else 0
        if self.low_lambda_steps > 2 * cfg.patience:
            self.weight, self.above, self.below = cfg.lambda_init, 0, 0
        self.above, self.below = (self.above + 1, 0) if success else (0, self.below + 1)
        if self.above > cfg.patience:
            self.weight, self.above = min(self.weight * cfg.lambda_factor, 1e5), 0
        elif self.below > cfg.patience:
            if self.weight >= cfg.lambda_min:
                self.weight /= cfg.lambda_factor
            self.below = 0


@register_defense
class Decree(Defense[DecreeConfig]):
    id = "decree"
    stage = "detect"
    tracks = ("pretrain-backdoor",)
    Config = DecreeConfig
    citation = "Feng et al., Detecting Backdoors in Pre-trained Encoders, CVPR 2023"
    paper_url = "https://arxiv.org/abs/2303.15180"
    # the inversion after pre-training, on the victim and on the clean encoder: at most `epochs` passes over the shadow images
    cost: ClassVar[Mapping[str, Any]] = {"pretrain-backdoor": {"repair": {"passes": "2 * epochs * shadow_images"}}}

    def detect_encoder(self, extractor: FeatureExtractorView, images: torch.Tensor, ctx: DefenseContext) -> Detection:
        cfg, device, gen = self.config, extractor.device, ctx.generator
        shadow = images[torch.randperm(len(images), generator=gen)[: cfg.shadow_images]].to(device)
        channels, height, width = shadow.shape[1:]
        mask_parameter = unsquash(torch.rand(height, width, generator=gen)).to(device).requires_grad_(True)
        pattern_parameter = unsquash(torch.rand(channels, height, width, generator=gen)).to(device).requires_grad_(True)
        optimizer = torch.optim.Adam([mask_parameter, pattern_parameter], lr=cfg.lr, betas=(0.5, 0.9))
        search = _Search(cfg, weight=cfg.lambda_init)
        step: dict[str, float] = {}

        def loss(index: torch.Tensor) -> torch.Tensor:
            mask, pattern = squash(mask_parameter), squash(pattern_parameter)
            stamped = ((1 - mask) * shadow[index] + mask * pattern).clamp(0, 1)
            similarity, l1 = self_similarity(extractor(stamped)), mask.sum() * channels
            step.update(similarity=float(similarity.detach()), l1=float(l1.detach()))
            return -similarity + search.weight * l1

        epochs_run = 0
        for epoch in range(cfg.epochs):
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr if epoch < cfg.lr_first_drop else 0.1 if epoch < cfg.lr_second_drop else 0.05
            start = len(search.similarities)
            fit(optimizer, shuffled_batches(len(shadow), cfg.batch_size, gen, min_size=2),
                loss, after_step=lambda _: search.after_step(step["similarity"], step["l1"]))
            epochs_run = epoch + 1
            epoch_similarity = sum(search.similarities[start:]) / max(1, len(search.similarities) - start)
            if epoch_similarity > cfg.similarity_threshold and search.stale_steps > 2 * cfg.patience:
                break
        found = search.best_l1 < float("inf")
        pl1 = search.best_l1 / (channels * height * width) if found else 1.0
        diagnostics = {"pl1_norm": pl1, "trigger_found": float(found), "epochs": float(epochs_run),
                       "final_lambda": search.weight} | ({"similarity_at_best": search.best_similarity} if found else {})
        return Detection(score=-pl1, flagged=bool(found and pl1 < cfg.pl1_threshold), diagnostics=diagnostics)
