"""SimCLR. Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020.

NT-Xent (InfoNCE) over the 2N views of a batch: each view's positive is the other view of its image, the
other 2N − 2 views are negatives. The loss couples all samples of a batch, so DP-SGD is not defined for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.plugin_base import MethodConfig, check_range
from benchmark.ssl.base import SSLMethod, mlp, register_ssl


@dataclass(frozen=True, kw_only=True)
class SimCLRConfig(MethodConfig):
    temperature: float = 0.5
    proj_hidden: int = 512
    proj_dim: int = 128
    norm: str = "batch"

    def problems(self) -> list[str]:
        problems: list[str] = []
        check_range(problems, "temperature", self.temperature, 0.0, 10.0, low_open=True)
        for name in ("proj_hidden", "proj_dim"):
            check_range(problems, name, getattr(self, name), 1, 1 << 16)
        return problems


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """The normalised-temperature cross-entropy of SimCLR for two (N, D) batches of projections."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = z @ z.T / temperature
    n = z1.shape[0]
    logits.fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, targets)


@register_ssl
class SimCLR(SSLMethod):
    id = "simclr"
    Config = SimCLRConfig
    citation = "Chen et al., A Simple Framework for Contrastive Learning of Visual Representations, ICML 2020"

    def __init__(self, backbone: nn.Module, config: SimCLRConfig) -> None:
        super().__init__(backbone, config)
        self.projector = mlp(backbone.feature_dim, config.proj_hidden, config.proj_dim, norm=config.norm)

    def loss(self, view1: torch.Tensor, view2: torch.Tensor, *, dual_branch: bool = False) -> torch.Tensor:
        z1 = self.projector(self.backbone(view1))
        z2 = self.projector(self.backbone(view2))
        return nt_xent(z1, z2, self.config.temperature)
