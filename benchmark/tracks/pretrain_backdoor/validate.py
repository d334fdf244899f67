"""The backdoor threat model, checked on what an attack returns (:mod:`benchmark.validation`'s checks): the budget,
valid images, distinct replaced indices, one trigger kind, and that the poisons carry the trigger the harness will
apply at test time."""

from __future__ import annotations

import torch

from benchmark.tracks.pretrain_backdoor.interface import BackdoorPoison
from benchmark.tracks.pretrain_backdoor.triggers import add_frequency
from benchmark.validation import ThreatModelViolation, check_images

TOLERANCE = 1e-5  # float32 rounding of the same trigger function


def validate_backdoor(poison: object, *, budget: int, images: torch.Tensor, target_class: int) -> None:
    """Raise :class:`ThreatModelViolation` listing every way ``poison`` breaks the threat model: at most ``budget``
    images of the pre-training images' shape in [0, 1]; ``indices`` distinct and in range (or None: injected); the
    cell's target class; exactly one trigger; a patch present at its location in every poison, or every poison equal
    to its base image with the frequency trigger added."""
    if not isinstance(poison, BackdoorPoison):
        raise ThreatModelViolation([f"expected a BackdoorPoison, got {type(poison).__name__}"])
    problems: list[str] = []
    shape = tuple(images.shape[1:])
    ok = _check_poison_images(problems, poison, shape)
    if ok and len(poison.images) > budget:
        problems.append(f"count: {len(poison.images)} poisons exceed the budget of {budget}")
    if poison.target_class != target_class:
        problems.append(f"target_class: {poison.target_class}, but this cell's target class is {target_class}")
    indices_ok = _check_indices(problems, poison, len(images))
    patch = poison.patch is not None
    frequency = poison.frequency is not None
    if patch == frequency:
        problems.append("trigger: give exactly one of patch (with patch_locations) and frequency")
    elif ok and patch and indices_ok:
        _check_patch(problems, poison, shape, tuple(poison.images.shape[1:]), images)
    elif ok and indices_ok:
        _check_frequency(problems, poison, images, shape)
    if problems:
        raise ThreatModelViolation(problems)


def _check_poison_images(problems: list[str], poison: BackdoorPoison, shape: tuple[int, ...]) -> bool:
    """Replacing poisons have the pre-training images' shape; injected ones may be canvases of one shape with each
    side between the images' and twice it (the victim crops its views from the whole canvas)."""
    images = poison.images
    if poison.indices is not None or not isinstance(images, torch.Tensor) or images.dim() != 4:
        return check_images(problems, images, shape, "images")
    c, h, w = shape
    if images.shape[1] != c or not (h <= images.shape[2] <= 2 * h and w <= images.shape[3] <= 2 * w):
        problems.append(f"images: shape {tuple(images.shape)}, expected (n, {c}, h', w') with {h} ≤ h' ≤ {2 * h} "
                        f"and {w} ≤ w' ≤ {2 * w}")
        return False
    return check_images(problems, images, tuple(images.shape[1:]), "images")


def _check_indices(problems: list[str], poison: BackdoorPoison, n: int) -> bool:
    indices = poison.indices
    if indices is None:
        return True
    if indices.dtype != torch.int64 or indices.dim() != 1 or len(indices) != len(poison.images):
        problems.append(f"indices: expected a 1-D int64 tensor of one index per poison ({len(poison.images)}), "
                        f"got {indices.dtype} of shape {tuple(indices.shape)}")
        return False
    if len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= n):
        problems.append(f"indices: outside [0, {n - 1}]")
        return False
    if len(set(indices.tolist())) != len(indices):
        problems.append("indices: a pre-training image is replaced twice")
        return False
    return True


