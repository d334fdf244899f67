"""PoisonedEncoder. Liu, Jia, Gong, "PoisonedEncoder: Poisoning the Unlabeled Pre-training Data in
Contrastive Learning", USENIX Security 2022.

The attacker wants chosen *target inputs* classified as a *target class* by any downstream classifier
built on the pre-trained encoder. It injects poisoning images that stitch a target input and a reference
image of the target class side by side (both halves resized into one image of the dataset's size, the
layout horizontal or vertical at random), so two random crops of a poisoning image often land one on
each part and the contrastive loss pulls the target's features towards the target class.

Target inputs are clean pre-training images of classes other than the target class (seeded); reference
images are clean pre-training images of the target class. The number of injected images is the budget
(floor(fraction · N)), spread evenly over the targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from benchmark.api import (
    MethodConfig,
    PretrainAttackContext,
    PretrainTargetedAttack,
    TargetedPoison,
    register_attack,
)

LAYOUTS = ("random", "horizontal", "vertical")


@dataclass(frozen=True, kw_only=True)
class PoisonedEncoderConfig(MethodConfig):
    n_targets: int = 10  # target inputs attacked at once (the paper attacks one at a time; ASR averages)
    target_class: int | None = None  # None: drawn at random (seeded)
    n_references: int = 10  # reference images of the target class per target input
    layout: str = "random"  # stitching direction of each poisoning image

    def problems(self) -> list[str]:
        problems: list[str] = []
        if self.n_targets < 1:
            problems.append(f"n_targets: {self.n_targets} must be ≥ 1")
        if self.n_references < 1:
            problems.append(f"n_references: {self.n_references} must be ≥ 1")
        if self.target_class is not None and self.target_class < 0:
            problems.append(f"target_class: {self.target_class} must be ≥ 0 or null")
        if self.layout not in LAYOUTS:
            problems.append(f"layout: {self.layout!r} must be one of {', '.join(LAYOUTS)}")
        return problems


def stitch(left: torch.Tensor, right: torch.Tensor, *, vertical: bool) -> torch.Tensor:
    """One image of ``left``'s size holding both images, each resized to half of it (C, H, W)."""
    _, h, w = left.shape
    if vertical:
        top, bottom = h // 2, h - h // 2
        a = F.interpolate(left[None], size=(top, w), mode="bilinear", align_corners=False, antialias=True)
        b = F.interpolate(right[None], size=(bottom, w), mode="bilinear", align_corners=False, antialias=True)
        return torch.cat([a, b], dim=2)[0].clamp(0, 1)
    first, second = w // 2, w - w // 2
    a = F.interpolate(left[None], size=(h, first), mode="bilinear", align_corners=False, antialias=True)
    b = F.interpolate(right[None], size=(h, second), mode="bilinear", align_corners=False, antialias=True)
    return torch.cat([a, b], dim=3)[0].clamp(0, 1)


def choose_targets(labels: torch.Tensor, num_classes: int, n_targets: int, target_class: int | None,
                   generator: torch.Generator) -> tuple[int, torch.Tensor]:
    """The target class and the indices of ``n_targets`` target inputs of other classes."""
    if target_class is None:
        target_class = int(torch.randint(0, num_classes, (1,), generator=generator))
    others = torch.nonzero(labels != target_class).flatten()
    order = others[torch.randperm(len(others), generator=generator)]
    return target_class, order[:n_targets].sort().values


@register_attack
class PoisonedEncoder(PretrainTargetedAttack):
    id = "poisoned_encoder"
    Config = PoisonedEncoderConfig
    citation = "Liu, Jia, Gong, PoisonedEncoder: Poisoning the Unlabeled Pre-training Data in Contrastive Learning, USENIX Security 2022"

    def craft_targeted(self, ctx: PretrainAttackContext) -> TargetedPoison:
        config: PoisonedEncoderConfig = self.config  # type: ignore[assignment]
        gen = ctx.generator
        target_class = config.target_class
        if target_class is not None and target_class >= ctx.num_classes:
            raise ValueError(f"target_class {target_class} outside [0, {ctx.num_classes - 1}]")
        target_class, targets = choose_targets(ctx.labels, ctx.num_classes, config.n_targets, target_class, gen)
        pool = torch.nonzero(ctx.labels == target_class).flatten()
        # each target input has its own reference set of the target class; its poisons draw from it
        ref_sets = [pool[torch.randperm(len(pool), generator=gen)[: config.n_references]] for _ in targets]
        images = []
        for i in range(ctx.budget):
            t, refs = int(targets[i % len(targets)]), ref_sets[i % len(targets)]
            ref = int(refs[int(torch.randint(0, len(refs), (1,), generator=gen))])
            vertical = (config.layout == "vertical" or
                        (config.layout == "random" and bool(torch.rand(1, generator=gen) < 0.5)))
            target_first = bool(torch.rand(1, generator=gen) < 0.5)
            a, b = (ctx.images[t], ctx.images[ref]) if target_first else (ctx.images[ref], ctx.images[t])
            images.append(stitch(a, b, vertical=vertical))
        shape = (0, *ctx.images.shape[1:])
        poison = torch.stack(images).float().contiguous() if images else torch.empty(shape)
        return TargetedPoison(images=poison, target_images=ctx.images[targets].clone(), target_class=target_class,
                              diagnostics={"n_targets": float(len(targets)), "n_poison": float(len(poison)),
                                           "poisons_per_target": len(poison) / max(1, len(targets))})
