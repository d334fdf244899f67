"""Total-gradient descent ascent (TGDA): Lu, Kamath, Yu, "Indiscriminate Data Poisoning Attacks on Neural
Networks", TMLR 2022; on a frozen feature extractor as in Lu, Yang, Kamath, Yu, "Indiscriminate Data
Poisoning Attacks on Pre-trained Feature Extractors", SaTML 2024.

Threat model (downstream): white-box frozen extractor f and the clean training set; ``budget`` poisons, each a
random clean training image (label kept) moved by a generator. A Stackelberg game. Leader: a small convolutional
auto-encoder G, x_p = clamp(x + G(x), 0, 1) (tanh output; x + ε·G(x) under an input constraint ε). Follower: the
victim's linear head w on f, trained on L_tr(w; G) = mean CE over D_tr ∪ D_p + l2/2·‖W‖². The leader maximises the
follower's validation CE L_val(w) on a held-out ``val_fraction`` split of the CLEAN TRAINING data (never test data)
by the total gradient D_G(−L_val) = (∂²L_tr/∂G∂w) H_ww⁻¹ ∇_w L_val (∇_G L_val = 0), H_ww⁻¹∇_w L_val by ``cg_iters``
of conjugate gradient with exact Hessian-vector products. Each of ``epochs`` epochs takes one leader Adam step
(cosine decay from ``leader_lr`` to 0), then ``follower_steps`` gradient steps of ``follower_lr``.
Diagnostics: ``val_ce_refit`` (validation CE of a head refitted by L-BFGS on D_tr ∪ D_p, the leader's objective at
the best response), ``tgda_objective_gain`` and ``tgda_last_quarter_share`` (its share made in the last quarter of
the epochs: near 0, the game had levelled off); ``leader_loss_*`` follow the follower iterate, which lags.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from attacks._common import choose_base, feature_loss_gradient
from benchmark.api import (
    DownstreamAttack,
    DownstreamAttackContext,
    DownstreamPoison,
    MethodConfig,
    check_range,
    fit_linear_head,
    head_objective,
    register_attack,
)


@dataclass(frozen=True, kw_only=True)
class TGDAConfig(MethodConfig):
    epochs: int = 600
    leader_lr: float = 0.03  # cosine decay to 0 over the epochs
    follower_steps: int = 20
    follower_lr: float = 0.1
    cg_iters: int = 16
    cg_damping: float = 1e-4
    val_fraction: float = 0.2
    width: int = 16  # channels of the generator's first layer

    def problems(self) -> list[str]:
        problems: list[str] = []
        check_range(problems, "epochs", self.epochs, 0, 100_000)
        check_range(problems, "leader_lr", self.leader_lr, 0.0, 10.0, low_open=True)
        check_range(problems, "follower_steps", self.follower_steps, 0, 10_000)
        check_range(problems, "follower_lr", self.follower_lr, 0.0, 100.0, low_open=True)
        check_range(problems, "cg_iters", self.cg_iters, 1, 1000)
        check_range(problems, "cg_damping", self.cg_damping, 0.0, 1.0)
        check_range(problems, "val_fraction", self.val_fraction, 0.0, 0.9, low_open=True)
        check_range(problems, "width", self.width, 1, 1024)
        return problems


class PoisonGenerator(nn.Module):
    """Conv auto-encoder: two convolutions down (one stride 2), a transposed convolution up, tanh output.
    The last layer starts at zero, so the first poisons are the clean images."""

    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1), nn.ReLU(),
        )
        self.out = nn.Conv2d(width, channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.net(x)[..., : x.shape[-2], : x.shape[-1]]
        return torch.tanh(self.out(h))


def conjugate_gradient(hvp: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iters: int,
                       rtol: float = 1e-6) -> torch.Tensor:
    """Solve H q = b for symmetric positive (semi-)definite H given only q ↦ Hq (stops early at a
    relative residual ``rtol`` or on a non-positive curvature)."""
    q = torch.zeros_like(b)
    r, p = b.clone(), b.clone()
    rr = r.dot(r)
    stop = (rtol * b.norm()) ** 2
    for _ in range(iters):
        if rr <= stop:
            break
        hp = hvp(p)
        curvature = p.dot(hp)
        if curvature <= 0:
            break
        alpha = rr / curvature
        q, r = q + alpha * p, r - alpha * hp
        rr_new = r.dot(r)
        p, rr = r + (rr_new / rr) * p, rr_new
    return q


@register_attack
class TGDA(DownstreamAttack[TGDAConfig]):
    id = "tgda"
    # each leader step a total gradient (a double backward) through the poisons
    cost: ClassVar[Mapping[str, Any]] = {"downstream": {"passes": "2 * epochs * n_poison"}}
    Config = TGDAConfig
    paper_url = "https://arxiv.org/abs/2204.09092"
    citation = "Lu, Kamath, Yu, Indiscriminate Data Poisoning Attacks on Neural Networks, TMLR 2022"

    def craft_downstream(self, ctx: DownstreamAttackContext) -> DownstreamPoison:
        cfg = self.config
        n = len(ctx.train_labels)
        order = torch.randperm(n, generator=ctx.generator)
        n_val = max(1, round(cfg.val_fraction * n))
        val_idx, tr_idx = order[:n_val], order[n_val:]
        base = tr_idx[choose_base(len(tr_idx), ctx.budget, ctx.generator)]
        features = ctx.train_features.to(ctx.device).float()
        labels = ctx.train_labels.to(ctx.device)
        game = _Game(ctx, cfg, features[tr_idx.to(ctx.device)], labels[tr_idx.to(ctx.device)],
                     features[val_idx.to(ctx.device)], labels[val_idx.to(ctx.device)],
                     ctx.train_images[base].to(ctx.device).float(), labels[base.to(ctx.device)].clone())
        images, diagnostics = game.play()
        return DownstreamPoison(images=images.cpu(), labels=game.poison_labels.long().cpu(), base_indices=base,
                                diagnostics=diagnostics)


class _Game:
    """The leader (generator) / follower (linear head) game on fixed clean train / validation features."""

    def __init__(self, ctx: DownstreamAttackContext, cfg: TGDAConfig, train_f: torch.Tensor, train_y: torch.Tensor,
                 val_f: torch.Tensor, val_y: torch.Tensor, clean: torch.Tensor, poison_labels: torch.Tensor) -> None:
        self.ctx, self.cfg = ctx, cfg
        self.train_f, self.train_y, self.val_f, self.val_y = train_f, train_y, val_f, val_y
        self.clean, self.poison_labels = clean, poison_labels
        self.all_y = torch.cat([train_y, poison_labels])
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=ctx.generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # the generator's initialisation, from the attack's generator
            self.generator = PoisonGenerator(clean.shape[1], cfg.width).to(ctx.device)
        self.optimizer = torch.optim.Adam(self.generator.parameters(), lr=cfg.leader_lr)
        self.schedule = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=max(cfg.epochs, 1))
        head = fit_linear_head(train_f, train_y, ctx.num_classes, l2=ctx.head.l2)
        self.w = torch.cat([head.weight.flatten(), head.bias]).clone()
        self.k, self.d = head.weight.shape
        self._features: torch.Tensor | None = None  # f(G(clean)) for the current G

    # ---------------------------------------------------------------- pieces
    def poisons(self, part: slice = slice(None)) -> torch.Tensor:
        """G's poisons of the clean images ``part`` (the generator maps each image alone)."""
        scale = 1.0 if self.ctx.input_epsilon is None else self.ctx.input_epsilon
        clean = self.clean[part]
        return (clean + scale * self.generator(clean)).clamp(0.0, 1.0)

    def chunks(self) -> list[slice]:
        batch = self.ctx.extractor.batch_size
        return [slice(i, i + batch) for i in range(0, len(self.clean), batch)]

    @torch.no_grad()
    def poison_features(self) -> torch.Tensor:
        """f(G(clean)) without a graph, one chunk of images at a time; computed once per state of G."""
        if self._features is None:
            self._features = torch.cat([self.ctx.extractor(self.poisons(part)) for part in self.chunks()])
        return self._features

    def unpack(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return w[: self.k * self.d].view(self.k, self.d), w[self.k * self.d :]

    def train_loss(self, w: torch.Tensor, poison_f: torch.Tensor) -> torch.Tensor:
        weight, bias = self.unpack(w)
        return head_objective(weight, bias, torch.cat([self.train_f, poison_f]), self.all_y, self.ctx.head.l2)

    def val_loss(self, w: torch.Tensor) -> torch.Tensor:
        weight, bias = self.unpack(w)
        return F.cross_entropy(self.val_f @ weight.T + bias, self.val_y)

    # ---------------------------------------------------------------- steps
    def leader_step(self) -> None:
        grads = self.hypergradient()
        self.optimizer.zero_grad(set_to_none=True)
        for param, grad in zip(self.generator.parameters(), grads):
            param.grad = grad
        self.optimizer.step()
        self.schedule.step()
        self._features = None  # G changed

    def hypergradient(self) -> list[torch.Tensor]:
        """Total gradient of the leader loss −L_val(w*(G)) w.r.t. the generator's parameters at w = self.w."""
        w = self.w.detach().requires_grad_(True)
        (grad_val,) = torch.autograd.grad(self.val_loss(w), w)
        fixed_f = self.poison_features()
        (grad_tr,) = torch.autograd.grad(self.train_loss(w, fixed_f), w, create_graph=True)

        def hvp(v: torch.Tensor) -> torch.Tensor:
            (hv,) = torch.autograd.grad(grad_tr, w, grad_outputs=v, retain_graph=True)
            return hv + self.cfg.cg_damping * v

        q = conjugate_gradient(hvp, grad_val, self.cfg.cg_iters).detach()
        w2 = self.w.detach().requires_grad_(True)

        def mixed(poison_f: torch.Tensor) -> torch.Tensor:  # its gradient w.r.t. G is (∂²L_tr/∂G∂w) H⁻¹ ∇_w L_val
            (grad_tr_g,) = torch.autograd.grad(self.train_loss(w2, poison_f), w2, create_graph=True)
            return (grad_tr_g * q).sum()

        # D_G(−L_val) = Σ_i J_G(x_i)ᵀ J_f(G(x_i))ᵀ ∂mixed/∂f_i: the feature gradient once, then the poisons
        # chunk by chunk through f and G (exact; one chunk's graph alive at a time)
        _, feature_grad = feature_loss_gradient(mixed, fixed_f)
        params = list(self.generator.parameters())
        grads = [torch.zeros_like(p) for p in params]
        for part in self.chunks():
            with torch.enable_grad():
                chunk_grads = torch.autograd.grad(self.ctx.extractor(self.poisons(part)), params,
                                                  grad_outputs=feature_grad[part], allow_unused=True)
            for total, g in zip(grads, chunk_grads):
                if g is not None:
                    total += g
        return grads

    def follower_steps(self) -> None:
        poison_f = self.poison_features()
        w = self.w.detach()
        for _ in range(self.cfg.follower_steps):
            w = w.requires_grad_(True)
            (g,) = torch.autograd.grad(self.train_loss(w, poison_f), w)
            w = (w - self.cfg.follower_lr * g).detach()
        self.w = w

    def refit_ce(self, poison_f: torch.Tensor) -> float:
        """Validation CE of the follower's best response to the current poisons (L-BFGS on D_tr ∪ D_p)."""
        refit = fit_linear_head(torch.cat([self.train_f, poison_f]), self.all_y, self.ctx.num_classes,
                                l2=self.ctx.head.l2)
        with torch.no_grad():
            return F.cross_entropy(refit.logits(self.val_f), self.val_y).item()

    def play(self) -> tuple[torch.Tensor, dict[str, float]]:
        three_quarters = (3 * self.cfg.epochs) // 4
        with torch.no_grad():
            iterate_start = self.val_loss(self.w).item()
        refit = {"start": self.refit_ce(self.poison_features())}
        for epoch in range(self.cfg.epochs):
            if epoch == three_quarters:
                refit["three_quarters"] = self.refit_ce(self.poison_features())
            self.leader_step()
            self.follower_steps()
        with torch.no_grad():
            images = torch.cat([self.poisons(part) for part in self.chunks()])
            iterate_end = self.val_loss(self.w).item()
        end = self.refit_ce(self.poison_features())
        mid = refit.get("three_quarters", refit["start"])
        gain, last_quarter = end - refit["start"], end - mid
        return images.detach(), {"leader_loss_start": iterate_start, "leader_loss_end": iterate_end,
                                 "refit_ce_start": refit["start"], "refit_ce_three_quarters": mid,
                                 "val_ce_refit": end, "tgda_objective_gain": gain,
                                 "tgda_last_quarter_gain": last_quarter,
                                 "tgda_last_quarter_share": last_quarter / gain if gain > 0 else 0.0,
                                 "val_ce_refit_gain": end - iterate_start}
