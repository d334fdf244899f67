"""Toy label flipping (a test fixture): copies of the training images of one class, labelled as the next class.

The toy track's attack, registered from its folder (``POISONBENCH_PLUGINS``)."""

from __future__ import annotations

import torch

# a track added as a package is part of the API: its interface's __all__ is found through benchmark.api
from benchmark.api import ToyAttack, ToyContext, ToyPoison, register_attack


@register_attack
class ToyLabelFlip(ToyAttack):
    id = "toy_label_flip"
    citation = "a test fixture"

    def craft_toy(self, ctx: ToyContext) -> ToyPoison:
        chosen = torch.nonzero(ctx.labels == 0).flatten()[: ctx.budget]
        return ToyPoison(images=ctx.images[chosen].clone(), labels=torch.ones(len(chosen), dtype=torch.int64),
                         diagnostics={"flipped": float(len(chosen))})
