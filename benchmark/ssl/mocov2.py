"""MoCo v2. Chen, Fan, Girshick, He, "Improved Baselines with Momentum Contrastive Learning", 2020
(after He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020).

A query encoder (backbone + MLP projector) is trained with InfoNCE against keys from a momentum (EMA)
copy of itself; negatives come from a FIFO queue of past keys. The loss is symmetrised over the two views.
With ``dual_branch`` the key branch is computed with gradients w.r.t. its input (CP's dual-branch scheme).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.plugin_base import MethodConfig, check_range
from benchmark.ssl.base import SSLMethod, ema_update, mlp, momentum_copy, register_ssl


@dataclass(frozen=True, kw_only=True)
class MoCoV2Config(MethodConfig):
    temperature: float = 0.2
    queue_size: int = 4096
    momentum: float = 0.99
    proj_hidden: int = 512
    proj_dim: int = 128
    norm: str = "batch"

    def problems(self) -> list[str]:
        problems: list[str] = []
        check_range(problems, "temperature", self.temperature, 0.0, 10.0, low_open=True)
        check_range(problems, "momentum", self.momentum, 0.0, 1.0, high_open=True)
        for name in ("proj_hidden", "proj_dim"):
            check_range(problems, name, getattr(self, name), 1, 1 << 16)
        if self.queue_size < 1:
            problems.append(f"queue_size: {self.queue_size} must be ≥ 1")
        return problems


@register_ssl
class MoCoV2(SSLMethod):
    id = "mocov2"
    Config = MoCoV2Config
    citation = "Chen et al., Improved Baselines with Momentum Contrastive Learning, arXiv:2003.04297, 2020"

    def __init__(self, backbone: nn.Module, config: MoCoV2Config) -> None:
        super().__init__(backbone, config)
        self.projector = mlp(backbone.feature_dim, config.proj_hidden, config.proj_dim, norm=config.norm)
        self.online = nn.Sequential(self.backbone, self.projector)
        self.key_encoder = momentum_copy(self.online)
        self.register_buffer("queue", F.normalize(torch.randn(config.queue_size, config.proj_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self._pending_keys: torch.Tensor | None = None

    def _keys(self, view: torch.Tensor, dual_branch: bool) -> torch.Tensor:
        with torch.set_grad_enabled(dual_branch and torch.is_grad_enabled()):
            return F.normalize(self.key_encoder(view), dim=1)

    def _infonce(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        positive = (q * k).sum(dim=1, keepdim=True)
        negative = q @ self.queue.clone().T
        logits = torch.cat([positive, negative], dim=1) / self.config.temperature
        return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))

    def loss(self, view1: torch.Tensor, view2: torch.Tensor, *, dual_branch: bool = False) -> torch.Tensor:
        q1 = F.normalize(self.online(view1), dim=1)
        q2 = F.normalize(self.online(view2), dim=1)
        k1, k2 = self._keys(view1, dual_branch), self._keys(view2, dual_branch)
        self._pending_keys = torch.cat([k1, k2]).detach()
        return 0.5 * (self._infonce(q1, k2) + self._infonce(q2, k1))

    @torch.no_grad()
    def after_step(self) -> None:
        ema_update(self.key_encoder, self.online, self.config.momentum)
        if self._pending_keys is not None:
            self._enqueue(self._pending_keys)
            self._pending_keys = None

    def _enqueue(self, keys: torch.Tensor) -> None:
        size = self.queue.shape[0]
        keys = keys[:size].to(self.queue.dtype)
        idx = (torch.arange(len(keys), device=keys.device) + self.queue_ptr) % size  # no host sync
        self.queue.index_copy_(0, idx, keys)
        self.queue_ptr.copy_((self.queue_ptr + len(keys)) % size)
