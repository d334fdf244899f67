"""Matrix-completion preprocessing (ME-Net). Yang, Zhang, Katabi, Xu, "ME-Net: Towards Effective
Adversarial Robustness with Matrix Estimation", ICML 2019; used as a defense against contrastive poisoning
by He, Zha, Katabi, "Indiscriminate Poisoning Attacks on Unsupervised Contrastive Learning", ICLR 2023.

Every image is mapped to [-1, 1] and written as the channel-concatenated matrix X of shape H × (W·C)
(R | G | B side by side). A random pixel mask with keep-probability ``p`` (one mask per pixel, shared by
the channels) zeroes the rest; Universal Singular Value Thresholding (USVT, Chatterjee 2015) keeps the
singular values of the masked matrix above ``(2 + eta)·sqrt(max(H, W·C)·p̂)·σ̂`` (σ̂ the RMS of the observed
entries; at most ``max_rank`` of them) and rescales by 1/p̂ (p̂ the observed fraction of that mask), clipped to [-1, 1]. ``n_masks``
reconstructions with independent masks are averaged. Everything is batched: one ``torch.linalg.svd``
over (images × masks) matrices per chunk, never a loop over images.

Where it acts:

* downstream track: :meth:`transform_images` preprocesses the victim's whole training set (clean and
  poisoned alike, the defense cannot tell them apart). ME-Net also preprocesses at inference, so with
  ``transform_test = True`` (default) the track reconstructs the test images the same way (fresh masks).
* pre-training tracks: :meth:`ssl_hooks` returns a ``batch_transform`` that replaces each image of a
  pre-training batch by its reconstruction with probability ``ssl_prob`` (default 1: always, as the CP
  paper's "ME-Net as augmentation" preprocesses the whole poisoned pre-training set), before the SSL
  augmentations draw the two views. The released encoder then sees plain images at test time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from benchmark.api import DefenseContext, Defense, MethodConfig, check_range, register_defense
from benchmark.pretrain import SSLTrainingHooks


@dataclass(frozen=True, kw_only=True)
class MatrixCompletionConfig(MethodConfig):
    keep_prob: float = 0.5  # p: probability that a pixel is observed (ME-Net uses p in ~[0.25, 0.6])
    n_masks: int = 10  # independent masks per image, reconstructions averaged
    eta: float = 0.01  # USVT threshold (2 + eta)·sqrt(max(H, W·C)·p)·RMS(observed entries)
    max_rank: int = 0  # additionally keep at most this many singular values (0 = no cap)
    transform_test: bool = True  # reconstruct test images too (ME-Net preprocesses at inference)
    ssl_prob: float = 1.0  # pre-training: probability that an image of a batch is reconstructed
    chunk: int = 2048  # matrices per batched SVD

    def problems(self) -> list[str]:
        problems: list[str] = []
        check_range(problems, "keep_prob", self.keep_prob, 0.0, 1.0, low_open=True)
        if self.n_masks < 1:
            problems.append(f"n_masks: {self.n_masks} must be ≥ 1")
        check_range(problems, "eta", self.eta, 0.0, 100.0)
        if self.max_rank < 0:
            problems.append(f"max_rank: {self.max_rank} must be ≥ 0 (0 = no cap)")
        check_range(problems, "ssl_prob", self.ssl_prob, 0.0, 1.0)
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


def usvt(observed: torch.Tensor, p_hat: torch.Tensor, *, eta: float, max_rank: int) -> torch.Tensor:
    """USVT of a batch of zero-filled masked matrices (B, m, n) with observed fractions ``p_hat`` (B,).

    Chatterjee's threshold (2 + eta)·sqrt(max(m, n)·p) assumes entries bounded by 1; it is scaled here by
    the RMS of the observed entries (σ̂), which keeps it meaningful for small, low-contrast images (with
    the unscaled bound a 16 × 48 matrix loses every singular value)."""
    u, s, vh = torch.linalg.svd(observed, full_matrices=False)
    rms = observed.pow(2).sum(dim=(-2, -1)).div(p_hat * observed.shape[-2] * observed.shape[-1]).sqrt()
    threshold = (2.0 + eta) * torch.sqrt(max(observed.shape[-2:]) * p_hat) * rms
    keep = s >= threshold[:, None]
    if max_rank > 0:
        keep[:, max_rank:] = False
    s = torch.where(keep, s, torch.zeros_like(s))
    return (u * s[:, None, :]) @ vh / p_hat[:, None, None]


def me_net(images: torch.Tensor, *, keep_prob: float, n_masks: int, eta: float = 0.01, max_rank: int = 0,
           generator: torch.Generator | None = None, chunk: int = 2048) -> torch.Tensor:
    """ME-Net reconstruction of a batch of images in [0, 1] (N, C, H, W), averaged over ``n_masks`` masks.

    Masks are drawn on the CPU from ``generator`` (reproducible on any device); the SVDs run batched on
    ``images.device``.
    """
    n, c, h, w = images.shape
    out = torch.empty_like(images, dtype=torch.float32)
    per_chunk = max(1, chunk // n_masks)
    for start in range(0, n, per_chunk):
        x = images[start : start + per_chunk].float() * 2 - 1  # [-1, 1]: missing entries read as 0
        b = x.shape[0]
        mask = (torch.rand(b, n_masks, 1, h, w, generator=generator) < keep_prob).to(x.device, torch.float32)
        masked = (x[:, None] * mask).reshape(b * n_masks, c, h, w)
        p_hat = mask.reshape(b * n_masks, -1).mean(dim=1).clamp_min(1.0 / (h * w))
        recon = usvt(to_matrices(masked), p_hat, eta=eta, max_rank=max_rank).clamp(-1, 1)
        recon = from_matrices(recon, c).reshape(b, n_masks, c, h, w).mean(dim=1)
        out[start : start + b] = (recon + 1) / 2
    return out.to(images.dtype)


@register_defense
class MatrixCompletion(Defense):
    id = "matrix_completion"
    stage = "data"
    tracks = ("downstream", "pretrain-availability", "pretrain-targeted")
    Config = MatrixCompletionConfig
    citation = "Yang et al., ME-Net: Towards Effective Adversarial Robustness with Matrix Estimation, ICML 2019"
    config: MatrixCompletionConfig

    @property
    def transform_test(self) -> bool:
        """Whether the victim also reconstructs its test inputs (the downstream track reads this)."""
        return self.config.transform_test

    def reconstruct(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        cfg = self.config
        return me_net(images, keep_prob=cfg.keep_prob, n_masks=cfg.n_masks, eta=cfg.eta, max_rank=cfg.max_rank,
                      generator=generator, chunk=cfg.chunk)

    def transform_images(self, images: torch.Tensor, ctx: DefenseContext) -> torch.Tensor:
        return self.reconstruct(images, ctx.generator)

    def ssl_hooks(self, ssl: Any, ctx: DefenseContext) -> SSLTrainingHooks:
        generator = torch.Generator().manual_seed(int(ctx.seed))
        prob = self.config.ssl_prob

        def batch_transform(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                if prob >= 1.0:
                    return self.reconstruct(x, generator)
                pick = (torch.rand(len(x), generator=generator) < prob).to(x.device)
                if not bool(pick.any()):
                    return x
                out = x.clone()
                out[pick] = self.reconstruct(x[pick], generator)
                return out

        return SSLTrainingHooks(batch_transform=batch_transform)


__all__ = ["MatrixCompletion", "MatrixCompletionConfig", "me_net", "usvt"]
