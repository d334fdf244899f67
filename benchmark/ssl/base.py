"""The SSL method base class, its registry and the pieces the methods share (see :mod:`benchmark.ssl`)."""

from __future__ import annotations

import copy
from typing import ClassVar

import torch
from torch import nn

from benchmark.plugin_base import MethodConfig
from benchmark.registry import Registry

SSL_METHODS: Registry[type[SSLMethod]] = Registry("ssl method")


def register_ssl(cls: type[SSLMethod]) -> type[SSLMethod]:
    return SSL_METHODS.register(cls.id, cls)


class SSLMethod(nn.Module):
    """Base of SimCLR / MoCo v2 / BYOL: ``backbone`` is the released encoder."""

    id: ClassVar[str]
    Config: ClassVar[type[MethodConfig]]
    citation: ClassVar[str] = ""
    per_sample_loss: ClassVar[bool] = False  # True when the loss is a mean of independent per-sample terms

    def __init__(self, backbone: nn.Module, config: MethodConfig) -> None:
        super().__init__()
        self.backbone = backbone
        self.config = config

    def loss(self, view1: torch.Tensor, view2: torch.Tensor, *, dual_branch: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def per_sample_losses(self, view1: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
        """(N,) losses whose mean is ``loss``; defined only where ``per_sample_loss`` is True."""
        raise NotImplementedError(f"{self.id}'s loss couples the samples of a batch")

    @torch.no_grad()
    def after_step(self) -> None:
        """Bookkeeping after an optimiser step (momentum update, queue); nothing by default."""


def mlp(in_dim: int, hidden: int, out: int, *, norm: str = "batch") -> nn.Sequential:
    """Projector/predictor MLP: linear → norm → ReLU → linear. ``norm="group"`` keeps it per-sample."""
    norm_layer: nn.Module = nn.BatchNorm1d(hidden) if norm == "batch" else nn.LayerNorm(hidden)
    return nn.Sequential(nn.Linear(in_dim, hidden), norm_layer, nn.ReLU(inplace=True), nn.Linear(hidden, out))


def momentum_copy(module: nn.Module) -> nn.Module:
    """A frozen copy of ``module`` for an exponential-moving-average target branch."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """target ← momentum · target + (1 − momentum) · online, buffers copied: one fused ``torch._foreach_*``
    call per step (no Python loop over parameters, no host sync)."""
    targets, onlines = list(target.parameters()), [p.detach() for p in online.parameters()]
    if len(targets) != len(onlines):
        raise ValueError(f"ema_update: {len(targets)} target parameters vs {len(onlines)} online ones")
    torch._foreach_mul_(targets, momentum)
    torch._foreach_add_(targets, onlines, alpha=1.0 - momentum)
    target_buffers, online_buffers = list(target.buffers()), list(online.buffers())
    if target_buffers:
        torch._foreach_copy_(target_buffers, online_buffers)


def create_ssl_method(method: str, backbone: nn.Module, settings: dict | None = None) -> SSLMethod:
    """Build SSL method ``method`` around ``backbone`` with its ``Config(**settings)``."""
    cls = SSL_METHODS.get(method)
    return cls(backbone, cls.Config(**(settings or {})))


def ssl_method_names() -> list[str]:
    return SSL_METHODS.names()
