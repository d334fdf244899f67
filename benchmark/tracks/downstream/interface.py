"""The downstream track's side of the plugin API (re-exported by :mod:`benchmark.api`): what a downstream
attacker sees, what it returns, the base its attacks subclass, and how a plugin process rebuilds the context
from the plain data the harness sends."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch

from benchmark.plugin_base import CheckpointStore, ConfigT, FeatureExtractorView, HeadSpec, TrackAttack
from benchmark.pretrain import extractor_from_spec
from benchmark.tracks.downstream.info import INFO


@dataclass(frozen=True)
class DownstreamAttackContext:
    """What a downstream attacker sees: the frozen encoder, the clean downstream training set and budget."""

    extractor: FeatureExtractorView
    train_images: torch.Tensor  # (N, C, H, W) in [0, 1]; must not be mutated
    train_labels: torch.Tensor  # (N,) int64
    train_features: torch.Tensor  # f(train_images), cached
    num_classes: int
    budget: int  # maximal number of poisoned points, floor(eps_d * N)
    input_epsilon: float | None  # if set: each poison within this l_inf distance of its base image
    head: HeadSpec
    generator: torch.Generator
    device: torch.device
    cached: Callable[[str, Mapping[str, Any], Callable[[], dict[str, torch.Tensor]]], dict[str, torch.Tensor]]
    """``cached(kind, config, build)``: a tensor dict from the artifact cache, built once per config."""


@dataclass(frozen=True)
class DownstreamPoison:
    """Poisoned points added to the downstream training set.

    Input-space attacks fill ``images`` (and ``base_indices`` when poisons start from clean training
    points, required under an input constraint). Feature-space rows (``space = "feature"`` attacks) fill
    ``features`` instead: they are upper bounds, not input-space attacks, and are labelled as such.
    ``diagnostics`` holds scalars the attack wants recorded (for example a gradient residual).
    """

    labels: torch.Tensor
    images: torch.Tensor | None = None
    features: torch.Tensor | None = None
    base_indices: torch.Tensor | None = None
    diagnostics: dict[str, float] = field(default_factory=dict)


class DownstreamAttack(TrackAttack[ConfigT]):
    """Adds labeled points to the downstream training set of a frozen encoder's linear head."""

    track = INFO.name
    craft_method = "craft_downstream"
    poison_type = DownstreamPoison
    space: ClassVar[Literal["input", "input-unclipped", "feature"]] = "input"

    @abstractmethod
    def craft_downstream(self, ctx: DownstreamAttackContext) -> DownstreamPoison:
        """Return at most ``ctx.budget`` poisoned points."""

    @classmethod
    def context_from(cls, plain: Mapping[str, Any], *, generator: torch.Generator, device: torch.device,
                     cached: Any, checkpoints: CheckpointStore) -> tuple[DownstreamAttackContext, list[torch.Tensor]]:
        extractor = extractor_from_spec(plain["extractor"], device)
        ctx = DownstreamAttackContext(
            extractor=FeatureExtractorView(extractor, extractor.feature_dim, device), train_images=plain["train_images"],
            train_labels=plain["train_labels"], train_features=plain["train_features"],
            num_classes=int(plain["num_classes"]), budget=int(plain["budget"]), input_epsilon=plain["input_epsilon"],
            head=HeadSpec(int(plain["num_classes"]), float(plain["l2"])), generator=generator, device=device, cached=cached)
        given = [plain["train_images"], plain["train_labels"], plain["train_features"], *extractor.state_dict().values()]
        return ctx, given
