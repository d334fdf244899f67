"""The one training loop and the one chunked map of the engine and the plugins (issue #26).

:func:`fit` runs mini-batch steps: zero the gradients, the step's ``loss(batch)``, backward, the optimizer's
step, with hooks before and after each step (a learning-rate schedule, a momentum encoder's update). What
differs between two trainings is the step and the batches, never the loop: :func:`epoch_batches` chains the batches
of several epochs (each epoch's batches drawn when it starts, a hook at its end: a scheduler), and
:func:`shuffled_batches` draws one epoch's order from a generator. :func:`chunked` maps a function over
aligned slices of tensors (features, predictions, gradients) and concatenates the results.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import torch

from benchmark.utils import progress

Batch = TypeVar("Batch")


def fit(optimizer: torch.optim.Optimizer, batches: Iterable[Batch], loss: Callable[[Batch], torch.Tensor], *,
        before_step: Callable[[int], None] | None = None, after_step: Callable[[int], None] | None = None) -> int:
    """One optimizer step per batch: ``before_step(step)``, zero the gradients, ``loss(batch).backward()``,
    ``optimizer.step()``, ``after_step(step)``. Returns the number of steps taken."""
    step = 0
    for batch in batches:
        if before_step is not None:
            before_step(step)
        optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss(batch))
        optimizer.step()
        if after_step is not None:
            after_step(step)
        step += 1
    return step


def epoch_batches(count: int, batches_of: Callable[[int], Iterable[Batch]], *,
           after_epoch: Callable[[int], None] | None = None, desc: str | None = None) -> Iterator[Batch]:
    """The batches of ``count`` epochs: ``batches_of(epoch)`` is called when the epoch starts (after the
    previous epoch's last step), ``after_epoch(epoch)`` when its last batch has been used; ``desc``: a
    progress bar over the epochs."""
    rounds: Iterable[int] = range(count) if desc is None else progress(range(count), desc=desc, total=count)
    for epoch in rounds:
        yield from batches_of(epoch)
        if after_epoch is not None:
            after_epoch(epoch)


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator, *, device: torch.device | None = None,
                     min_size: int = 1, drop_last: bool = False) -> list[torch.Tensor]:
    """One epoch's mini-batches of indices into ``range(n)``: a permutation drawn from ``generator`` (on the
    CPU), moved to ``device`` once, cut in slices of ``batch_size`` (the last one shorter unless
    ``drop_last``; slices shorter than ``min_size`` are left out: BatchNorm needs two samples)."""
    order = torch.randperm(n, generator=generator)
    if device is not None:
        order = order.to(device)
    end = (n // batch_size) * batch_size if drop_last else n
    return [idx for idx in (order[i : i + batch_size] for i in range(0, end, batch_size)) if len(idx) >= min_size]


def chunked(fn: Callable[..., torch.Tensor], *tensors: torch.Tensor, size: int) -> torch.Tensor:
    """``fn`` over aligned slices of ``size`` rows of ``tensors``, concatenated along the first dimension
    (memory of one slice at a time; an empty input gives an empty result)."""
    n = len(tensors[0])
    parts = [fn(*(t[i : i + size] for t in tensors)) for i in range(0, n, size)]
    return torch.cat(parts) if parts else tensors[0].new_empty((0,))
