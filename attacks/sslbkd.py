"""SSL-Backdoor (Saha, Subramanya, Pirsiavash, "Backdoor Attacks on Self-Supervised Learning", CVPR 2022).

Threat model (pre-training backdoor): the attacker pastes a patch trigger at a random location on images of the
target category and releases them in the unlabeled pre-training set; the victim's SSL method learns to group the
trigger with the target category, so a probe fitted on clean data puts triggered images of other classes there.
Defaults are the paper's ImageNet-100 setting: half of the target category's images poisoned (capped by the
budget), a random-colour patch of 50/224 of the image side. With ``mode: trigger_only`` the attack releases no
poison: the row measures the trigger alone on a clean encoder (a control).
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
class SSLBKDConfig(MethodConfig):
    patch_fraction: float = 50 / 224  # patch side / image side
    grid: int = 4  # the patch is a grid × grid pattern of random colours (HTBA-style)
    target_share: float = 0.5  # of the target category's images poisoned (capped by the budget)
    mode: Literal["poison", "trigger_only"] = "poison"

    def problems(self) -> list[str]:
        problems: list[str] = []
        check_range(problems, "patch_fraction", self.patch_fraction, 0.0, 1.0, low_open=True)
        check_range(problems, "grid", self.grid, 1, 64)
        check_range(problems, "target_share", self.target_share, 0.0, 1.0, low_open=True)
        return problems


@register_attack
class SSLBKD(BackdoorAttack[SSLBKDConfig]):
    id = "sslbkd"
    Config = SSLBKDConfig
    citation = "Saha et al., Backdoor Attacks on Self-Supervised Learning, CVPR 2022"
    paper_url = "https://arxiv.org/abs/2105.10123"
    control_settings: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "mode": {"trigger_only": "the trigger at test time on a clean encoder, no poison released"}}
    cost: ClassVar[Mapping[str, Any]] = {"pretrain-backdoor": {}}  # pasting a patch: no counted work

    def craft_backdoor(self, ctx: BackdoorAttackContext) -> BackdoorPoison:
        cfg, (_, channels, height, width) = self.config, ctx.images.shape
        side = max(1, round(cfg.patch_fraction * min(height, width)))
        patch = random_patch(channels, side, min(cfg.grid, side), ctx.generator)
        pool = torch.nonzero(ctx.labels == ctx.target_class).flatten()
        count = 0 if cfg.mode == "trigger_only" else min(ctx.budget, round(cfg.target_share * len(pool)))
        chosen = pool[torch.randperm(len(pool), generator=ctx.generator)[:count]].sort().values
        locations = random_locations(count, tuple(ctx.images.shape), tuple(patch.shape), ctx.generator)
        images = paste_patch(ctx.images[chosen], patch, locations)
        return BackdoorPoison(images=images, indices=chosen, target_class=ctx.target_class, patch=patch,
                              patch_locations=locations,
                              diagnostics={"target_images": float(len(pool)), "patch_side": float(side)})
