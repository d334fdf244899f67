"""BYOL. Grill et al., "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning",
NeurIPS 2020.

An online network (backbone, projector, predictor) regresses the projection of the other view produced
by a target network, an EMA of the online backbone + projector; no negatives. The loss is a mean of
per-sample terms (2 − 2 cos), so with per-sample normalisation (``norm="group"`` and a GroupNorm backbone)
it is DP-SGD compatible. ``dual_branch`` lets input gradients flow through the target branch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.plugin_base import MethodConfig, check_range
from benchmark.ssl.base import SSLMethod, ema_update, mlp, momentum_copy, register_ssl


@dataclass(frozen=True, kw_only=True)
class BYOLConfig(MethodConfig):
    momentum: float = 0.99
    proj_hidden: int = 4096
    proj_dim: int = 256
    norm: str = "batch"

    def problems(self) -> list[str]:
        problems: list[str] = []
        check_range(problems, "momentum", self.momentum, 0.0, 1.0, high_open=True)
        for name in ("proj_hidden", "proj_dim"):
            check_range(problems, name, getattr(self, name), 1, 1 << 16)
        return problems


@register_ssl
class BYOL(SSLMethod):
    id = "byol"
    Config = BYOLConfig
    citation = "Grill et al., Bootstrap Your Own Latent, NeurIPS 2020"
    per_sample_loss = True

    def __init__(self, backbone: nn.Module, config: BYOLConfig) -> None:
        super().__init__(backbone, config)
        self.projector = mlp(backbone.feature_dim, config.proj_hidden, config.proj_dim, norm=config.norm)
        self.predictor = mlp(config.proj_dim, config.proj_hidden, config.proj_dim, norm=config.norm)
        self.online = nn.Sequential(self.backbone, self.projector)
        self.target = momentum_copy(self.online)

    def _target(self, view: torch.Tensor, dual_branch: bool) -> torch.Tensor:
        with torch.set_grad_enabled(dual_branch and torch.is_grad_enabled()):
            return self.target(view)

    def per_sample_losses(self, view1: torch.Tensor, view2: torch.Tensor, *, dual_branch: bool = False) -> torch.Tensor:
        p1, p2 = self.predictor(self.online(view1)), self.predictor(self.online(view2))
        t1, t2 = self._target(view1, dual_branch), self._target(view2, dual_branch)
        return (2 - 2 * F.cosine_similarity(p1, t2, dim=1)) + (2 - 2 * F.cosine_similarity(p2, t1, dim=1))

    def loss(self, view1: torch.Tensor, view2: torch.Tensor, *, dual_branch: bool = False) -> torch.Tensor:
        return self.per_sample_losses(view1, view2, dual_branch=dual_branch).mean()

    @torch.no_grad()
    def after_step(self) -> None:
        ema_update(self.target, self.online, self.config.momentum)
