"""SSL pre-training: the recipe, the training loop and the released feature extractor.

The loop keeps the whole (small) image tensor on the compute device, draws two kornia views per image
per batch, and runs bf16 autocast with channels_last on CUDA. Everything random is seeded from the
caller's seed (kornia draws the views' parameters on the compute device from torch's global generator,
which :func:`train_ssl` seeds).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from benchmark.augment import AugmentConfig, build_augmentation, place_augmentation
from benchmark.backbones import create_backbone, is_known_backbone
from benchmark.plugin_base import MethodConfig, check_range, config_problems
from benchmark.ssl import SSL_METHODS, SSLMethod, create_ssl_method
from benchmark.training import chunked, epoch_batches, fit
from benchmark.utils import fast_layout, fast_path, seed_everything


@dataclass(frozen=True, kw_only=True)
class SSLRecipe(MethodConfig):
    """Everything that determines a pre-trained encoder except its data and seed."""

    method: str
    backbone: str
    cifar_stem: bool = False
    norm: str = "batch"
    epochs: int = 100
    batch_size: int = 256
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 1e-6
    momentum: float = 0.9
    warmup_epochs: int = 0
    method_settings: dict[str, Any] = field(default_factory=dict)
    augment: dict[str, Any] = field(default_factory=dict)

    def problems(self) -> list[str]:
        problems: list[str] = []
        if self.method not in SSL_METHODS:
            problems.append(f"method: unknown SSL method {self.method!r}; valid: {', '.join(SSL_METHODS.names())}")
        else:
            problems += config_problems(SSL_METHODS.get(self.method).Config, self.method_settings, "method_settings")
        if not is_known_backbone(self.backbone):
            problems.append(f"backbone: unknown backbone {self.backbone!r} (a tiny CNN id or a timm model name)")
        if self.norm not in ("batch", "group"):
            problems.append(f"norm: {self.norm!r} must be 'batch' or 'group'")
        if self.optimizer not in ("adam", "sgd"):
            problems.append(f"optimizer: {self.optimizer!r} must be 'adam' or 'sgd'")
        if self.epochs < 1:
            problems.append(f"epochs: {self.epochs} must be ≥ 1")
        if self.batch_size < 2:
            problems.append(f"batch_size: {self.batch_size} must be ≥ 2")
        check_range(problems, "lr", self.lr, 0.0, 100.0, low_open=True)
        check_range(problems, "weight_decay", self.weight_decay, 0.0, 1.0)
        problems += config_problems(AugmentConfig, self.augment, "augment")
        return problems

    def augment_config(self) -> AugmentConfig:
        return AugmentConfig(**self.augment)

    def build_model(self, in_chans: int) -> SSLMethod:
        backbone = create_backbone(self.backbone, in_chans=in_chans, cifar_stem=self.cifar_stem, norm=self.norm)
        settings = {"norm": self.norm, **self.method_settings}
        return create_ssl_method(self.method, backbone, settings)


LossFn = Callable[[SSLMethod, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``loss_fn(model, clean_batch, view1, view2) -> loss``: replaces the method's loss (a training defense).
``clean_batch`` holds the batch's images of the main pre-training set; with ``extra_images`` (other-shaped
injected canvases) the views hold more rows than it (see :func:`train_ssl`)."""

IndexedTransform = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``transform(batch, idx) -> batch``: maps a batch of one image set given each row's index in that set."""


@dataclass
class SSLTrainingHooks:
    """How a training- or data-stage defense changes pre-training without touching the loop.

    ``batch_transform(x)`` maps every batch before the views are drawn. ``prepare(images)`` is its
    indexed form, for a transform that precomputes per-image state once instead of recomputing it every
    batch (ME-Net's bank of reconstructions): :func:`train_ssl` calls it once per image set before the
    first step, with the set on the compute device (the main images, then ``extra_images``), and maps
    every batch of that set with the returned :data:`IndexedTransform`, given the batch's row indices
    *into that set* (0 … len(set) − 1: the canvases' indices are not offset by N). At most one of the two
    is set. ``prepare`` must not draw from torch's global generators (the views' stream).
    """

    batch_transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    loss_fn: LossFn | None = None
    make_optimizer: Callable[[SSLMethod, SSLRecipe, int], torch.optim.Optimizer] | None = None
    prepare: Callable[[torch.Tensor], IndexedTransform] | None = None

    def __post_init__(self) -> None:
        if self.batch_transform is not None and self.prepare is not None:
            raise ValueError("SSLTrainingHooks: set batch_transform or prepare, not both")


