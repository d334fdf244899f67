"""Matrix-completion preprocessing (ME-Net). Yang, Zhang, Katabi, Xu, "ME-Net: Towards Effective
Adversarial Robustness with Matrix Estimation", ICML 2019; used as a defense against contrastive poisoning
by He, Zha, Katabi, "Indiscriminate Poisoning Attacks on Unsupervised Contrastive Learning", ICLR 2023.

Threat model: the defender transforms every image the victim trains on (clean and poisoned alike, unmarked) and,
with ``transform_test`` (default, as ME-Net does), its test images. Each image in [-1, 1] becomes the H × (W·C)
matrix of its channels side by side; a random pixel mask keeps each pixel with probability ``keep_prob`` (shared by
the channels); the masked matrix keeps its top ⌊``rank_fraction``·min(m, n)⌋ singular values (ME-Net code's USVT
step: a fixed rank fraction, not a noise threshold), rescaled by 1/p̂ (p̂ the observed fraction) and clipped;
``n_masks`` reconstructions are averaged, batched in one ``torch.linalg.svd`` per chunk. Defaults follow ME-Net's
code: keep_prob 0.8, rank fraction 0.8, 10 masks. Pre-training (:meth:`ssl_hooks`): each batch image is replaced by
a reconstruction with probability ``ssl_prob`` (default 1, as CP's "ME-Net as augmentation") before the SSL views
are drawn, with fresh masks every batch (``ssl_bank = 0``) or one of ``ssl_bank`` reconstructions per image made
before training (:class:`ReconstructionBank`). The released encoder sees plain images at test time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from benchmark.api import (
    Defense,
    DefenseContext,
    IndexedTransform,
    MethodConfig,
    SSLTrainingHooks,
    check_range,
    derive_seed,
    register_defense,
)


@dataclass(frozen=True, kw_only=True)
class MatrixCompletionConfig(MethodConfig):
    keep_prob: float = 0.8  # p: probability that a pixel is observed (ME-Net's code: 0.8–1.0 in training, 0.9 at test)
    n_masks: int = 10  # independent masks per image, reconstructions averaged
    rank_fraction: float = 0.8  # keep the top ⌊rank_fraction · min(m, n)⌋ singular values (ME-Net's code: 0.8)
    transform_test: bool = True  # reconstruct test images too (ME-Net preprocesses at inference)
    ssl_prob: float = 1.0  # pre-training: probability that an image of a batch is reconstructed
    ssl_bank: int = 0  # pre-training: 0 = fresh masks every batch; k = k reconstructions per image, made once
    chunk: int = 2048  # matrices per batched SVD

    def problems(self) -> list[str]:
        problems: list[str] = []
        check_range(problems, "keep_prob", self.keep_prob, 0.0, 1.0, low_open=True)
        if self.n_masks < 1:
            problems.append(f"n_masks: {self.n_masks} must be ≥ 1")
        check_range(problems, "rank_fraction", self.rank_fraction, 0.0, 1.0, low_open=True)
        check_range(problems, "ssl_prob", self.ssl_prob, 0.0, 1.0)
        if self.ssl_bank < 0:
            problems.append(f"ssl_bank: {self.ssl_bank} must be ≥ 0 (0 = fresh masks every batch)")
        if self.chunk < 1:
            problems.append(f"chunk: {self.chunk} must be ≥ 1")
        return problems


def to_matrices(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) → (N, H, W·C): the channels side by side (R | G | B)."""
    n, c, h, w = images.shape
    return images.permute(0, 2, 1, 3).reshape(n, h, c * w)


