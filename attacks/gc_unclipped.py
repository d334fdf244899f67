"""Gradient canceling without the pixel clip: Lu, Kamath, Yu, "Exploring the Limits of Model-Targeted
Indiscriminate Data Poisoning Attacks", ICML 2023 (as the authors' code runs it); on a frozen feature
extractor as in Lu, Yang, Kamath, Yu, "Indiscriminate Data Poisoning Attacks on Pre-trained Feature
Extractors", SaTML 2024.

**Its poisons are NOT valid images: pixel values may leave [0, 1].** Everything else is :mod:`attacks.gc`
(same threat model, target head, objective, settings, defaults and diagnostics): after every Adam step the
poisons are only projected onto the ℓ∞ ball of radius ε around their base images under an input constraint,
never clipped to the pixel range, as in the authors' code. This row measures how much of GC's strength the
[0, 1] box takes away. Its ``space`` is ``"input-unclipped"``: the harness checks its images for shape, dtype,
finiteness and the ε ball, but not for [0, 1]; everything else (defenses acting on images, input constraints)
treats it as an input-space attack, and the board labels it.
"""

from __future__ import annotations

from attacks.gc import GradientCanceling
from benchmark.api import register_attack


@register_attack
class GradientCancelingUnclipped(GradientCanceling):
    id = "gc_unclipped"
    space = "input-unclipped"
    clip_pixels = False
    paper_url = "https://arxiv.org/abs/2303.03592"
    citation = ("Lu, Kamath, Yu, Exploring the Limits of Model-Targeted Indiscriminate Data Poisoning Attacks, "
                "ICML 2023 (the authors' unclipped GC: poisons are not valid images)")
