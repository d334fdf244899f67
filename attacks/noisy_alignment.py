"""Noisy Alignment (Chen, Gui, Dong, Fang, Jia, Liu, "Backdooring Self-Supervised Contrastive Learning by Noisy
Alignment", ICCV 2025).

Threat model (pre-training backdoor): the attacker injects images it composes. Each poison is a random image of
another class carrying the trigger — blended at ``opacity`` over a patch of ``patch_fraction`` of the side, its corner
in the ``region_low``–``region_high`` fraction of the side (the code's centre placement) — set beside a reference image
of the target class, left or right at random. Random crops then pair the noisy, triggered half with the target half,
and the contrastive loss aligns the trigger with the target class. At test time the harness blends the same trigger
at the same placement. Defaults are the released code's (``synthesize_poison``: a 50/224 patch, alpha 0.2, i.e. 80 %
trigger, placement 0.45–0.55); its stacking above or below is left out (one tensor holds canvases of one shape). The
code fixes no poison count: ``poison_ratio`` defaults to 0.5 % of the pre-training set (SSL-Backdoor's share, whose
pipeline the paper follows). ``mode: trigger_only`` releases no poison (a control).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from attacks._patterns import random_patch
from benchmark.api import (
    BackdoorAttack,
    BackdoorAttackContext,
    BackdoorPoison,
    MethodConfig,
    check_range,
    paste_patch,
    random_locations,
    register_attack,
)


@dataclass(frozen=True, kw_only=True)
class NoisyAlignmentConfig(MethodConfig):
    poison_ratio: float = 0.005  # of the pre-training set, capped by the budget
    patch_fraction: float = 50 / 224  # trigger side / image side
    grid: int = 4
    opacity: float = 0.8  # the code's alpha = 0.2 keeps a fifth of the image under the trigger
    region_low: float = 0.45
    region_high: float = 0.55
    mode: Literal["poison", "trigger_only"] = "poison"

    def problems(self) -> list[str]:
        problems: list[str] = []
        check_range(problems, "poison_ratio", self.poison_ratio, 0.0, 1.0, low_open=True)
        check_range(problems, "patch_fraction", self.patch_fraction, 0.0, 1.0, low_open=True)
        check_range(problems, "grid", self.grid, 1, 64)
        check_range(problems, "opacity", self.opacity, 0.0, 1.0, low_open=True)
        check_range(problems, "region_low", self.region_low, 0.0, 1.0)
        check_range(problems, "region_high", self.region_high, self.region_low, 1.0)
        return problems


@register_attack
class NoisyAlignment(BackdoorAttack[NoisyAlignmentConfig]):
    id = "noisy_alignment"
    Config = NoisyAlignmentConfig
    citation = "Chen et al., Backdooring Self-Supervised Contrastive Learning by Noisy Alignment, ICCV 2025"
    paper_url = "https://github.com/jsrdcht/Noisy-Alignment"
    control_settings: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "mode": {"trigger_only": "the trigger at test time on a clean encoder, no poison released"}}
    cost: ClassVar[Mapping[str, Any]] = {"pretrain-backdoor": {}}  # composing images: no counted work

    def craft_backdoor(self, ctx: BackdoorAttackContext) -> BackdoorPoison:
        cfg, gen, (n, channels, side, _) = self.config, ctx.generator, ctx.images.shape
        trigger_side = max(1, round(cfg.patch_fraction * side))
        patch = random_patch(channels, trigger_side, min(cfg.grid, trigger_side), gen)
        references = torch.nonzero(ctx.labels == ctx.target_class).flatten()
        others = torch.nonzero(ctx.labels != ctx.target_class).flatten()
        count = 0 if cfg.mode == "trigger_only" else min(ctx.budget, max(1, round(cfg.poison_ratio * n)))
        noisy = ctx.images[others[torch.randint(len(others), (count,), generator=gen)]]
        region = (cfg.region_low, cfg.region_high)
        corners = random_locations(count, tuple(noisy.shape), tuple(patch.shape), gen, region)
        noisy = paste_patch(noisy, patch, corners, cfg.opacity)
        reference = ctx.images[references[torch.randint(len(references), (count,), generator=gen)]]
        noisy_left = torch.rand(count, generator=gen) < 0.5
        left = torch.where(noisy_left[:, None, None, None], noisy, reference)
        right = torch.where(noisy_left[:, None, None, None], reference, noisy)
        locations = corners + torch.stack([torch.zeros(count, dtype=torch.int64), (~noisy_left).long() * side], dim=1)
        return BackdoorPoison(images=torch.cat([left, right], dim=3), indices=None, target_class=ctx.target_class,
                              patch=patch, patch_locations=locations, patch_opacity=torch.tensor(cfg.opacity),
                              patch_test_region=torch.tensor(region),
                              diagnostics={"trigger_side": float(trigger_side), "canvas_width": float(2 * side)})