def from_matrices(matrices: torch.Tensor, channels: int) -> torch.Tensor:
    """Inverse of :func:`to_matrices`."""
    n, h, cw = matrices.shape
    return matrices.reshape(n, h, channels, cw // channels).permute(0, 2, 1, 3).contiguous()


def kept_rank(m: int, n: int, rank_fraction: float) -> int:
    """Singular values kept for an m × n matrix: ⌊rank_fraction · min(m, n)⌋, at least 1."""
    return max(1, math.floor(rank_fraction * min(m, n) + 1e-9))


def usvt(observed: torch.Tensor, p_hat: torch.Tensor, *, rank_fraction: float) -> torch.Tensor:
    """Low-rank estimate of a batch of zero-filled masked matrices (B, m, n) with observed fractions
    ``p_hat`` (B,): the top :func:`kept_rank` singular triplets, rescaled by 1/p̂."""
    u, s, vh = torch.linalg.svd(observed, full_matrices=False)
    rank = kept_rank(observed.shape[-2], observed.shape[-1], rank_fraction)
    return (u[..., :rank] * s[:, None, :rank]) @ vh[..., :rank, :] / p_hat[:, None, None]


def me_net(images: torch.Tensor, *, keep_prob: float, n_masks: int, rank_fraction: float = 0.8,
           generator: torch.Generator | None = None, chunk: int = 2048) -> torch.Tensor:
    """ME-Net reconstruction of a batch of images in [0, 1] (N, C, H, W), averaged over ``n_masks`` masks.

    Masks are drawn from ``generator`` on its device (a CPU generator: the same masks on any compute
    device; one on the compute device: no host-to-device copy per call); the SVDs run batched on
    ``images.device``.
    """
    n, c, h, w = images.shape
    out = torch.empty_like(images, dtype=torch.float32)
    per_chunk = max(1, chunk // n_masks)
    for start in range(0, n, per_chunk):
        x = images[start : start + per_chunk].float() * 2 - 1  # [-1, 1]: missing entries read as 0
        b = x.shape[0]
        draw_on = generator.device if generator is not None else None
        mask = (torch.rand(b, n_masks, 1, h, w, generator=generator, device=draw_on) < keep_prob).to(x.device, torch.float32)
        masked = (x[:, None] * mask).reshape(b * n_masks, c, h, w)
        p_hat = mask.reshape(b * n_masks, -1).mean(dim=1).clamp_min(1.0 / (h * w))
        recon = usvt(to_matrices(masked), p_hat, rank_fraction=rank_fraction).clamp(-1, 1)
        recon = from_matrices(recon, c).reshape(b, n_masks, c, h, w).mean(dim=1)
        out[start : start + b] = (recon + 1) / 2
    return out.to(images.dtype)


def reconstruction_bank(images: torch.Tensor, *, copies: int, keep_prob: float, n_masks: int,
                        rank_fraction: float = 0.8, generator: torch.Generator | None = None,
                        chunk: int = 2048) -> torch.Tensor:
    """``copies`` ME-Net reconstructions of every image: (copies, N, C, H, W), ``images``' dtype and device.

    Each entry is :func:`me_net` of its image with its own ``n_masks`` masks. Built chunk by chunk (at most
    ``chunk`` matrices per SVD), so beyond the bank itself the memory is one chunk's.
    """
    bank = torch.empty((copies, *images.shape), dtype=images.dtype, device=images.device)
    per_chunk = max(1, chunk // n_masks)
    for start in range(0, len(images), per_chunk):
        part = images[start : start + per_chunk]
        for j in range(copies):
            bank[j, start : start + len(part)] = me_net(part, keep_prob=keep_prob, n_masks=n_masks,
                                                        rank_fraction=rank_fraction, generator=generator, chunk=chunk)
    return bank


class ReconstructionBank:
    """The ``ssl_bank`` mode's per-batch transform: each image of a batch (given its index into the set the
    bank was built from) becomes one of its ``len(bank)`` reconstructions at random, with probability
    ``prob`` (else it stays clean). Draws from ``generator``, on the bank's device; no host sync."""

    def __init__(self, bank: torch.Tensor, *, prob: float, generator: torch.Generator) -> None:
        self.bank, self.prob, self.generator = bank, prob, generator

    def __call__(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        n, device = len(idx), self.bank.device
        choice = torch.randint(len(self.bank), (n,), device=device, generator=self.generator)
        out = self.bank[choice, idx]
        if self.prob >= 1.0:
            return out
        pick = torch.rand(n, device=device, generator=self.generator) < self.prob
        return torch.where(pick.view(-1, 1, 1, 1), out, x)


def reconstruction_report(images: torch.Tensor, reconstructed: torch.Tensor, *, rank_fraction: float) -> dict[str, float]:
    """Whether a reconstruction kept the images: relative error ‖x̂ − x‖_F / ‖x‖_F (in [-1, 1] units, as
    ME-Net works) and the number of singular values each masked matrix kept."""
    x, r = images.float() * 2 - 1, reconstructed.float() * 2 - 1
    _, c, h, w = images.shape
    return {"relative_error": float((r - x).norm() / x.norm().clamp_min(1e-12)),
            "kept_rank": float(kept_rank(h, w * c, rank_fraction))}


@register_defense
class MatrixCompletion(Defense[MatrixCompletionConfig]):
    id = "matrix_completion"
    # one SVD per image, channel and mask; in pre-training fresh masks for every batch image every epoch (with
    # ssl_prob < 1 the unpicked reconstructions are discarded: no data-dependent subset, no host sync), or
    # (ssl_bank k ≥ 1) k reconstructions of every image once before training; none when ssl_prob is 0
    cost: ClassVar[Mapping[str, Any]] = {"downstream": {"head": {}, "data": {"svds": "n_masks * n"}},
            "pretrain-availability": {"svds": "0 if ssl_prob <= 0 else n_masks * (ssl_bank * n if ssl_bank > 0 else encoder_epochs * n)",
                                      "supervised_svds": "n_masks * n"},
            "pretrain-targeted": {"svds": "0 if ssl_prob <= 0 else n_masks * (ssl_bank * n if ssl_bank > 0 else encoder_epochs * n)",
                                  "supervised_svds": "n_masks * n"},
            "pretrain-backdoor": {"svds": "0 if ssl_prob <= 0 else n_masks * (ssl_bank * n if ssl_bank > 0 else encoder_epochs * n)"}}
    stage = "data"
    tracks = ("downstream", "pretrain-availability", "pretrain-targeted", "pretrain-backdoor")
    Config = MatrixCompletionConfig
    citation = "Yang et al., ME-Net: Towards Effective Adversarial Robustness with Matrix Estimation, ICML 2019"
    paper_url = "https://arxiv.org/abs/1905.11971"
    config: MatrixCompletionConfig

    @property
    def transform_test(self) -> bool:
        """Whether the victim also reconstructs its test inputs (the downstream track reads this)."""
        return self.config.transform_test

    def reconstruct(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        cfg = self.config
        return me_net(images, keep_prob=cfg.keep_prob, n_masks=cfg.n_masks, rank_fraction=cfg.rank_fraction,
                      generator=generator, chunk=cfg.chunk)

    def transform_images(self, images: torch.Tensor, ctx: DefenseContext) -> torch.Tensor:
        return self.reconstruct(images, ctx.generator)

    def ssl_hooks(self, ssl: Any, ctx: DefenseContext) -> SSLTrainingHooks:
        if self.config.ssl_bank > 0:
            return SSLTrainingHooks(prepare=lambda images: self.prepare_bank(images, int(ctx.seed)))
        if self.config.ssl_prob <= 0.0:  # nothing is ever reconstructed
            return SSLTrainingHooks()
        # fresh masks every batch, drawn on the compute device (on a CPU: the CPU stream it always used)
        generator = torch.Generator(device=ctx.device).manual_seed(int(ctx.seed))
        prob = self.config.ssl_prob

        def batch_transform(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                if prob >= 1.0:
                    return self.reconstruct(x, generator)
                # every image is reconstructed and the picked ones kept: a data-dependent subset would
                # cost a host sync per batch (the SVDs of the others are the price, (1 − ssl_prob) of them)
                pick = torch.rand(len(x), generator=generator, device=generator.device) < prob
                return torch.where(pick.view(-1, 1, 1, 1), self.reconstruct(x, generator), x)

        return SSLTrainingHooks(batch_transform=batch_transform)

    def prepare_bank(self, images: torch.Tensor, seed: int) -> IndexedTransform:
        """The ``ssl_bank`` hook for one pre-training image set: its bank (masks seeded from ``seed`` and the
        set's shape, so the main and the injected set differ) and the seeded per-batch draws."""
        cfg, shape = self.config, list(images.shape)
        if cfg.ssl_prob <= 0.0:
            return lambda x, idx: x
        masks = torch.Generator().manual_seed(derive_seed(seed, "me-net-bank", shape))
        draws = torch.Generator(device=images.device).manual_seed(derive_seed(seed, "me-net-bank-draws", shape))
        with torch.no_grad():
            bank = reconstruction_bank(images, copies=cfg.ssl_bank, keep_prob=cfg.keep_prob, n_masks=cfg.n_masks,
                                       rank_fraction=cfg.rank_fraction, generator=masks, chunk=cfg.chunk)
        return ReconstructionBank(bank, prob=cfg.ssl_prob, generator=draws)


__all__ = ["MatrixCompletion", "MatrixCompletionConfig", "ReconstructionBank", "kept_rank", "me_net",
           "reconstruction_bank", "reconstruction_report", "usvt"]
