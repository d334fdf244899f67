"""DP-SGD. Abadi, Chu, Goodfellow, McMahan, Mironov, Talwar, Zhang, "Deep Learning with Differential
Privacy", CCS 2016; implemented with Opacus (Yousefpour et al., "Opacus: User-Friendly Differential
Privacy Library in PyTorch", 2021).

Threat model: the defender controls the victim's training only, on its training set as given (poisons unmarked).
Algorithm (all Opacus's, nothing hand-written): per-sample gradient clipping to norm ``max_grad_norm`` (C), Gaussian
noise of std ``noise_multiplier``·C, Poisson-sampled batches, privacy by Opacus's RDP accountant. ``privacy()``
reports ε at δ = 1/N (N the victim's training points, poisons included), steps and sample rate. The cost is measured
against ``reference_settings`` (σ = 0, C = 10⁶: the same Opacus training without noise or effective clipping).
* :meth:`fit_head`: an ``nn.Linear`` on the frozen features, SGD, the head's L2 as weight decay on W.
* :meth:`fit_supervised`: the same on a supervised victim (``ModuleValidator.fix``: BatchNorm becomes GroupNorm).
* :meth:`ssl_hooks`: only where the SSL loss is a mean of per-sample terms (BYOL with ``norm="group"``): Opacus's
  ``GradSampleModule`` (both views add to their image's per-sample gradient) and ``DPOptimizer``, sample rate
  batch / N; the batches are shuffled, fixed-size, so ε is the usual Poisson accountant's, not a shuffling bound.
  SimCLR, MoCo v2 (the loss couples the batch) and BYOL with BatchNorm are ``unsupported``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from benchmark.api import (
    SSL_METHODS,
    Defense,
    DefenseContext,
    FeatureExtractorView,
    HeadSpec,
    LinearHead,
    MethodConfig,
    SSLTrainingHooks,
    epoch_batches,
    fit,
    make_optimizer,
    register_defense,
)

KNOWN_WARNINGS = (
    # Opacus's non-cryptographic noise: deliberate here, the noise is drawn from a seeded generator so that a
    # cell can be re-computed (``verify``); a deployment would turn ``secure_mode`` on.
    r"Secure RNG turned off",
    # The head is trained on fixed features that need no gradient: the hook fires on the module's outputs.
    r"Full backward hook is firing when gradients are computed with respect to module outputs",
)
"""Warnings this defense causes by design, silenced here (in its plugin process) and nowhere else."""
for _message in KNOWN_WARNINGS:
    warnings.filterwarnings("ignore", message=_message, category=UserWarning)


@dataclass(frozen=True, kw_only=True)
class DPSGDConfig(MethodConfig):
    noise_multiplier: float = 1.0  # σ
    max_grad_norm: float = 1.0  # C
    epochs: int = 20  # head epochs
    lr: float = 0.5  # SGD, head
    momentum: float = 0.9
    batch_size: int = 256  # expected (Poisson) batch size
    supervised_epochs: int = 20
    supervised_lr: float = 0.1

    def problems(self) -> list[str]:
        problems: list[str] = []
        if self.noise_multiplier < 0:
            problems.append(f"noise_multiplier: {self.noise_multiplier!r} must be ≥ 0 (σ)")
        if self.max_grad_norm <= 0:
            problems.append(f"max_grad_norm: {self.max_grad_norm!r} must be > 0 (C)")
        for name in ("epochs", "supervised_epochs", "batch_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name}: {getattr(self, name)} must be ≥ 1")
        for name in ("lr", "supervised_lr"):
            if not 0 < getattr(self, name) <= 100:
                problems.append(f"{name}: {getattr(self, name)!r} must be in (0, 100]")
        if not 0 <= self.momentum < 1:
            problems.append(f"momentum: {self.momentum!r} must be in [0, 1)")
        return problems


def _epsilon(accountant: Any, delta: float) -> float:
    try:
        return float(accountant.get_epsilon(delta))
    except (ValueError, ZeroDivisionError):  # σ = 0: no privacy
        return float("inf")


@register_defense
class DPSGD(Defense[DPSGDConfig]):
    id = "dp_sgd"
    # per-sample gradients (Opacus hooks) ≈ twice a plain step; the downstream head's cost is not counted
    cost: ClassVar[Mapping[str, Any]] = {"downstream": {"head": {}},
            "pretrain-availability": {"ssl_factor": 2, "supervised_factor": 2},
            "pretrain-targeted": {"ssl_factor": 2, "supervised_factor": 2},
            "pretrain-backdoor": {"ssl_factor": 2}}
    stage = "training"
    tracks = ("downstream", "pretrain-availability", "pretrain-targeted", "pretrain-backdoor")
    Config = DPSGDConfig
    citation = "Abadi et al., Deep Learning with Differential Privacy, CCS 2016 (Opacus)"
    paper_url = "https://arxiv.org/abs/1607.00133"
    # the same Opacus training (Poisson batches, SGD, epochs) with no noise and no effective clipping
    reference_settings: ClassVar[Mapping[str, Any] | None] = {"noise_multiplier": 0.0, "max_grad_norm": 1.0e6}
    config: DPSGDConfig

    def __init__(self, config: DPSGDConfig | None = None) -> None:
        super().__init__(config)
        self.last_epsilon: float | None = None
        self.last_delta: float | None = None
        self.last_steps: int = 0
        self.last_sample_rate: float | None = None

    def privacy(self) -> dict[str, float]:
        """ε at δ = 1/N of the last training call, with δ, steps and sample rate."""
        return {"privacy_epsilon": self.last_epsilon, "privacy_delta": self.last_delta,
                "privacy_steps": float(self.last_steps), "privacy_sample_rate": self.last_sample_rate}

    def unsupported(self, *, track: str, encoder: Mapping[str, Any], victim: str) -> str | None:
        reason = super().unsupported(track=track, encoder=encoder, victim=victim)
        if reason or track == "downstream":
            return reason
        method = encoder["method"]
        if method in ("simclr", "mocov2"):
            return (f"DP-SGD needs a loss that is a mean of per-sample terms; {method}'s InfoNCE couples the "
                    "samples of a batch" + (" and its queue holds other samples' keys" if method == "mocov2" else ""))
        if encoder.get("norm", "batch") != "group":
            return f"DP-SGD pre-training of {method} needs norm='group' (BatchNorm couples the samples of a batch)"
        return None

    def ssl_unsupported(self, ssl: Any) -> str | None:
        """Recipe-level check (the norm is in the recipe, not in the plan's combination)."""
        if not SSL_METHODS.get(ssl.method).per_sample_loss:
            return f"DP-SGD needs a per-sample SSL loss; {ssl.method}'s couples the batch"
        if ssl.norm != "group":
            return f"DP-SGD pre-training of {ssl.method} needs norm='group' (BatchNorm couples the samples of a batch)"
        return None

    # ------------------------------------------------------------------------------------ heads
    def _record(self, accountant: Any, n: int, sample_rate: float) -> None:
        self.last_delta = 1.0 / n
        self.last_epsilon = _epsilon(accountant, self.last_delta)
        self.last_steps = sum(steps for _, _, steps in accountant.history)
        self.last_sample_rate = sample_rate

    def _private(self, module: nn.Module, optimizer: torch.optim.Optimizer, dataset: TensorDataset,
                 ctx: DefenseContext) -> tuple[Any, nn.Module, torch.optim.Optimizer, DataLoader]:
        from opacus import PrivacyEngine

        engine = PrivacyEngine(accountant="rdp")
        loader = DataLoader(dataset, batch_size=min(self.config.batch_size, len(dataset)), shuffle=True,
                            generator=ctx.generator)
        module, optimizer, loader = engine.make_private(
            module=module, optimizer=optimizer, data_loader=loader, noise_multiplier=self.config.noise_multiplier,
            max_grad_norm=self.config.max_grad_norm, noise_generator=_noise_generator(ctx), poisson_sampling=True)
        return engine, module, optimizer, loader

    @staticmethod
    def _train(module: nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader, epochs: int,
               device: torch.device) -> None:
        """Cross-entropy epochs over Opacus's Poisson-sampled loader (an empty batch is possible); the
        data stay on the CPU and each batch moves to ``device``, where the model and the noise are."""
        def batches(_: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            return ((x.to(device, non_blocking=True), y.to(device, non_blocking=True)) for x, y in loader if len(x))

        fit(optimizer, epoch_batches(epochs, batches), lambda batch: F.cross_entropy(module(batch[0]), batch[1]))

    def fit_head(self, extractor: FeatureExtractorView, images: torch.Tensor, labels: torch.Tensor,
                 head: HeadSpec, ctx: DefenseContext, features: torch.Tensor | None = None) -> LinearHead:
        """DP-SGD on the linear head; ``features`` (= extractor(images)) may be passed when cached."""
        cfg = self.config
        feats = (features if features is not None else extractor.features(images)).detach().float().cpu()
        layer = nn.Linear(feats.shape[1], head.num_classes).to(ctx.device)
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)
        optimizer = torch.optim.SGD([{"params": [layer.weight], "weight_decay": head.l2},
                                     {"params": [layer.bias], "weight_decay": 0.0}], lr=cfg.lr, momentum=cfg.momentum)
        dataset = TensorDataset(feats, labels.cpu().long())
        engine, module, optimizer, loader = self._private(layer, optimizer, dataset, ctx)
        self._train(module, optimizer, loader, cfg.epochs, ctx.device)
        self._record(engine.accountant, len(dataset), 1.0 / len(loader))
        return LinearHead(layer.weight.detach().clone(), layer.bias.detach().clone())

    def fit_supervised(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, ctx: DefenseContext,
                       train: Callable[..., nn.Module]) -> nn.Module:
        from opacus.validators import ModuleValidator

        cfg = self.config
        model = ModuleValidator.fix(model).to(ctx.device)
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=cfg.supervised_lr,
                                    momentum=cfg.momentum)
        dataset = TensorDataset(images.detach().float().cpu(), labels.cpu().long())
        engine, module, optimizer, loader = self._private(model, optimizer, dataset, ctx)
        module.train()
        self._train(module, optimizer, loader, cfg.supervised_epochs, ctx.device)
        self._record(engine.accountant, len(dataset), 1.0 / len(loader))
        return model.eval()

    # ------------------------------------------------------------------------------------ pre-training
    def ssl_hooks(self, ssl: Any, ctx: DefenseContext) -> SSLTrainingHooks:
        reason = self.ssl_unsupported(ssl)
        if reason:
            raise ValueError(reason)
        cfg = self.config
        state: dict[str, Any] = {}

        def make_dp_optimizer(model: Any, recipe: Any, n: int) -> torch.optim.Optimizer:
            from opacus import GradSampleModule
            from opacus.accountants import RDPAccountant
            from opacus.optimizers import DPOptimizer

            batch = min(recipe.batch_size, n)
            for module in model.modules():  # Opacus's backward hooks forbid in-place ops on hooked outputs
                if isinstance(module, nn.ReLU):
                    module.inplace = False
            state["gsm"] = GradSampleModule(model, loss_reduction="mean")  # hooks on model's own submodules
            optimizer = DPOptimizer(make_optimizer(model, recipe), noise_multiplier=cfg.noise_multiplier,
                                    max_grad_norm=cfg.max_grad_norm, expected_batch_size=batch,
                                    generator=_noise_generator(ctx), loss_reduction="mean")
            accountant = RDPAccountant()
            sample_rate = batch / n
            optimizer.attach_step_hook(accountant.get_optimizer_hook_fn(sample_rate=sample_rate))
            state.update(accountant=accountant, n=n, sample_rate=sample_rate)
            step = optimizer.step

            def step_and_record(*args: Any, **kwargs: Any) -> Any:
                out = step(*args, **kwargs)
                self._record(accountant, n, sample_rate)
                return out

            optimizer.step = step_and_record  # type: ignore[method-assign]
            return optimizer

        return SSLTrainingHooks(make_optimizer=make_dp_optimizer)


def _noise_generator(ctx: DefenseContext) -> torch.Generator:
    """Opacus draws the noise on the parameters' device with this generator: it must live there too."""
    return torch.Generator(device=ctx.device).manual_seed(int(ctx.seed))
