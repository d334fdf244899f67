"""Trigger patterns the backdoor attacks share."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_patch(channels: int, side: int, grid: int, generator: torch.Generator) -> torch.Tensor:
    """A (channels, side, side) patch of grid × grid cells, each a random colour with 0/1 channels (the random-colour
    patterns of Saha et al.'s HTBA triggers)."""
    cells = torch.randint(0, 2, (1, channels, grid, grid), generator=generator).float()
    return F.interpolate(cells, size=(side, side), mode="nearest")[0]
