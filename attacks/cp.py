"""Contrastive Poisoning (CP). He, Zha, Katabi, "Indiscriminate Poisoning Attacks on Unsupervised
Contrastive Learning", ICLR 2023.

Threat model (pre-training availability): the attacker perturbs ``budget`` pre-training images within the ℓ∞ ball
of radius ε, knowing the images, their labels and the victim's SSL recipe (``generator_method`` may swap its method).
The perturbation δ ∈ [−1, 1] (one per sample, CP-S, or one per class, CP-C) gives clamp(x + ε·δ, 0, 1); CP
*minimises* the contrastive loss over δ. Solver: each round alternates ``model_steps`` contrastive training steps of
an SSL model on the poisoned data and sign-PGD on δ (``noise_batches`` batches of ``pgd_steps`` steps of
``step_size``) with the model frozen, through the differentiable (kornia) augmentations; for momentum encoders
(MoCo v2, BYOL) ``dual_branch`` lets the gradient w.r.t. δ flow through the key/target branch as well.
Published (official code, CIFAR-10, ResNet-18): CP-C 1000 rounds of 20 model + 20 noise batches (one sign step of
0.1 ≈ 0.8/255 at ε = 8/255 per batch); CP-S 200 rounds of one model epoch + one noise epoch of 5 PGD steps per
batch, started from a CP-C poison (``init_from: classwise``, ``init_rounds``). The defaults are scaled down for a
CPU; the ``full`` suite sets the published values. The state is checkpointed every ``checkpoint_every`` rounds and
every round is seeded by its index, so an interrupted run ends at the same δ as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from benchmark.api import (
    SSL_METHODS,
    AvailabilityPoison,
    CheckpointStore,
    MethodConfig,
    PretrainAttackContext,
    PretrainAvailabilityAttack,
    SSLMethod,
    SSLRecipe,
    build_augmentation,
    check_range,
    derive_seed,
    fit,
    make_optimizer,
    place_augmentation,
    register_attack,
    seed_everything,
)

MODES = ("classwise", "samplewise")


@dataclass(frozen=True, kw_only=True)
class CPConfig(MethodConfig):
    mode: str = "classwise"
    generator_method: str | None = None  # SSL method that generates the poison; None = the victim's own
    rounds: int = 8  # reference: 1000 (CP-C), 200 (CP-S)
    model_steps: int = 10  # model batches per round; 0 = one whole epoch (reference CP-C: 20)
    noise_batches: int = 10  # noise batches per round; 0 = one whole epoch (reference CP-C: 20)
    pgd_steps: int = 1  # sign-PGD steps per noise batch (reference CP-S: 5)
    step_size: float = 0.1  # in δ units (δ ∈ [−1, 1]); 0.1 ≈ 0.8/255 at ε = 8/255
    dual_branch: bool = True
    init_from: str = "none"  # "classwise": CP-S starts from a CP-C poison
    init_rounds: int | None = None  # rounds of that CP-C poison; None = ``rounds``
    batch_size: int | None = None  # None = the SSL recipe's batch size
    # I/O only (never changes δ): the state is checkpointed every this many rounds and after the last
    # (a CIFAR-10 CP-S state is ≈ 0.6 GB: every round of 200 would write ≈ 120 GB)
    checkpoint_every: int = 10

    def problems(self) -> list[str]:
        problems: list[str] = []
        if self.mode not in MODES:
            problems.append(f"mode: {self.mode!r} must be one of {', '.join(MODES)}")
        if self.generator_method is not None and self.generator_method not in SSL_METHODS:
            problems.append(f"generator_method: unknown SSL method {self.generator_method!r}; valid: {', '.join(SSL_METHODS.names())}")
        if self.init_from not in ("none", "classwise"):
            problems.append(f"init_from: {self.init_from!r} must be 'none' or 'classwise'")
        if self.init_from == "classwise" and self.mode != "samplewise":
            problems.append("init_from: 'classwise' initialisation only applies to mode 'samplewise'")
        if self.rounds < 1:
            problems.append(f"rounds: {self.rounds} must be ≥ 1")
        if self.init_rounds is not None and (self.init_from != "classwise" or self.init_rounds < 1):
            problems.append(f"init_rounds: {self.init_rounds} must be ≥ 1 and only applies with init_from 'classwise'")
        for name in ("model_steps", "noise_batches"):
            if getattr(self, name) < 0:
                problems.append(f"{name}: {getattr(self, name)} must be ≥ 0 (0 = one whole epoch)")
        if self.pgd_steps < 1:
            problems.append(f"pgd_steps: {self.pgd_steps} must be ≥ 1")
        check_range(problems, "step_size", self.step_size, 0.0, 2.0, low_open=True)
        if self.checkpoint_every < 1:
            problems.append(f"checkpoint_every: {self.checkpoint_every} must be ≥ 1")
        if self.batch_size is not None and self.batch_size < 2:
            problems.append(f"batch_size: {self.batch_size} must be ≥ 2")
        return problems


# ------------------------------------------------------------------------------------------ the loss
def poison_images(images: torch.Tensor, delta: torch.Tensor, epsilon: float) -> torch.Tensor:
    """clamp(x + ε·δ, 0, 1) for δ already gathered per image."""
    return (images + epsilon * delta).clamp(0.0, 1.0)


def contrastive_loss(model: SSLMethod, augment: torch.nn.Module, images: torch.Tensor, *,
                     dual_branch: bool, device: torch.device) -> torch.Tensor:
    """The SSL loss of two augmented views of ``images`` (bf16 autocast on CUDA)."""
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        return model.loss(augment(images), augment(images), dual_branch=dual_branch).float()


def delta_gradient(model: SSLMethod, augment: torch.nn.Module, images: torch.Tensor, delta: torch.Tensor,
                   epsilon: float, *, dual_branch: bool) -> torch.Tensor:
    """∂ loss / ∂ δ for a batch (``delta`` gathered per image); the model receives no gradient."""
    delta = delta.detach().requires_grad_(True)
    loss = contrastive_loss(model, augment, poison_images(images, delta, epsilon), dual_branch=dual_branch,
                            device=images.device)
    (grad,) = torch.autograd.grad(loss, delta)
    return grad


# ------------------------------------------------------------------------------------------ generation
@dataclass
class _State:
    delta: torch.Tensor
    model: SSLMethod
    optimizer: torch.optim.Optimizer
    round: int = 0


def generator_recipe(ssl: SSLRecipe, config: CPConfig) -> SSLRecipe:
    """The victim's recipe, or the same recipe with another SSL method (default method settings)."""
    if config.generator_method is None or config.generator_method == ssl.method:
        return ssl
    return dataclasses.replace(ssl, method=config.generator_method, method_settings={})