def _check_patch(problems: list[str], poison: BackdoorPoison, shape: tuple[int, ...], canvas: tuple[int, ...],
                 base: torch.Tensor | None) -> None:
    """A patch that fits the test images (``shape``), present at its location in every poison (``canvas``; blended
    over its ``base`` pre-training image where it replaces one)."""
    patch, locations = poison.patch, poison.patch_locations
    assert patch is not None
    if patch.dim() != 3 or not check_images(problems, patch.unsqueeze(0), (shape[0], *patch.shape[1:]), "patch"):
        return
    h, w = patch.shape[-2:]
    if not (0 < h <= shape[1] and 0 < w <= shape[2]):
        problems.append(f"patch: {h}×{w} does not fit a {shape[1]}×{shape[2]} image")
        return
    if locations is None or locations.dtype != torch.int64 or tuple(locations.shape) != (len(poison.images), 2):
        problems.append(f"patch_locations: expected an int64 tensor of shape ({len(poison.images)}, 2)")
        return
    rows, cols = locations[:, 0], locations[:, 1]
    if len(locations) and ((rows < 0) | (rows > canvas[1] - h) | (cols < 0) | (cols > canvas[2] - w)).any():
        problems.append("patch_locations: a patch lies outside its image")
        return
    opacity = _opacity(problems, poison)
    if opacity is None or not _test_region_ok(problems, poison):
        return
    wrong = [i for i, (r, c) in enumerate(locations.tolist())
             if not _carries(poison.images[i, :, r:r + h, c:c + w], patch, opacity,
                             None if poison.indices is None or base is None else base[int(poison.indices[i]), :, r:r + h, c:c + w])]
    if wrong:
        problems.append(f"patch: {len(wrong)} poisons (first: #{wrong[0]}) do not carry the patch at their location")


def _opacity(problems: list[str], poison: BackdoorPoison) -> float | None:
    if poison.patch_opacity is None:
        return 1.0
    if poison.patch_opacity.numel() != 1 or not 0 < float(poison.patch_opacity) <= 1:
        problems.append("patch_opacity: expected one number in (0, 1]")
        return None
    return float(poison.patch_opacity)


def _test_region_ok(problems: list[str], poison: BackdoorPoison) -> bool:
    region = poison.patch_test_region
    if region is not None and (region.numel() != 2 or not 0 <= float(region[0]) <= float(region[1]) <= 1):
        problems.append("patch_test_region: expected (low, high) fractions of the side with 0 ≤ low ≤ high ≤ 1")
        return False
    return True


def _carries(region: torch.Tensor, patch: torch.Tensor, opacity: float, base: torch.Tensor | None) -> bool:
    """Whether a poison's ``region`` holds the patch: the patch itself (opaque), the patch blended over its base image
    (a replaced image), or — over an injected canvas whose underlying pixels are unknown — a blend over *some*
    image in [0, 1]: region − opacity · patch within [0, 1 − opacity]."""
    if opacity >= 1:
        return bool((region - patch).abs().max() <= TOLERANCE)
    if base is not None:
        return bool((region - ((1 - opacity) * base + opacity * patch)).abs().max() <= TOLERANCE)
    rest = region - opacity * patch
    return bool(rest.min() >= -TOLERANCE and rest.max() <= 1 - opacity + TOLERANCE)


def _check_frequency(problems: list[str], poison: BackdoorPoison, images: torch.Tensor, shape: tuple[int, ...]) -> None:
    coefficients, window, scale = poison.frequency, poison.frequency_window, poison.frequency_test_scale
    assert coefficients is not None
    if coefficients.dim() != 2 or coefficients.shape[1] != 3 or not torch.isfinite(coefficients).all():
        problems.append(f"frequency: expected finite (K, 3) rows (u, v, magnitude), got {tuple(coefficients.shape)}")
        return
    if window is None or window.numel() != 1 or int(window) <= 0 or shape[1] % int(window) or shape[2] % int(window):
        problems.append(f"frequency_window: expected one positive integer dividing the image sides {shape[1:]}")
        return
    if scale is None or scale.numel() != 1 or not 0 < float(scale) <= 10:
        problems.append("frequency_test_scale: expected one number in (0, 10]")
        return
    u, v = coefficients[:, 0], coefficients[:, 1]
    if ((u < 0) | (v < 0) | (u >= int(window)) | (v >= int(window)) | (u != u.round()) | (v != v.round())).any():
        problems.append(f"frequency: (u, v) must be integer coefficients of a {int(window)}-sided tile")
        return
    if poison.indices is None:
        problems.append("indices: a frequency trigger is added to pre-training images: name the images it replaces")
        return
    expected = add_frequency(images[poison.indices], coefficients, int(window))
    wrong = ((poison.images - expected).abs().flatten(1).amax(1) > TOLERANCE).nonzero().flatten().tolist()
    if wrong:
        problems.append(f"frequency: {len(wrong)} poisons (first: #{wrong[0]}) are not their base image with the "
                        "declared trigger")
