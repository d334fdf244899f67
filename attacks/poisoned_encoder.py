"""PoisonedEncoder. Liu, Jia, Gong, "PoisonedEncoder: Poisoning the Unlabeled Pre-training Data in
Contrastive Learning", USENIX Security 2022.

Threat model (pre-training targeted): the attacker injects ``budget`` unlabeled images into the pre-training set,
drawing targets and references from the track's target pool (labelled downstream inputs in neither training set;
without a pool, the pre-training images); it wants each target classified as its target class by any downstream
classifier on the encoder. Each poisoning image stitches a target and a reference image of the target class side by
side at their own size (H × 2W with ``layout: horizontal``, 2H × W with ``vertical``; order drawn per image); the
victim crops every view from the whole canvas, so two views often land one on each part and the contrastive loss
pulls the target's features towards the target class. ``n_targets`` targets are attacked at once (the paper: one),
the budget spread evenly over them, each with ``n_references`` references; ``n_target_classes = k > 1`` splits them
round-robin over k seeded target classes. Control ``reference: decoy``: references of a seeded decoy class, every
other draw the attack's (each from its own seeded stream); its target-probability gain should be ≈ 0 or negative.
``single_part_view_fraction``: the share of positive pairs (the victim's crop geometry) with one view at least 75 %
target and the other at least 75 % reference.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch

from benchmark.api import (
    AugmentConfig,
    MethodConfig,
    PretrainAttackContext,
    PretrainTargetedAttack,
    TargetedPoison,
    build_augmentation,
    register_attack,
)

LAYOUTS = ("horizontal", "vertical")
REFERENCES = ("target_class", "decoy")
DIAGNOSTIC_PAIRS = 4000  # positive pairs drawn to measure the single-part view fraction
MOSTLY = 0.75  # a view is "mostly" one part when that part covers at least this share of it
# the independent random streams of one crafting, seeded in this order from the context's generator
STREAMS = ("classes", "targets", "decoys", "references", "poisons", "diagnostic")


@dataclass(frozen=True, kw_only=True)
class PoisonedEncoderConfig(MethodConfig):
    n_targets: int = 20  # target inputs attacked at once (the paper attacks one at a time; ASR averages)
    target_class: int | None = None  # None: drawn at random (seeded)
    n_target_classes: int = 1  # distinct target classes the targets are split over (1: the paper)
    n_references: int = 10  # reference images per target input
    layout: str = "horizontal"  # horizontal: [target | reference] on H × 2W; vertical: 2H × W
    reference: str = "target_class"  # target_class (the paper) or decoy (control: references of another class)

    def problems(self) -> list[str]:
        problems: list[str] = []
        if self.n_targets < 1:
            problems.append(f"n_targets: {self.n_targets} must be ≥ 1")
        if self.n_references < 1:
            problems.append(f"n_references: {self.n_references} must be ≥ 1")
        if self.target_class is not None and self.target_class < 0:
            problems.append(f"target_class: {self.target_class} must be ≥ 0 or null")
        if not 1 <= self.n_target_classes <= max(1, self.n_targets):
            problems.append(f"n_target_classes: {self.n_target_classes} must be in [1, n_targets = {self.n_targets}]")
        if self.target_class is not None and self.n_target_classes != 1:
            problems.append("target_class: a fixed target class needs n_target_classes = 1")
        if self.layout not in LAYOUTS:
            problems.append(f"layout: {self.layout!r} must be one of {', '.join(LAYOUTS)}")
        if self.reference not in REFERENCES:
            problems.append(f"reference: {self.reference!r} must be one of {', '.join(REFERENCES)}")
        return problems


def stitch(first: torch.Tensor, second: torch.Tensor, *, vertical: bool) -> torch.Tensor:
    """The two (C, H, W) images side by side at their own size: (C, H, 2W), or (C, 2H, W) if ``vertical``."""
    return torch.cat([first, second], dim=1 if vertical else 2).clamp(0, 1)


def part_indicator(height: int, width: int, *, vertical: bool) -> torch.Tensor:
    """A two-channel indicator of the canvas [target | reference] built by :func:`stitch` from H × W
    parts: channel 0 is 1 on the target part, channel 1 on the reference part."""
    target, reference = torch.ones(1, height, width), torch.zeros(1, height, width)
    first = stitch(target, reference, vertical=vertical)
    return torch.cat([first, 1 - first])


def single_part_view_fraction(indicator: torch.Tensor, augment: AugmentConfig, *, image_size: int,
                              pairs: int = DIAGNOSTIC_PAIRS, seed: int = 0, mostly: float = MOSTLY) -> float:
    """The fraction of positive pairs of ``indicator`` (2, H', W': target and reference masks of a canvas)
    in which one view is at least ``mostly`` target and the other at least ``mostly`` reference, each view
    drawn by the victim's augmentation ``augment`` (colour jitter and grayscale off: only the geometry
    counts) and resized to ``image_size``. Seeded; the global generators are left as they were."""
    geometry = replace(augment, jitter_strength=0.0, jitter_prob=0.0, grayscale_prob=0.0)
    pipeline = build_augmentation(geometry, image_size=image_size, channels=2)
    batch = indicator[None].float().expand(pairs, -1, -1, -1).contiguous()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        share = []
        for _ in range(2):
            view = pipeline(batch).sum(dim=(2, 3))  # (pairs, 2): target and reference area of each view
            share.append(view[:, 0] / view.sum(1).clamp_min(1e-12))
    a, b = share
    split = ((a >= mostly) & (b <= 1 - mostly)) | ((a <= 1 - mostly) & (b >= mostly))
    return float(split.float().mean())


def choose_class(num_classes: int, excluded: set[int], generator: torch.Generator,
                 present: set[int] | None = None) -> int:
    """A seeded class outside ``excluded`` among those ``present`` (default: all): a class with no image
    in the pool can never be drawn (a CIFAR-100 subset leaves some empty)."""
    allowed = [c for c in range(num_classes) if c not in excluded and (present is None or c in present)]
    if not allowed:
        raise ValueError(f"no class with images left outside {sorted(excluded)} among {num_classes} classes "
                         f"(classes present in the target pool: {sorted(present) if present is not None else 'all'})")
    return allowed[int(torch.randint(0, len(allowed), (1,), generator=generator))]


def choose_targets(labels: torch.Tensor, excluded: set[int], n_targets: int, generator: torch.Generator,
                   taken: torch.Tensor | None = None) -> torch.Tensor:
    """Sorted indices of ``n_targets`` seeded inputs whose class is not in ``excluded`` (nor in ``taken``)."""
    keep = torch.ones(len(labels), dtype=torch.bool)
    for c in excluded:
        keep &= labels != c
    if taken is not None:
        keep[taken] = False
    others = torch.nonzero(keep).flatten()
    if len(others) == 0:
        raise ValueError(f"no target input of a class outside {sorted(excluded)}")
    return others[torch.randperm(len(others), generator=generator)[:n_targets]].sort().values


@register_attack
class PoisonedEncoder(PretrainTargetedAttack[PoisonedEncoderConfig]):
    id = "poisoned_encoder"
    cost: ClassVar[Mapping[str, Any]] = {"pretrain-targeted": {}}  # stitching images: no counted work
    Config = PoisonedEncoderConfig
    paper_url = "https://arxiv.org/abs/2205.06401"
    citation = "Liu, Jia, Gong, PoisonedEncoder: Poisoning the Unlabeled Pre-training Data in Contrastive Learning, USENIX Security 2022"
    # settings that make this attack a control row on the board (read there, never by the harness)
    control_settings: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "reference": {"decoy": "references from another class: should not raise the target class"}}

    def craft_targeted(self, ctx: PretrainAttackContext) -> TargetedPoison:
        config = self.config
        if ctx.target_pool_images is not None and ctx.target_pool_labels is not None:
            pool_images, pool_labels = ctx.target_pool_images, ctx.target_pool_labels
        else:  # a context built outside the track: the pre-training images stand in for the pool
            pool_images, pool_labels = ctx.images, ctx.labels
        streams = {name: torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=ctx.generator)))
                   for name in STREAMS}
        present = {int(c) for c in pool_labels.unique()}
        n_targets = min(config.n_targets, max(1, ctx.budget))  # a target without a poison is not attacked
        goals = self._target_classes(config, min(config.n_target_classes, n_targets), ctx.num_classes, present,
                                     streams["classes"])
        targets, goal_of = self._targets_of(pool_labels, goals, n_targets, streams["targets"])
        references = self._reference_classes(config, goals, goal_of, pool_labels[targets], present, streams["decoys"])
        # each target input has its own reference set (of its reference class); its poisons draw from it
        ref_sets = [self._reference_set(pool_labels, references[int(g)], config.n_references, streams["references"])
                    for g in goal_of]
        vertical = config.layout == "vertical"
        images = []
        for i in range(ctx.budget):
            t, refs = int(targets[i % len(targets)]), ref_sets[i % len(targets)]
            ref = int(refs[int(torch.randint(0, len(refs), (1,), generator=streams["poisons"]))])
            target_first = bool(torch.rand(1, generator=streams["poisons"]) < 0.5)
            a, b = (pool_images[t], pool_images[ref]) if target_first else (pool_images[ref], pool_images[t])
            images.append(stitch(a, b, vertical=vertical))
        c, h, w = pool_images.shape[1:]
        canvas = (2 * h, w) if vertical else (h, 2 * w)
        poison = torch.stack(images).float().contiguous() if images else torch.empty((0, c, *canvas))
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=streams["diagnostic"]))
        fraction = single_part_view_fraction(part_indicator(h, w, vertical=vertical), ctx.ssl.augment_config(),
                                             image_size=int(ctx.images.shape[-1]), seed=seed)
        diagnostics = {"n_target_classes": float(len(goals)), "n_targets": float(len(targets)),
                       "n_poison": float(len(poison)), "poisons_per_target": len(poison) / max(1, len(targets)),
                       "canvas_height": float(canvas[0]), "canvas_width": float(canvas[1]),
                       "single_part_view_fraction": fraction}
        if len(goals) == 1:
            diagnostics["reference_class"] = float(references[0])
        classes = torch.tensor(goals, dtype=torch.int64)[goal_of]
        target_class: int | torch.Tensor = goals[0] if len(goals) == 1 else classes
        return TargetedPoison(images=poison, target_images=pool_images[targets].clone().float().contiguous(),
                              target_class=target_class, diagnostics=diagnostics)

    @staticmethod
    def _target_classes(config: PoisonedEncoderConfig, n_classes: int, num_classes: int, present: set[int],
                        gen: torch.Generator) -> list[int]:
        """Distinct seeded target classes among those in the pool (or the configured one)."""
        if config.target_class is not None:
            if config.target_class >= num_classes:
                raise ValueError(f"target_class {config.target_class} outside [0, {num_classes - 1}]")
            return [config.target_class]
        goals: list[int] = []
        for _ in range(n_classes):
            goals.append(choose_class(num_classes, set(goals), gen, present))
        return goals

    @staticmethod
    def _targets_of(labels: torch.Tensor, goals: list[int], n_targets: int,
                    gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Sorted target indices and the goal (index into ``goals``) of each: target ``i`` of the round robin
        belongs to goal ``i mod k`` and is drawn from classes other than that goal's."""
        chosen, goal_of = [], []
        taken = torch.zeros(0, dtype=torch.int64)
        for j, target_class in enumerate(goals):
            picked = choose_targets(labels, {target_class}, len(range(j, n_targets, len(goals))), gen, taken)
            taken = torch.cat([taken, picked])
            chosen.append(picked)
            goal_of += [j] * len(picked)
        indices = torch.cat(chosen)
        order = indices.argsort()
        return indices[order], torch.tensor(goal_of, dtype=torch.int64)[order]

    @staticmethod
    def _reference_classes(config: PoisonedEncoderConfig, goals: list[int], goal_of: torch.Tensor,
                           target_labels: torch.Tensor, present: set[int], gen: torch.Generator) -> list[int]:
        """The reference class of each goal: the target class itself, or (control) a seeded decoy class that
        is no target class and, where the pool leaves one, not the class of any of that goal's targets."""
        if config.reference != "decoy":
            return list(goals)
        decoys = []
        for j, target_class in enumerate(goals):
            of_targets = {int(c) for c in target_labels[goal_of == j]}
            allowed = sorted(present - set(goals) - of_targets) or sorted(present - {target_class} - of_targets)
            if not allowed:
                allowed = sorted(present - {target_class})
            if not allowed:
                raise ValueError(f"no class with images left outside {{{target_class}}} for a decoy "
                                 f"(classes present in the target pool: {sorted(present)})")
            decoys.append(allowed[int(torch.randint(0, len(allowed), (1,), generator=gen))])
        return decoys

    @staticmethod
    def _reference_set(labels: torch.Tensor, reference_class: int, n_references: int,
                       gen: torch.Generator) -> torch.Tensor:
        refs_of_class = torch.nonzero(labels == reference_class).flatten()
        if len(refs_of_class) == 0:
            raise ValueError(f"no reference image of class {reference_class} in the target pool")
        return refs_of_class[torch.randperm(len(refs_of_class), generator=gen)[:n_references]]
