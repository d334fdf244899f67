"""The targeted pre-training threat model, checked on what an attack returns (:mod:`benchmark.validation`'s
checks)."""

from __future__ import annotations

import torch

from benchmark.tracks.pretrain_targeted.interface import TargetedPoison
from benchmark.validation import ThreatModelViolation, check_images


def _check_canvas(problems: list[str], images: object, shape: tuple[int, int, int], what: str) -> bool:
    """Injected images of one shape (M, C, H', W'): the dataset's channels, each side between the
    dataset's side and twice it (a stitched canvas), float32, finite, in [0, 1]."""
    if not isinstance(images, torch.Tensor):
        problems.append(f"{what}: expected a tensor, got {type(images).__name__}")
        return False
    c, h, w = shape
    if images.dim() != 4 or images.shape[1] != c or not (h <= images.shape[2] <= 2 * h and w <= images.shape[3] <= 2 * w):
        problems.append(f"{what}: shape {tuple(images.shape)}, expected (n, {c}, h', w') with {h} ≤ h' ≤ {2 * h} "
                        f"and {w} ≤ w' ≤ {2 * w}")
        return False
    return check_images(problems, images, tuple(images.shape[1:]), what)


def validate_targeted(poison: object, *, budget: int, image_shape: tuple[int, int, int], num_classes: int,
                      target_pool: torch.Tensor | None = None) -> None:
    """Raise :class:`ThreatModelViolation` unless ``poison`` obeys the targeted pre-training threat model:
    at most ``budget`` injected images (canvases of one shape, see :func:`_check_canvas`), target images of
    the dataset's shape that are each an exact copy of an image of ``target_pool`` (when the track hands
    the attacker one), and a target class in range."""
    problems: list[str] = []
    if not isinstance(poison, TargetedPoison):
        raise ThreatModelViolation([f"expected a TargetedPoison, got {type(poison).__name__}"])
    if _check_canvas(problems, poison.images, image_shape, "images") and len(poison.images) > budget:
        problems.append(f"count: {len(poison.images)} injected images exceed the budget of {budget}")
    targets_ok = check_images(problems, poison.target_images, image_shape, "target_images")
    if targets_ok and target_pool is not None:
        missing = pool_indices(poison.target_images, target_pool).lt(0).nonzero().flatten().tolist()
        if missing:
            problems.append(f"target_images: {len(missing)} of {len(poison.target_images)} targets (first: #{missing[0]}) "
                            "are not images of the target pool the track handed over")
    _check_target_classes(problems, poison, num_classes)
    if problems:
        raise ThreatModelViolation(problems)


def _check_target_classes(problems: list[str], poison: TargetedPoison, num_classes: int) -> None:
    """One class in range, or an integer tensor of one class in range per target input."""
    classes = poison.target_class
    if isinstance(classes, torch.Tensor):
        if classes.dtype.is_floating_point or classes.dtype.is_complex or classes.dtype == torch.bool:
            problems.append(f"target_class: expected an integer tensor, got {classes.dtype}")
            return
        if classes.dim() != 1 or len(classes) != len(poison.target_images):
            problems.append(f"target_class: a tensor of one class per target input, shape ({len(poison.target_images)},); "
                            f"got {tuple(classes.shape)}")
            return
        if len(classes) and not (0 <= int(classes.min()) and int(classes.max()) < num_classes):
            problems.append(f"target_class: classes {sorted(set(classes.tolist()))} outside [0, {num_classes - 1}]")
    elif not 0 <= int(classes) < num_classes:
        problems.append(f"target_class: {classes} outside [0, {num_classes - 1}]")


def pool_indices(images: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
    """For each image, the index of an exactly equal image of ``pool`` (same shape and bytes), or −1."""
    def rows(t: torch.Tensor) -> list[bytes]:
        flat = t.detach().cpu().float().contiguous().reshape(len(t), -1)
        return [r.numpy().tobytes() for r in flat]

    if tuple(images.shape[1:]) != tuple(pool.shape[1:]):
        return torch.full((len(images),), -1, dtype=torch.int64)
    index = {r: i for i, r in reversed(list(enumerate(rows(pool))))}
    return torch.tensor([index.get(r, -1) for r in rows(images)], dtype=torch.int64)
