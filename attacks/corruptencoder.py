"""CorruptEncoder (Zhang, Jia, Gong, "Data Poisoning based Backdoor Attacks to Contrastive Learning", CVPR 2024).

Threat model (pre-training backdoor): the attacker injects images it composes: a reference object of the target
class and the trigger placed in two separate regions of a background twice the object's width. Random crops then
see the object alone or the trigger alone in two views of one image, and the contrastive loss pulls the trigger's
features to the object's. Layout rule (as its reference code places them): canvas height = object height, width =
``area_ratio`` × object width; the object bottom-aligned within ``object_margin`` × width of the left or right edge
(a coin flip); the trigger uniformly in the other region, ``trigger_margin`` / 2 of the width from the object and
the edge and ``trigger_margin`` of the height from top and bottom. Here the object is a whole target-class image at
full size (its pixels above ``mask_threshold`` when set), the background a random image of another class stretched
to the canvas (the paper draws backgrounds from a separate scene set, which these data sets lack) or ``blank``.
``mode: trigger_only`` releases no poison (a control).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F

from attacks._patterns import random_patch
from benchmark.api import BackdoorAttack, BackdoorAttackContext, BackdoorPoison, MethodConfig, check_range, register_attack


@dataclass(frozen=True, kw_only=True)
class CorruptEncoderConfig(MethodConfig):
    poison_ratio: float = 0.005  # of the pre-training set (the paper's 0.5 %), capped by the budget
    patch_fraction: float = 50 / 224  # trigger side / image side
    grid: int = 4
    area_ratio: float = 2.0  # canvas width / object width
    object_margin: float = 0.05
    trigger_margin: float = 0.25
    mask_threshold: float | None = None  # None: the whole reference image is the object
    background: Literal["other_class", "blank"] = "other_class"  # blank: zeros (digits on black have no scene)
    mode: Literal["poison", "trigger_only"] = "poison"

    def problems(self) -> list[str]:
        problems: list[str] = []
        check_range(problems, "poison_ratio", self.poison_ratio, 0.0, 1.0, low_open=True)
        check_range(problems, "patch_fraction", self.patch_fraction, 0.0, 0.5, low_open=True)
        check_range(problems, "grid", self.grid, 1, 64)
        check_range(problems, "area_ratio", self.area_ratio, 1.5, 2.0)
        check_range(problems, "object_margin", self.object_margin, 0.0, 0.2)
        check_range(problems, "trigger_margin", self.trigger_margin, 0.0, 0.5)
        if self.mask_threshold is not None:
            check_range(problems, "mask_threshold", self.mask_threshold, 0.0, 1.0)
        return problems


def _uniform(low: float, high: float, generator: torch.Generator) -> int:
    return int(low + float(torch.rand((), generator=generator)) * max(high - low, 0.0))


@register_attack
class CorruptEncoder(BackdoorAttack[CorruptEncoderConfig]):
    id = "corruptencoder"
    Config = CorruptEncoderConfig
    citation = "Zhang, Jia, Gong, Data Poisoning based Backdoor Attacks to Contrastive Learning, CVPR 2024"
    paper_url = "https://arxiv.org/abs/2211.08229"
    control_settings: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "mode": {"trigger_only": "the trigger at test time on a clean encoder, no poison released"}}
    cost: ClassVar[Mapping[str, Any]] = {"pretrain-backdoor": {}}  # composing images: no counted work

    def craft_backdoor(self, ctx: BackdoorAttackContext) -> BackdoorPoison:
        cfg, (n, channels, side, _) = self.config, ctx.images.shape
        gen = ctx.generator
        trigger_side = max(1, round(cfg.patch_fraction * side))
        patch = random_patch(channels, trigger_side, min(cfg.grid, trigger_side), gen)
        references = torch.nonzero(ctx.labels == ctx.target_class).flatten()
        backgrounds = torch.nonzero(ctx.labels != ctx.target_class).flatten()
        count = 0 if cfg.mode == "trigger_only" else min(ctx.budget, max(1, round(cfg.poison_ratio * n)))
        width = round(cfg.area_ratio * side)
        canvases, locations = torch.empty(count, channels, side, width), torch.empty(count, 2, dtype=torch.int64)
        for k in range(count):
            reference = ctx.images[references[torch.randint(len(references), (), generator=gen)]]
            background = ctx.images[backgrounds[torch.randint(len(backgrounds), (), generator=gen)]]
            canvas = (torch.zeros(channels, side, width) if cfg.background == "blank" else
                      F.interpolate(background[None], size=(side, width), mode="bilinear", align_corners=False)[0])
            left = bool(torch.rand((), generator=gen) < 0.5)
            margin = cfg.object_margin * width
            x = _uniform(0, margin, gen) if left else _uniform(width - side - margin, width - side, gen)
            mask = (torch.ones(side, side, dtype=torch.bool) if cfg.mask_threshold is None
                    else reference.amax(0) > cfg.mask_threshold)
            canvas[:, :, x:x + side] = torch.where(mask, reference, canvas[:, :, x:x + side])
            dx, dy = cfg.trigger_margin / 2 * width, cfg.trigger_margin * side
            tx = (_uniform(x + side + dx, width - dx - trigger_side, gen) if left
                  else _uniform(dx, x - dx - trigger_side, gen))
            tx = min(max(tx, 0), width - trigger_side)
            ty = min(max(_uniform(dy, side - dy - trigger_side, gen), 0), side - trigger_side)
            canvas[:, ty:ty + trigger_side, tx:tx + trigger_side] = patch
            canvases[k], locations[k] = canvas.clamp(0, 1), torch.tensor([ty, tx])
        return BackdoorPoison(images=canvases, indices=None, target_class=ctx.target_class, patch=patch,
                              patch_locations=locations, diagnostics={"canvas_width": float(width),
                                                                      "trigger_side": float(trigger_side)})
