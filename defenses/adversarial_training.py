"""Adversarial training. Madry, Makelov, Schmidt, Tsipras, Vladu, "Towards Deep Learning Models
Resistant to Adversarial Attacks", ICLR 2018 (PGD-AT); for pre-training, adversarial contrastive learning:
Kim, Tack, Hwang, "Adversarial Self-Supervised Contrastive Learning", NeurIPS 2020 and Jiang, Chen, Chen,
Wang, "Robust Pre-Training by Adversarial Contrastive Learning", NeurIPS 2020 (ACL).

Threat model: the defender controls the victim's training only, on its training set as given (poisons unmarked).
Objective: min over the model of the loss at x + δ*, δ* by ℓ∞ PGD with a random start maximising that loss
(pixels kept in [0, 1]; the starts drawn from a generator of their own, on the data's device).
* :meth:`fit_head` (downstream): PGD (``steps`` of ``step_size`` in ``epsilon``) through the frozen extractor; Adam
  on the linear head for ``epochs`` epochs, the victim's L2 weight on W. ``epsilon = 0`` (``reference_settings``) is
  the same training, with the same batch order, without the adversary: the track measures the cost against it.
* :meth:`fit_supervised`: the same PGD-AT for a supervised victim, on ``supervised_epochs`` and ``supervised_lr``.
* :meth:`ssl_hooks` (pre-training): PGD (``ssl_steps`` of ``ssl_step_size`` in ``ssl_epsilon``) on both views
  jointly, maximising the SSL method's own loss; the loss is ½(clean + adversarial) (ACL's A2A pair). Batch
  statistics and queues see the PGD passes; momentum encoders are updated once per optimiser step only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.api import (
    Defense,
    DefenseContext,
    FeatureExtractorView,
    HeadSpec,
    LinearHead,
    MethodConfig,
    SSLTrainingHooks,
    check_range,
    epoch_batches,
    fast_layout,
    fast_path,
    fit,
    register_defense,
    shuffled_batches,
)


@dataclass(frozen=True, kw_only=True)
class AdversarialTrainingConfig(MethodConfig):
    epsilon: float = 8 / 255
    step_size: float = 2 / 255
    steps: int = 10
    epochs: int = 20  # head epochs (cost measured against the same 20 epochs with ε = 0)
    lr: float = 1e-2  # Adam, head
    batch_size: int = 256
    supervised_epochs: int = 30
    supervised_lr: float = 1e-3
    ssl_epsilon: float = 8 / 255
    ssl_step_size: float = 2 / 255
    ssl_steps: int = 5

    def problems(self) -> list[str]:
        problems: list[str] = []
        for name in ("epsilon", "step_size", "ssl_epsilon", "ssl_step_size"):
            check_range(problems, name, getattr(self, name), 0.0, 1.0)
        for name in ("steps", "ssl_steps", "epochs", "supervised_epochs", "batch_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name}: {getattr(self, name)} must be ≥ 1")
        check_range(problems, "lr", self.lr, 0.0, 10.0, low_open=True)
        check_range(problems, "supervised_lr", self.supervised_lr, 0.0, 10.0, low_open=True)
        return problems


def pgd(loss_of: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *, epsilon: float, step_size: float,
        steps: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """ℓ∞ PGD with a uniform random start: x + δ (in [0, 1]) that (locally) maximises ``loss_of``.

    The start is drawn on ``x.device`` (``generator``, when given, must live there: :func:`device_generator`).
    """
    noise = torch.rand(x.shape, generator=generator, device=x.device) * 2 - 1
    delta = (noise * epsilon).to(x.dtype)
    delta = ((x + delta).clamp(0, 1) - x).detach()
    for _ in range(steps):
        delta.requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_of(x + delta), delta)
        delta = (delta.detach() + step_size * grad.sign()).clamp(-epsilon, epsilon)
        delta = ((x + delta).clamp(0, 1) - x).detach()
    return (x + delta).detach()


def _fast(module: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``module(x)`` in the device's fast path (bf16 autocast, channels_last on CUDA), returned as fp32."""
    with fast_path(device):
        return module(fast_layout(x, device)).float()


def device_generator(device: torch.device | str, seed: int) -> torch.Generator:
    """A generator on ``device`` (random starts drawn where the data is), seeded with ``seed``."""
    return torch.Generator(device=device).manual_seed(seed)


def _attack_generator(ctx: DefenseContext) -> torch.Generator:
    """PGD's random starts: a stream of its own, so that the batch order (``ctx.generator``) is the same
    with ε = 0 (the same-schedule reference victim) as with the defense on."""
    return device_generator(ctx.device, int(ctx.seed) ^ 0x5EED)


