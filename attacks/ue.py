"""Unlearnable examples / error-minimising noise (EMN): Huang, Ma, Erfani, Bailey, Wang, "Unlearnable
Examples: Making Personal Data Unexploitable", ICLR 2021; evaluated against frozen feature extractors in
Lu, Yang, Kamath, Yu, "Indiscriminate Data Poisoning Attacks on Pre-trained Feature Extractors", SaTML 2024.

Bi-level min-min: min_θ min_{‖δ‖∞≤ε} CE(h_θ(x + δ), y). Alternate ``model_steps`` steps on θ with ``pgd_steps``
steps of signed-gradient DESCENT on δ (step ``step_size``, projected to the ε ball and to valid pixels) until the
training error on the poisoned points is below ``stop_error`` or ``max_rounds`` rounds have run; one δ per image
(``mode = "samplewise"``) or per class (``"classwise"``). Published: ε = 8/255, 20 PGD steps of 0.8/255, 10 model
steps per round, stop at < 1 % train error. Threat model and θ per track:
* downstream (white-box frozen extractor f, the clean training set): θ is the victim's linear head on f, trained
  (SGD, momentum 0.9, weight decay = the head's l2) on the clean features plus the poisons, ``budget`` random
  training images + δ, labels kept; ``ctx.input_epsilon``, when set, replaces ``epsilon``.
* pre-training availability (images and labels, no encoder): θ is a supervised surrogate (the victim recipe's
  backbone or ``surrogate_backbone``, plus a linear layer) trained from scratch by mini-batch SGD on the ``budget``
  perturbed images, δ within ``ctx.epsilon``; PGD runs batch by batch (class-wise δ: by every batch of their class).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from attacks._common import choose_base
from benchmark.api import (
    AvailabilityPoison,
    DownstreamAttack,
    DownstreamAttackContext,
    DownstreamPoison,
    MethodConfig,
    PretrainAttackContext,
    PretrainAvailabilityAttack,
    check_range,
    chunked,
    create_backbone,
    fit,
    is_known_backbone,
    register_attack,
)


@dataclass(frozen=True, kw_only=True)
class UEConfig(MethodConfig):
    mode: Literal["samplewise", "classwise"] = "samplewise"
    epsilon: float = 8 / 255
    step_size: float = 0.8 / 255
    pgd_steps: int = 20
    model_steps: int = 10
    model_lr: float = 0.1
    stop_error: float = 0.01
    max_rounds: int = 50
    batch_size: int = 256  # pre-training track: mini-batch of the CNN and of PGD
    # pre-training track: the surrogate's backbone; null = the victim recipe's (ResNet-18 in `full`, as the
    # paper's CIFAR experiments), with its CIFAR stem and normalisation
    surrogate_backbone: str | None = None

    def problems(self) -> list[str]:
        problems: list[str] = []
        if self.mode not in ("samplewise", "classwise"):
            problems.append(f"mode: {self.mode!r} must be 'samplewise' or 'classwise'")
        check_range(problems, "epsilon", self.epsilon, 0.0, 1.0, low_open=True)
        check_range(problems, "step_size", self.step_size, 0.0, 1.0, low_open=True)
        check_range(problems, "pgd_steps", self.pgd_steps, 1, 10_000)
        check_range(problems, "model_steps", self.model_steps, 0, 100_000)
        check_range(problems, "model_lr", self.model_lr, 0.0, 100.0, low_open=True)
        check_range(problems, "stop_error", self.stop_error, 0.0, 1.0)
        check_range(problems, "max_rounds", self.max_rounds, 1, 100_000)
        check_range(problems, "batch_size", self.batch_size, 1, 1_000_000)
        if self.surrogate_backbone is not None and not is_known_backbone(self.surrogate_backbone):
            problems.append(f"surrogate_backbone: unknown backbone {self.surrogate_backbone!r}")
        return problems


class _Noise:
    """δ of the poisoned images: one row per image (sample-wise) or per class (class-wise)."""

    def __init__(self, clean: torch.Tensor, labels: torch.Tensor, num_classes: int, mode: str, epsilon: float) -> None:
        self.clean, self.labels, self.epsilon, self.classwise = clean, labels, epsilon, mode == "classwise"
        rows = num_classes if self.classwise else len(clean)
        self.delta = torch.zeros((rows, *clean.shape[1:]), device=clean.device)

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        return self.labels[idx] if self.classwise else idx

    def images(self, idx: torch.Tensor | None = None, delta: torch.Tensor | None = None) -> torch.Tensor:
        idx = torch.arange(len(self.clean), device=self.clean.device) if idx is None else idx
        d = (self.delta if delta is None else delta)[self.rows(idx)]
        return (self.clean[idx] + d).clamp(0.0, 1.0)

    def descend(self, loss_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], idx: torch.Tensor, steps: int,
                step_size: float, batch: int | None = None) -> None:
        """Signed-gradient descent on the δ rows used by the points ``idx``, projected to the ε ball. The
        gradient of the mean loss over ``idx`` is summed over chunks of ``batch`` points (exact; memory of one
        chunk's graph); ``loss_of`` returns the mean over the points it is given."""
        rows, inverse = self.rows(idx).unique(return_inverse=True)
        delta, clean = self.delta[rows].clone(), self.clean[idx]
        chunk = len(idx) if batch is None else batch
        for _ in range(steps):
            grad = torch.zeros_like(delta)
            for start in range(0, len(idx), chunk):
                part = slice(start, start + chunk)
                d = delta.detach().requires_grad_(True)
                with torch.enable_grad():
                    loss = loss_of((clean[part] + d[inverse[part]]).clamp(0.0, 1.0), idx[part])
                    (g,) = torch.autograd.grad(loss * (len(idx[part]) / len(idx)), d)
                grad += g
            delta = (delta.detach() - step_size * grad.sign()).clamp(-self.epsilon, self.epsilon)
        self.delta[rows] = delta


@register_attack
class UnlearnableExamples(DownstreamAttack[UEConfig], PretrainAvailabilityAttack[UEConfig]):
    id = "ue"
    # downstream: PGD through the frozen encoder each round; pre-training: each round surrogate steps and PGD over
    # the perturbed images (the surrogate is the recipe's backbone: one poison for every SSL method of it)
    cost: ClassVar[Mapping[str, Any]] = {"downstream": {"passes": "max_rounds * pgd_steps * n_poison"},
            "pretrain-availability": {"passes": "max_rounds * (model_steps * batch_size + pgd_steps * n_poison)"}}
    recipe_fields = ("backbone", "cifar_stem", "norm")  # the surrogate's architecture only: shared across SSL methods
    Config = UEConfig
    paper_url = "https://arxiv.org/abs/2101.04898"
    citation = "Huang et al., Unlearnable Examples: Making Personal Data Unexploitable, ICLR 2021"
    expected_null: ClassVar[Mapping[str, str]] = {
        "downstream": "weak against a frozen encoder by design (Lu, Yang, Kamath, Yu, SaTML 2024): error-minimising "
                      "noise makes its points easy to fit, and a linear head on fixed features is not kept from learning "
                      "the clean points by that"}

    # ------------------------------------------------------------------------------ downstream
    def craft_downstream(self, ctx: DownstreamAttackContext) -> DownstreamPoison:
        cfg = self.config
        eps = cfg.epsilon if ctx.input_epsilon is None else ctx.input_epsilon
        step = cfg.step_size * eps / cfg.epsilon
        base = choose_base(len(ctx.train_labels), ctx.budget, ctx.generator)
        dev = ctx.device
        labels = ctx.train_labels.to(dev)
        keep = torch.ones(len(labels), dtype=torch.bool, device=dev)
        keep[base.to(dev)] = False
        clean_f, clean_y = ctx.train_features.to(dev).float()[keep], labels[keep]
        poison_y = labels[base.to(dev)].clone()
        noise = _Noise(ctx.train_images[base].to(dev).float(), poison_y, ctx.num_classes, cfg.mode, eps)
        head = nn.Linear(clean_f.shape[1], ctx.num_classes).to(dev)
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        optimizer = torch.optim.SGD(head.parameters(), lr=cfg.model_lr, momentum=0.9, weight_decay=ctx.head.l2)
        all_idx = torch.arange(len(base), device=dev)

        def poison_error() -> float:
            with torch.no_grad():
                return (head(ctx.extractor.features(noise.images())).argmax(1) != poison_y).float().mean().item()

        rounds, error = 0, poison_error()
        while rounds < cfg.max_rounds and error >= cfg.stop_error:
            poison_f = ctx.extractor.features(noise.images())
            fit(optimizer, range(cfg.model_steps),  # full-batch steps on clean ∪ poisoned features
                lambda _: F.cross_entropy(head(torch.cat([clean_f, poison_f])), torch.cat([clean_y, poison_y])))  # noqa: B023
            head.requires_grad_(False)
            noise.descend(lambda x, idx: F.cross_entropy(head(ctx.extractor(x)), poison_y[idx]), all_idx,
                          cfg.pgd_steps, step, batch=ctx.extractor.batch_size)
            head.requires_grad_(True)
            rounds, error = rounds + 1, poison_error()
        with torch.no_grad():  # the same head on the unperturbed base images: what δ bought
            base_error = (head(ctx.extractor.features(noise.clean)).argmax(1) != poison_y).float().mean().item()
        return DownstreamPoison(images=noise.images().detach().cpu(), labels=poison_y.long().cpu(), base_indices=base,
                                diagnostics={"final_train_error": error, "rounds": float(rounds),
                                             "base_train_error": base_error})

    # ------------------------------------------------------------------------------ pre-training
    def craft_availability(self, ctx: PretrainAttackContext) -> AvailabilityPoison:
        cfg = self.config
        dev = ctx.device
        indices = choose_base(len(ctx.images), ctx.budget, ctx.generator).sort().values
        labels = ctx.labels.to(dev)[indices.to(dev)]
        noise = _Noise(ctx.images[indices].to(dev).float(), labels, ctx.num_classes, cfg.mode, ctx.epsilon)
        step = cfg.step_size * ctx.epsilon / cfg.epsilon
        model = self._surrogate(ctx)
        optimizer = torch.optim.SGD(model.parameters(), lr=cfg.model_lr, momentum=0.9, weight_decay=5e-4)
        n = len(indices)
        rounds, error = 0, 1.0
        while rounds < cfg.max_rounds and error >= cfg.stop_error:
            model.train()
            batches = (torch.randint(0, n, (min(cfg.batch_size, n),), generator=ctx.generator).to(dev)
                       for _ in range(cfg.model_steps))  # drawn step by step, with replacement
            fit(optimizer, batches, lambda idx: F.cross_entropy(model(noise.images(idx).detach()), labels[idx]))
            model.eval()
            model.requires_grad_(False)
            for start in range(0, n, cfg.batch_size):
                idx = torch.arange(start, min(start + cfg.batch_size, n), device=dev)
                noise.descend(lambda x, i: F.cross_entropy(model(x), labels[i]), idx, cfg.pgd_steps, step)
            model.requires_grad_(True)
            rounds, error = rounds + 1, self._error(model, noise, labels, cfg.batch_size)
        return AvailabilityPoison(images=noise.images().detach().cpu(), indices=indices,
                                  diagnostics={"final_train_error": error, "rounds": float(rounds)})

    def _surrogate(self, ctx: PretrainAttackContext) -> nn.Module:
        """The supervised surrogate θ: the configured backbone, else the victim recipe's (``cnn_micro``
        when the context carries no recipe), plus a linear layer."""
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=ctx.generator))
        recipe = ctx.ssl
        name = self.config.surrogate_backbone or (recipe.backbone if recipe is not None else "cnn_micro")
        same = recipe is not None and name == recipe.backbone
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            backbone = create_backbone(name, in_chans=int(ctx.images.shape[1]),
                                       cifar_stem=bool(same and recipe.cifar_stem), norm=recipe.norm if same else "batch")
            model = nn.Sequential(backbone, nn.Linear(int(backbone.feature_dim), ctx.num_classes))
        return model.to(ctx.device)

    @staticmethod
    @torch.no_grad()
    def _error(model: nn.Module, noise: _Noise, labels: torch.Tensor, batch: int) -> float:
        model.eval()
        every = torch.arange(len(labels), device=labels.device)
        wrong = chunked(lambda idx: model(noise.images(idx)).argmax(1) != labels[idx], every, size=batch)
        return int(wrong.sum().item()) / max(1, len(labels))