def make_optimizer(model: nn.Module, recipe: SSLRecipe) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)


def cosine_lr(step: int, total: int, warmup: int, base_lr: float) -> float:
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress_ = (step - warmup) / max(1, total - warmup)
    return base_lr * 0.5 * (1 + math.cos(math.pi * progress_))


def train_ssl(recipe: SSLRecipe, images: torch.Tensor, *, seed: int, device: torch.device,
              hooks: SSLTrainingHooks | None = None, desc: str = "pre-train",
              model: SSLMethod | None = None, epochs: int | None = None,
              extra_images: torch.Tensor | None = None) -> SSLMethod:
    """Pre-train ``recipe`` on ``images`` (N, C, H, W in [0, 1]) and return the SSL model (train mode off).

    ``model`` continues training an existing model (used by Contrastive Poisoning's alternation).
    ``extra_images`` (M, C, H', W') are more pre-training images of another shape (injected canvases,
    e.g. PoisonedEncoder's [target | reference] stitches): every batch samples indices over the union of
    the N + M images, each group is transformed (``hooks.batch_transform``) and augmented separately
    (each view a crop of the whole image resized to H × W, as the augmentation does for any input size)
    and the views are concatenated, clean group first; ``hooks.prepare`` is called for each set and maps
    each group with its rows' indices in its own set. ``hooks.loss_fn`` then receives the batch's clean
    images as its ``clean`` argument (the canvases reach it through the views only). Without
    ``extra_images`` the loop is unchanged.
    """
    hooks = hooks or SSLTrainingHooks()
    seed_everything(seed)
    n, channels, size = images.shape[0], images.shape[1], images.shape[-1]
    if extra_images is not None:
        if extra_images.dim() != 4 or extra_images.shape[1] != channels:
            raise ValueError(f"extra_images: shape {tuple(extra_images.shape)}, expected (m, {channels}, h, w)")
        if len(extra_images) == 0:
            extra_images = None
    m = 0 if extra_images is None else len(extra_images)
    total_n = n + m
    if model is None:
        model = recipe.build_model(channels)
    model = model.to(device)
    cuda = device.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    augment = place_augmentation(build_augmentation(recipe.augment_config(), image_size=size, channels=channels),
                                 device)
    optimizer = (hooks.make_optimizer or (lambda m_, r, s: make_optimizer(m_, r)))(model, recipe, total_n)
    data = images.to(device)
    extra = None if extra_images is None else extra_images.to(device)
    indexed = _prepared(hooks, data, extra)
    batch = min(recipe.batch_size, total_n)
    steps_per_epoch = max(1, total_n // batch)
    n_epochs = epochs or recipe.epochs
    total = n_epochs * steps_per_epoch
    warmup = recipe.warmup_epochs * steps_per_epoch
    generator = torch.Generator(device="cpu").manual_seed(seed)

    def transform(x: torch.Tensor, idx: torch.Tensor, group: int) -> torch.Tensor:
        if indexed is not None:
            return indexed[group](x, idx)
        return hooks.batch_transform(x) if hooks.batch_transform is not None else x

    def epoch(_: int) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        order = torch.randperm(total_n, generator=generator)
        if extra is None:
            order = order.to(device)
            return [(order[b * batch : (b + 1) * batch], None) for b in range(steps_per_epoch)]
        return list(_split_batches(order, n, batch, steps_per_epoch, device))

    def set_lr(step: int) -> None:
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, total, warmup, recipe.lr)

    def loss(indices: tuple[torch.Tensor, torch.Tensor | None]) -> torch.Tensor:
        clean_idx, extra_idx = indices
        if extra_idx is None:
            x = transform(data[clean_idx], clean_idx, 0)
            groups = [x]
        else:
            assert extra is not None  # batches with extra indices exist only with extra images
            x = transform(data[clean_idx], clean_idx, 0) if len(clean_idx) else data[clean_idx]
            groups = [g for g in (x, transform(extra[extra_idx], extra_idx, 1) if len(extra_idx) else None)
                      if g is not None and len(g)]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            if len(groups) == 1:
                v1, v2 = augment(groups[0]), augment(groups[0])
            else:
                v1 = torch.cat([augment(g) for g in groups])
                v2 = torch.cat([augment(g) for g in groups])
            if cuda:
                v1, v2 = v1.contiguous(memory_format=torch.channels_last), v2.contiguous(memory_format=torch.channels_last)
            return hooks.loss_fn(model, x, v1, v2) if hooks.loss_fn else model.loss(v1, v2)

    model.train()
    fit(optimizer, epoch_batches(n_epochs, epoch, desc=desc), loss, before_step=set_lr,
        after_step=lambda _: model.after_step())
    model.eval()
    return model