@register_defense
class AdversarialTraining(Defense[AdversarialTrainingConfig]):
    id = "adversarial_training"
    # downstream: every epoch PGD through the encoder (``steps`` passes) and a forward of the adversarial batch (its
    # same-schedule reference, ε = 0, is the forward alone); pre-training: ACL's PGD steps on both views, and PGD
    # in the supervised victim's training
    cost: ClassVar[Mapping[str, Any]] = {"downstream": {"head": {"passes": "epochs * n * (steps + 2 / 3)"}},
            "pretrain-availability": {"ssl_factor": "1 + ssl_steps", "supervised_factor": "1 + steps"},
            "pretrain-targeted": {"ssl_factor": "1 + ssl_steps", "supervised_factor": "1 + steps"},
            "pretrain-backdoor": {"ssl_factor": "1 + ssl_steps"}}
    stage = "training"
    tracks = ("downstream", "pretrain-availability", "pretrain-targeted", "pretrain-backdoor")
    Config = AdversarialTrainingConfig
    citation = "Madry et al., Towards Deep Learning Models Resistant to Adversarial Attacks, ICLR 2018"
    paper_url = "https://arxiv.org/abs/1706.06083"
    reference_settings: ClassVar[Mapping[str, Any] | None] = {"epsilon": 0.0, "ssl_epsilon": 0.0}  # the same training, no adversary
    config: AdversarialTrainingConfig

    # ------------------------------------------------------------------------------------ heads
    def fit_head(self, extractor: FeatureExtractorView, images: torch.Tensor, labels: torch.Tensor,
                 head: HeadSpec, ctx: DefenseContext) -> LinearHead:
        cfg, device = self.config, ctx.device
        layer = nn.Linear(extractor.feature_dim, head.num_classes).to(device)
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)
        optimizer = torch.optim.Adam(layer.parameters(), lr=cfg.lr)
        data, targets = images.to(device), labels.to(device)
        attack_generator = _attack_generator(ctx)  # batch order alone comes from ctx.generator

        def loss(idx: torch.Tensor) -> torch.Tensor:  # the step: the head's loss on PGD examples of the batch
            x, y = data[idx], targets[idx]
            w, b = layer.weight.detach(), layer.bias.detach()
            if cfg.epsilon > 0:
                x = pgd(lambda z: F.cross_entropy(_fast(extractor, z, device) @ w.T + b, y), x,
                        epsilon=cfg.epsilon, step_size=cfg.step_size, steps=cfg.steps, generator=attack_generator)
            with torch.no_grad():
                feats = _fast(extractor, x, device)
            return F.cross_entropy(layer(feats), y) + 0.5 * head.l2 * layer.weight.pow(2).sum()

        fit(optimizer, epoch_batches(cfg.epochs, lambda _: shuffled_batches(len(data), cfg.batch_size, ctx.generator,
                                                                             device=device)), loss)
        return LinearHead(layer.weight.detach().clone(), layer.bias.detach().clone())

    def fit_supervised(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, ctx: DefenseContext,
                       train: Callable[..., nn.Module]) -> nn.Module:
        cfg, device = self.config, ctx.device
        model = fast_layout(model.to(device), device)
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.supervised_lr)
        data, targets = images.to(device), labels.to(device)
        attack_generator = _attack_generator(ctx)

        def loss(idx: torch.Tensor) -> torch.Tensor:  # the step: the model's loss on PGD examples of the batch
            x, y = data[idx], targets[idx]
            if cfg.epsilon > 0:
                model.eval()  # the attack sees the model as it will be evaluated (BN running stats)
                x = pgd(lambda z: F.cross_entropy(_fast(model, z, device), y), x, epsilon=cfg.epsilon,
                        step_size=cfg.step_size, steps=cfg.steps, generator=attack_generator)
            model.train()
            return F.cross_entropy(_fast(model, x, device), y)

        fit(optimizer, epoch_batches(cfg.supervised_epochs, lambda _: shuffled_batches(
            len(data), cfg.batch_size, ctx.generator, device=device)), loss)
        return model.eval()

    # ------------------------------------------------------------------------------------ pre-training
    def ssl_hooks(self, ssl: Any, ctx: DefenseContext) -> SSLTrainingHooks:
        cfg = self.config
        generators: dict[torch.device, torch.Generator] = {}  # on the views' device, made at the first batch

        def loss_fn(model: Any, clean: torch.Tensor, v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
            n = len(v1)
            views = torch.cat([v1, v2]).detach()
            if views.device not in generators:
                generators[views.device] = device_generator(views.device, int(ctx.seed))
            adv = pgd(lambda z: model.loss(z[:n], z[n:]), views, epsilon=cfg.ssl_epsilon,
                      step_size=cfg.ssl_step_size, steps=cfg.ssl_steps, generator=generators[views.device])
            return 0.5 * (model.loss(v1, v2) + model.loss(adv[:n], adv[n:]))

        return SSLTrainingHooks(loss_fn=loss_fn)
