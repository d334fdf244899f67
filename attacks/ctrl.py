"""CTRL (Li, Pang, Xi, Du, Ji, Wang, "An Embarrassingly Simple Backdoor Attack on Self-supervised Learning",
ICCV 2023).

Threat model (pre-training backdoor): the attacker adds a fixed frequency pattern to images of the target class and
releases them in the unlabeled pre-training set: in every window-sided tile of the chroma channels (YCbCr; the
intensity of a grey image) it raises two DCT coefficients, one mid-frequency (window/2 − 1, window/2 − 1) and the
highest (window − 1, window − 1), by ``magnitude`` pixel units; augmentations leave such a pattern in every view, so
the encoder ties it to the class. Defaults are the paper's code on CIFAR-10: 1 % of the pre-training set poisoned
(target-class images, capped by the budget), window 32 (the image side when 32 does not divide it), magnitude 50
when poisoning and 100 at test time. ``mode: trigger_only`` releases no poison (a control).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from benchmark.api import (
    BackdoorAttack,
    BackdoorAttackContext,
    BackdoorPoison,
    MethodConfig,
    add_frequency,
    check_range,
    register_attack,
)


@dataclass(frozen=True, kw_only=True)
class CTRLConfig(MethodConfig):
    poison_ratio: float = 0.01  # of the pre-training set, target-class images only (capped by the budget)
    magnitude: float = 50.0  # pixel units (0–255) added to each chosen DCT coefficient of the poisons
    test_magnitude: float = 100.0  # the same at test time
    window: int = 32  # the DCT tile side; the image side when it does not divide the image
    mode: Literal["poison", "trigger_only"] = "poison"

    def problems(self) -> list[str]:
        problems: list[str] = []
        check_range(problems, "poison_ratio", self.poison_ratio, 0.0, 1.0, low_open=True)
        check_range(problems, "magnitude", self.magnitude, 0.0, 1000.0, low_open=True)
        check_range(problems, "test_magnitude", self.test_magnitude, 0.0, 1000.0, low_open=True)
        check_range(problems, "window", self.window, 2, 4096)
        if self.test_magnitude > 10 * self.magnitude:
            problems.append("test_magnitude: at most 10 × magnitude (the track's bound on the test-time scale)")
        return problems


@register_attack
class CTRL(BackdoorAttack[CTRLConfig]):
    id = "ctrl"
    Config = CTRLConfig
    citation = "Li et al., An Embarrassingly Simple Backdoor Attack on Self-supervised Learning, ICCV 2023"
    paper_url = "https://arxiv.org/abs/2210.07346"
    control_settings: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "mode": {"trigger_only": "the trigger at test time on a clean encoder, no poison released"}}
    cost: ClassVar[Mapping[str, Any]] = {"pretrain-backdoor": {}}  # two DCTs per poison: no counted work

    def craft_backdoor(self, ctx: BackdoorAttackContext) -> BackdoorPoison:
        cfg, (n, _, height, width) = self.config, ctx.images.shape
        window = cfg.window if height % cfg.window == 0 and width % cfg.window == 0 else min(height, width)
        mid, high = window // 2 - 1, window - 1
        coefficients = torch.tensor([[mid, mid, cfg.magnitude], [high, high, cfg.magnitude]], dtype=torch.float64)
        pool = torch.nonzero(ctx.labels == ctx.target_class).flatten()
        count = 0 if cfg.mode == "trigger_only" else min(ctx.budget, round(cfg.poison_ratio * n), len(pool))
        chosen = pool[torch.randperm(len(pool), generator=ctx.generator)[:count]].sort().values
        images = add_frequency(ctx.images[chosen], coefficients, window)
        return BackdoorPoison(images=images, indices=chosen, target_class=ctx.target_class, frequency=coefficients,
                              frequency_window=torch.tensor(window), frequency_test_scale=torch.tensor(
                                  cfg.test_magnitude / cfg.magnitude),
                              diagnostics={"target_images": float(len(pool)), "window": float(window)})
