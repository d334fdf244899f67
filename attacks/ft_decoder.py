"""Feature-targeted attack with decoder inversion: Lu, Yang, Kamath, Yu, "Indiscriminate Data Poisoning
Attacks on Pre-trained Feature Extractors", SaTML 2024 (stages 1-3).

Threat model as in :mod:`attacks.gc` (downstream: white-box frozen extractor f, the clean training set, ``budget``
poisons). Stages 1-2 (:mod:`attacks._feature_gc`): a GradPC target head, then poisoned features ζ by feature-space
GC, kept in the clean-feature box by default. Stage 3, decoder inversion: a decoder g: features → images is trained
on 90 % of the clean training images with f frozen (MSE between g(f(x)) and x; a linear layer to a (4·width, H/4,
W/4) map, two stride-2 transposed convolutions, a per-pixel output bias started at the logit of the mean training
image, sigmoid; resized to H×W); x_p = clamp(g(ζ), 0, 1), projected into the ε ball around the base image under an
input constraint. The decoder is cached per (encoder, data, decoder config) through ``ctx.cached`` and seeded by
``decoder_seed`` alone, so a cache hit and a miss give the same decoder. Gate: unless the held-out
``decoder_mse < decoder_gate × constant_mse`` (``constant_mse``: the mean training image as a constant predictor)
the attack raises :class:`DecoderGateError` and the cell is an error, not a number. ``feature_match_error`` =
‖f(x_p) − ζ‖_F / ‖ζ‖_F.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from attacks._common import project_images
from attacks._feature_gc import FeatureGCConfig, feature_targeted_poison
from benchmark.api import (
    DownstreamAttack,
    DownstreamAttackContext,
    DownstreamPoison,
    check_range,
    epoch_batches,
    fit,
    register_attack,
    shuffled_batches,
)


@dataclass(frozen=True, kw_only=True)
class FTDecoderConfig(FeatureGCConfig):
    decoder_width: int = 32
    decoder_epochs: int = 100
    decoder_lr: float = 3e-3
    decoder_batch_size: int = 32
    decoder_seed: int = 0
    decoder_gate: float = 0.75  # the attack fails unless decoder_mse < decoder_gate × constant_mse

    def problems(self) -> list[str]:
        problems = super().problems()
        check_range(problems, "decoder_width", self.decoder_width, 1, 4096)
        check_range(problems, "decoder_epochs", self.decoder_epochs, 1, 100_000)
        check_range(problems, "decoder_lr", self.decoder_lr, 0.0, 10.0, low_open=True)
        check_range(problems, "decoder_batch_size", self.decoder_batch_size, 1, 1_000_000)
        check_range(problems, "decoder_gate", self.decoder_gate, 0.0, 1e6, low_open=True)
        return problems


class DecoderGateError(RuntimeError):
    """The decoder reconstructs no better than the gate allows: its inversions would be meaningless."""


class Decoder(nn.Module):
    """features (N, D) → images (N, C, H, W) in [0, 1]; ``bias`` is a per-pixel output logit offset (set to
    the logit of the mean training image before training)."""

    def __init__(self, feature_dim: int, shape: tuple[int, int, int], width: int) -> None:
        super().__init__()
        c, h, w = shape
        self.shape = shape
        self.h0, self.w0 = max(1, -(-h // 4)), max(1, -(-w // 4))
        self.width = width
        self.fc = nn.Linear(feature_dim, 4 * width * self.h0 * self.w0)
        self.up = nn.Sequential(
            nn.ReLU(),
            nn.ConvTranspose2d(4 * width, 2 * width, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(width, c, 3, padding=1),
        )
        self.bias = nn.Parameter(torch.zeros(shape))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.up(self.fc(z).view(len(z), 4 * self.width, self.h0, self.w0))
        if tuple(x.shape[-2:]) != self.shape[1:]:
            x = F.interpolate(x, size=self.shape[1:], mode="bilinear", align_corners=False)
        return torch.sigmoid(x + self.bias)


def train_decoder(features: torch.Tensor, images: torch.Tensor, cfg: FTDecoderConfig) -> dict[str, torch.Tensor]:
    """Fit the decoder on 90 % of (features, images); return its state_dict and the held-out MSEs."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.decoder_seed)
        decoder = Decoder(features.shape[1], tuple(images.shape[1:]), cfg.decoder_width).to(features.device)
    gen = torch.Generator().manual_seed(cfg.decoder_seed)
    order = torch.randperm(len(images), generator=gen).to(features.device)
    n_val = max(1, len(images) // 10)
    val, tr = order[:n_val], order[n_val:]
    with torch.no_grad():  # start at (about) the mean image, not at a sigmoid that collapses to black
        decoder.bias.copy_(torch.logit(images[tr].mean(0).clamp(1e-3, 1 - 1e-3)))
    optimizer = torch.optim.Adam(decoder.parameters(), lr=cfg.decoder_lr)
    batches = epoch_batches(cfg.decoder_epochs, lambda _: [tr[i] for i in shuffled_batches(
        len(tr), cfg.decoder_batch_size, gen, device=features.device)])
    fit(optimizer, batches, lambda idx: F.mse_loss(decoder(features[idx]), images[idx]))
    with torch.no_grad():
        mse = F.mse_loss(decoder(features[val]), images[val])
        constant = F.mse_loss(images[tr].mean(0, keepdim=True).expand_as(images[val]), images[val])
    state = {f"state.{k}": v.detach().cpu() for k, v in decoder.state_dict().items()}
    return {**state, "decoder_mse": mse.cpu().reshape(1), "constant_mse": constant.cpu().reshape(1)}


@register_attack
class FTDecoder(DownstreamAttack[FTDecoderConfig]):
    id = "ft_decoder"
    # a decoder trained on the clean features: ≈ half a backbone pass per image and epoch
    cost: ClassVar[Mapping[str, Any]] = {"downstream": {"passes": "decoder_epochs * train * 0.5"}}
    Config = FTDecoderConfig
    paper_url = "https://arxiv.org/abs/2402.12626"
    citation = ("Lu, Yang, Kamath, Yu, Indiscriminate Data Poisoning Attacks on Pre-trained Feature Extractors, "
                "SaTML 2024 (FT, decoder inversion)")

    def craft_downstream(self, ctx: DownstreamAttackContext) -> DownstreamPoison:
        cfg = self.config
        decoder, stats = self._decoder(ctx)  # first: a decoder that fails its gate ends the cell before GC
        check_gate(stats["decoder_mse"], stats["constant_mse"], cfg.decoder_gate)
        zeta, labels, base, diagnostics = feature_targeted_poison(cfg, ctx)
        diagnostics.update(stats)
        clean = ctx.train_images[base].to(ctx.device).float()
        with torch.no_grad():
            decoded = torch.cat([decoder(z) for z in zeta.to(ctx.device).split(ctx.extractor.batch_size)])
            images = project_images(decoded, clean, ctx.input_epsilon)
            achieved = ctx.extractor.features(images)
        diagnostics["feature_match_error"] = ((achieved - zeta).norm() / zeta.norm().clamp_min(1e-12)).item()
        return DownstreamPoison(images=images.cpu(), labels=labels.long().cpu(), base_indices=base,
                                diagnostics=diagnostics)

    def _decoder(self, ctx: DownstreamAttackContext) -> tuple[Decoder, dict[str, float]]:
        cfg = self.config
        images = ctx.train_images.to(ctx.device).float()
        features = ctx.train_features.to(ctx.device).float()
        key = {"arch": "Decoder-v2", "width": cfg.decoder_width, "epochs": cfg.decoder_epochs, "lr": cfg.decoder_lr,
               "batch_size": cfg.decoder_batch_size, "seed": cfg.decoder_seed, "feature_dim": int(features.shape[1]),
               "image_shape": list(images.shape), "data_fingerprint": _fingerprint(images, features)}
        blob = ctx.cached("ft_decoder", key, lambda: train_decoder(features, images, cfg))
        decoder = Decoder(features.shape[1], tuple(images.shape[1:]), cfg.decoder_width)
        decoder.load_state_dict({k[len("state."):]: v for k, v in blob.items() if k.startswith("state.")})
        decoder = decoder.to(ctx.device).eval().requires_grad_(False)
        return decoder, {"decoder_mse": float(blob["decoder_mse"].item()),
                         "constant_mse": float(blob["constant_mse"].item())}


def check_gate(decoder_mse: float, constant_mse: float, gate: float) -> None:
    """Raise :class:`DecoderGateError` unless ``decoder_mse < gate × constant_mse``."""
    if not decoder_mse < gate * constant_mse:
        raise DecoderGateError(
            f"ft_decoder: the decoder's held-out MSE {decoder_mse:.4g} is not below decoder_gate {gate:g} × the "
            f"mean-image MSE {constant_mse:.4g} (= {gate * constant_mse:.4g}); inverting ζ with it would be "
            "meaningless. Train it longer (decoder_epochs, decoder_lr) or, knowingly, raise decoder_gate.")


def _fingerprint(images: torch.Tensor, features: torch.Tensor) -> list[float]:
    """A cheap content fingerprint of the decoder's training data (the engine adds the encoder identity)."""
    weights = torch.linspace(1.0, 2.0, images[0].numel(), device=images.device)
    per_image = images.flatten(1) @ weights
    order = torch.arange(1, len(images) + 1, device=images.device, dtype=per_image.dtype)
    return [round(float(per_image.sum()), 4), round(float((per_image * order).sum()), 2),
            round(float(features.double().sum()), 4)]