def _split_batches(order: torch.Tensor, n: int, batch: int, steps: int,
                   device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each step's rows of the epoch's permutation ``order`` (on the host, over N + M images) split into
    indices into the main set (< N) and into the extra set (≥ N, offset by −N), in permutation order.

    The split runs on the host, where every piece's length is known, and each kind of index reaches the
    device in one copy per epoch: the loop slices device tensors by host-known lengths, so no step waits
    for the device (a per-step ``idx[idx < n]`` on the device costs a ``nonzero`` sync each step).
    """
    rows = order[: steps * batch].view(steps, batch)
    main_pieces = [row[row < n] for row in rows]
    extra_pieces = [row[row >= n] - n for row in rows]
    main = _to_device(torch.cat(main_pieces), device).split([len(p) for p in main_pieces])
    extra = _to_device(torch.cat(extra_pieces), device).split([len(p) for p in extra_pieces])
    return list(zip(main, extra))


def _to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """One host-to-device copy (pinned and asynchronous on CUDA)."""
    if device.type != "cuda":
        return x.to(device)
    return x.pin_memory().to(device, non_blocking=True)


def _prepared(hooks: SSLTrainingHooks, data: torch.Tensor,
              extra: torch.Tensor | None) -> list[IndexedTransform] | None:
    """``hooks.prepare`` of the main images (and of the injected ones): one indexed transform per set."""
    if hooks.prepare is None:
        return None
    with torch.no_grad():
        return [hooks.prepare(data)] + ([] if extra is None else [hooks.prepare(extra)])


class FeatureExtractor(nn.Module):
    """The released encoder: backbone, then a frozen standardisation fitted on its pre-training data.

    This is the ``f`` every victim and white-box attacker uses; its parameters never require grad.
    """

    def __init__(self, backbone: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.backbone = backbone
        self.feature_dim = int(mean.numel())
        self.register_buffer("mean", mean.reshape(1, -1).clone())
        self.register_buffer("std", std.reshape(1, -1).clone())
        self.requires_grad_(False)
        self.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (self.backbone(images).float() - self.mean) / self.std

    def train(self, mode: bool = True) -> FeatureExtractor:  # always frozen: BN uses running stats
        return super().train(False)


@torch.no_grad()
def backbone_features(backbone: nn.Module, images: torch.Tensor, device: torch.device, batch: int = 1024) -> torch.Tensor:
    backbone.eval()

    def features(chunk: torch.Tensor) -> torch.Tensor:
        with fast_path(device):
            return backbone(fast_layout(chunk.to(device, non_blocking=True), device)).float()

    return chunked(features, images, size=batch)


def make_extractor(backbone: nn.Module, pretrain_images: torch.Tensor, device: torch.device) -> FeatureExtractor:
    """Freeze ``backbone`` and fit the standardisation on its features of ``pretrain_images``."""
    backbone = backbone.to(device).eval()
    feats = backbone_features(backbone, pretrain_images, device)
    return FeatureExtractor(backbone, feats.mean(0), feats.std(0).clamp_min(1e-6)).to(device)


def extractor_from_tensors(recipe: SSLRecipe, in_chans: int, tensors: dict[str, torch.Tensor], device: torch.device) -> FeatureExtractor:
    backbone = recipe.build_model(in_chans).backbone
    backbone.load_state_dict({k.removeprefix("backbone."): v for k, v in tensors.items() if k.startswith("backbone.")})
    return FeatureExtractor(backbone, tensors["mean"], tensors["std"]).to(device)


def extractor_from_spec(spec: Mapping[str, Any], device: torch.device) -> FeatureExtractor:
    """The extractor a plugin process rebuilds from its plain description (``recipe``, ``in_chans``, ``tensors``)."""
    return extractor_from_tensors(SSLRecipe(**spec["recipe"]), int(spec["in_chans"]), spec["tensors"], device)


def extractor_tensors(extractor: FeatureExtractor) -> dict[str, torch.Tensor]:
    return {f"backbone.{k}": v for k, v in extractor.backbone.state_dict().items()} | {
        "mean": extractor.mean.flatten(), "std": extractor.std.flatten()}
