"""The backdoor track's triggers, applied by the harness to test images (and by the validator to check poisons):
a patch pasted at a location (Saha et al., CVPR 2022) and CTRL's frequency trigger (Li et al., ICCV 2023)."""

from __future__ import annotations

import math

import kornia.color
import torch


def paste_patch(images: torch.Tensor, patch: torch.Tensor, locations: torch.Tensor, opacity: float = 1.0) -> torch.Tensor:
    """``images`` (N, C, H, W) with ``patch`` (C, h, w) pasted with its top-left corner at ``locations`` (N, 2);
    with ``opacity`` < 1 blended: ``(1 − opacity) · image + opacity · patch`` under it."""
    out = images.clone()
    h, w = patch.shape[-2:]
    for i, (row, col) in enumerate(locations.tolist()):
        region = out[i, :, row:row + h, col:col + w]
        out[i, :, row:row + h, col:col + w] = patch if opacity >= 1 else (1 - opacity) * region + opacity * patch
    return out


def random_locations(n: int, image_shape: tuple[int, ...], patch_shape: tuple[int, ...],
                     generator: torch.Generator, region: tuple[float, float] | None = None) -> torch.Tensor:
    """``n`` top-left corners (row, col), uniform over the positions where the patch lies inside the image; with
    ``region`` (low, high), over [low · side, high · side − patch side] (a single position when that is empty, as
    Noisy Alignment's code places its trigger)."""
    def axis(side: int, size: int) -> torch.Tensor:
        low, high = (0, side - size) if region is None else (int(side * region[0]), int(side * region[1] - size))
        low = min(low, side - size)
        return torch.randint(low, max(low, min(high, side - size)) + 1, (n,), generator=generator)

    rows = axis(image_shape[-2], patch_shape[-2])
    cols = axis(image_shape[-1], patch_shape[-1])
    return torch.stack([rows, cols], dim=1)


def dct_matrix(n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The orthonormal DCT-II matrix: ``D @ x @ D.T`` is the 2-D DCT of an (n, n) block, ``D.T @ X @ D`` its inverse."""
    k = torch.arange(n, dtype=dtype).reshape(-1, 1)
    i = torch.arange(n, dtype=dtype).reshape(1, -1)
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2 / n)
    d[0] /= math.sqrt(2)
    return d


def add_frequency(images: torch.Tensor, coefficients: torch.Tensor, window: int) -> torch.Tensor:
    """CTRL's trigger: in every ``window``-sided tile of the chroma channels (Cb, Cr of YCbCr; the intensity of a
    one-channel image), add ``magnitude`` / 255 to the orthonormal DCT-II coefficient (u, v) for each row (u, v,
    magnitude) of ``coefficients``; back to RGB, clamped to [0, 1]."""
    n, c, h, w = images.shape
    x = images.double()
    planes = kornia.color.rgb_to_ycbcr(x) if c == 3 else x
    channels = [1, 2] if c == 3 else [0]
    d = dct_matrix(window)
    tiles = planes[:, channels].reshape(n, len(channels), h // window, window, w // window, window).transpose(3, 4)
    spectrum = d @ tiles @ d.T
    for u, v, magnitude in coefficients.tolist():
        spectrum[..., int(u), int(v)] += magnitude / 255.0
    tiles = (d.T @ spectrum @ d).transpose(3, 4).reshape(n, len(channels), h, w)
    planes = planes.clone()
    planes[:, channels] = tiles
    out = kornia.color.ycbcr_to_rgb(planes) if c == 3 else planes
    return out.clamp(0.0, 1.0).to(images.dtype)