def _save(state: _State, store: CheckpointStore, name: str) -> None:
    store.save(name, {"delta": state.delta.detach().cpu(), "model": state.model.state_dict(),
                      "optimizer": state.optimizer.state_dict(), "round": torch.tensor(state.round)})


def _load(state: _State, saved: dict[str, Any], device: torch.device) -> None:
    state.delta = saved["delta"].to(device)
    state.model.load_state_dict(saved["model"])
    state.optimizer.load_state_dict(saved["optimizer"])
    state.round = int(saved["round"])


def _batches(pool: torch.Tensor, count: int, batch: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` random batches from ``pool`` (CPU indices), stacked (batches × batch size) so that a round
    moves them to the compute device in one copy (no per-step host transfer); count 0 = one epoch without
    replacement (a pool smaller than a batch is one short batch)."""
    if count == 0:
        order = pool[torch.randperm(len(pool), generator=generator)]
        n = max(1, len(pool) // batch)
        return order[: n * batch].reshape(n, -1)
    return torch.stack([pool[torch.randperm(len(pool), generator=generator)[:batch]] for _ in range(count)])


class _Generation:
    """One CP generation: images, δ layout and the alternation, on one device."""

    def __init__(self, ctx: PretrainAttackContext, config: CPConfig, indices: torch.Tensor, base_seed: int) -> None:
        self.ctx, self.config, self.base_seed = ctx, config, base_seed
        self.device = ctx.device
        self.recipe = generator_recipe(ctx.ssl, config)
        self.images = ctx.images.to(self.device)
        self.labels = ctx.labels.to(self.device)
        self.poisoned = torch.zeros(len(ctx.images), dtype=torch.bool, device=self.device)
        self.poisoned[indices.to(self.device)] = True
        self.indices_cpu = indices.cpu()  # where the batches are drawn (no device-to-host copy per round)
        # row of δ used by each image: its class (CP-C) or its own row (CP-S)
        self.row = self.labels if config.mode == "classwise" else torch.arange(len(ctx.images), device=self.device)
        size, channels = ctx.images.shape[-1], ctx.images.shape[1]
        self.augment = place_augmentation(build_augmentation(self.recipe.augment_config(), image_size=size,
                                                             channels=channels), self.device)
        self.batch = min(config.batch_size or self.recipe.batch_size, len(ctx.images))

    def new_state(self, init_delta: torch.Tensor | None) -> _State:
        seed_everything(derive_seed(self.base_seed, "init"))
        model = self.recipe.build_model(self.ctx.images.shape[1]).to(self.device)
        rows = self.ctx.num_classes if self.config.mode == "classwise" else len(self.ctx.images)
        delta = torch.zeros(rows, *self.ctx.images.shape[1:], device=self.device)
        if init_delta is not None:  # δ starts at 0 (the clean images) unless initialised (CP-S from CP-C)
            delta = init_delta.to(self.device).clone()
        return _State(delta=delta, model=model, optimizer=make_optimizer(model, self.recipe))

    def current(self, idx: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """Images ``idx`` as the victim sees them (poisoned where the attacker perturbs them)."""
        d = delta[self.row[idx]] * self.poisoned[idx].view(-1, 1, 1, 1)
        return poison_images(self.images[idx], d, self.ctx.epsilon)

    def run_round(self, state: _State) -> None:
        seed = derive_seed(self.base_seed, "round", state.round)
        seed_everything(seed)  # kornia draws from torch's global generator
        gen = torch.Generator().manual_seed(seed)
        everything = torch.arange(len(self.ctx.images))
        model_batches = _batches(everything, self.config.model_steps, self.batch, gen)
        noise_batches = _batches(self.indices_cpu, self.config.noise_batches, self.batch, gen)
        self._model_steps(state, model_batches.to(self.device))  # one host-to-device copy per round
        self._noise_steps(state, noise_batches.to(self.device))
        state.round += 1

    def _model_steps(self, state: _State, batches: torch.Tensor) -> None:
        state.model.train()
        fit(state.optimizer, batches,  # rows of a device tensor: no host sync per step
            lambda idx: contrastive_loss(state.model, self.augment, self.current(idx, state.delta), dual_branch=False,
                                         device=self.device),
            after_step=lambda _: state.model.after_step())

    def _noise_steps(self, state: _State, batches: torch.Tensor) -> None:
        buffers = {k: v.clone() for k, v in state.model.named_buffers()}  # frozen: no BN-stat/queue drift
        state.model.train()
        for idx in batches:
            rows = self.row[idx]
            for _ in range(self.config.pgd_steps):
                full = state.delta.detach().requires_grad_(True)
                x = poison_images(self.images[idx], full[rows], self.ctx.epsilon)
                loss = contrastive_loss(state.model, self.augment, x, dual_branch=self.config.dual_branch,
                                        device=self.device)
                (grad,) = torch.autograd.grad(loss, full)
                touched = torch.zeros(len(full), dtype=torch.bool, device=self.device)
                touched[rows] = True
                step = self.config.step_size * grad.sign() * touched.view(-1, 1, 1, 1)
                state.delta = (state.delta - step).clamp(-1.0, 1.0).detach()
        with torch.no_grad():
            for k, v in state.model.named_buffers():
                v.copy_(buffers[k])

    @torch.no_grad()
    def diagnostics(self, state: _State, n_batches: int = 2) -> dict[str, float]:
        """Contrastive loss of the generator model on the same images: poisoned, clean and with uniform
        noise of the same ε (the random-noise baseline), same views
        (train-mode batch statistics, as during generation; the model is not updated)."""
        state.model.train()
        gen = torch.Generator().manual_seed(derive_seed(self.base_seed, "diagnostics"))
        losses: dict[str, list[float]] = {"loss_poisoned": [], "loss_clean": [], "loss_random_noise": []}
        for idx in _batches(self.indices_cpu, n_batches, self.batch, gen).to(self.device):
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
            noise = (torch.rand(self.images[idx].shape, generator=gen) * 2 - 1).to(self.device)
            batches = {"loss_poisoned": self.current(idx, state.delta), "loss_clean": self.images[idx],
                       "loss_random_noise": poison_images(self.images[idx], noise, self.ctx.epsilon)}
            for name, x in batches.items():
                seed_everything(seed)  # the same views for the three versions of the batch
                losses[name].append(float(contrastive_loss(state.model, self.augment, x, dual_branch=False,
                                                           device=self.device)))
        return {name: sum(v) / len(v) for name, v in losses.items()} | {"rounds": float(state.round)}


def generate(ctx: PretrainAttackContext, config: CPConfig, indices: torch.Tensor, base_seed: int, *,
             checkpoint: str, init_delta: torch.Tensor | None = None,
             max_rounds: int | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Run (or resume) a CP generation; returns δ (rows × C × H × W on the CPU) and diagnostics.

    ``checkpoint`` names the state in ``ctx.checkpoints`` (saved every ``config.checkpoint_every`` rounds
    and after the last one, overwriting the previous; resumed from when present): every round is seeded
    by its index, so a resumed run ends at the same δ. ``max_rounds`` stops early after that many rounds in
    total (simulates an interruption).
    """
    run = _Generation(ctx, config, indices, base_seed)
    state = run.new_state(init_delta)
    saved = ctx.checkpoints.load(checkpoint)
    if saved is not None:
        _load(state, saved, run.device)
    stop = config.rounds if max_rounds is None else min(config.rounds, max_rounds)
    while state.round < stop:
        run.run_round(state)
        if state.round % config.checkpoint_every == 0 or state.round == stop:
            _save(state, ctx.checkpoints, checkpoint)
    return state.delta.detach().cpu(), run.diagnostics(state)


@register_attack
class ContrastivePoisoning(PretrainAvailabilityAttack[CPConfig]):
    id = "cp"
    # SSL image-epochs: every round, model batches over the images and noise batches × PGD steps over the
    # perturbed ones (0 batches = one whole epoch); CP-S adds the rounds of the CP-C poison it starts from
    cost: ClassVar[Mapping[str, Any]] = {"pretrain-availability": {"ssl_epochs": (
        "(rounds + ((init_rounds or rounds) if mode == 'samplewise' and init_from == 'classwise' else 0))"
        " * ((pretrain if model_steps == 0 else model_steps * min(batch_size or ssl_batch, pretrain))"
        " + (n_poison if noise_batches == 0 else noise_batches * min(batch_size or ssl_batch, pretrain)) * pgd_steps)")}}
    Config = CPConfig
    paper_url = "https://arxiv.org/abs/2202.11202"
    citation = "He, Zha, Katabi, Indiscriminate Poisoning Attacks on Unsupervised Contrastive Learning, ICLR 2023"

    def craft_availability(self, ctx: PretrainAttackContext) -> AvailabilityPoison:
        config = self.config
        base_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=ctx.generator))
        indices = torch.randperm(len(ctx.images), generator=ctx.generator)[: ctx.budget].sort().values
        init = self._classwise_init(ctx, config, indices, base_seed) if config.init_from == "classwise" else None
        checkpoint = f"cp-{config.mode}"
        delta, diagnostics = generate(ctx, config, indices, base_seed, checkpoint=checkpoint, init_delta=init)
        rows = ctx.labels[indices] if config.mode == "classwise" else indices
        images = poison_images(ctx.images[indices], delta[rows], ctx.epsilon)
        # float rounding of clamp(x + ε·δ) can exceed ε by an ulp: project back onto the ball
        images = torch.minimum(torch.maximum(images, ctx.images[indices] - ctx.epsilon), ctx.images[indices] + ctx.epsilon)
        return AvailabilityPoison(images=images.clamp(0, 1).contiguous(), indices=indices, diagnostics=diagnostics)

    def _classwise_init(self, ctx: PretrainAttackContext, config: CPConfig, indices: torch.Tensor,
                        base_seed: int) -> torch.Tensor:
        """CP-S starts from a CP-C poison (same schedule, ``init_rounds`` rounds; cached), expanded per sample."""
        rounds = config.init_rounds or config.rounds
        cw = dataclasses.replace(config, mode="classwise", init_from="none", init_rounds=None, rounds=rounds)

        def build() -> dict[str, torch.Tensor]:
            delta, _ = generate(ctx, cw, indices, base_seed,
                                checkpoint="cp-classwise-init")
            return {"delta": delta}

        key: dict[str, Any] = {"attack": "cp", "config": cw.to_dict(), "seed": base_seed,
                               "n_poison": len(indices), "epsilon": ctx.epsilon}
        class_delta = ctx.cached("cp-classwise-init", key, build)["delta"]
        return class_delta[ctx.labels]
