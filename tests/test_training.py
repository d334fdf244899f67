"""The one training loop and chunked map (benchmark/training.py, issue #26): what each promises, and that no
other training loop is left in the engine or the plugins."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from benchmark.training import chunked, epoch_batches, fit, shuffled_batches

ROOT = Path(__file__).resolve().parents[1]


def test_fit_steps_once_per_batch_with_fresh_gradients_and_hooks_in_order() -> None:
    weight = torch.nn.Parameter(torch.zeros(()))
    optimizer = torch.optim.SGD([weight], lr=1.0)
    events: list[str] = []
    steps = fit(optimizer, [1.0, 2.0, 3.0], lambda c: (events.append(f"loss {c:g}"), weight * c)[1],
                before_step=lambda s: events.append(f"before {s}"), after_step=lambda s: events.append(f"after {s}"))
    assert steps == 3
    assert weight.item() == -6.0  # −(1 + 2 + 3): each step's gradient alone (accumulated would give −10)
    assert events == ["before 0", "loss 1", "after 0", "before 1", "loss 2", "after 1", "before 2", "loss 3", "after 2"]


def test_epoch_batches_draws_each_epoch_when_it_starts_and_ends_it_after_its_last_batch() -> None:
    events: list[str] = []

    def batches_of(epoch: int) -> list[str]:
        events.append(f"draw {epoch}")
        return [f"{epoch}a", f"{epoch}b"]

    for batch in epoch_batches(2, batches_of, after_epoch=lambda e: events.append(f"end {e}")):
        events.append(f"use {batch}")
    assert events == ["draw 0", "use 0a", "use 0b", "end 0", "draw 1", "use 1a", "use 1b", "end 1"]


def test_shuffled_batches_are_the_generator_permutation_cut_in_slices() -> None:
    expected = torch.randperm(10, generator=torch.Generator().manual_seed(3))
    batches = shuffled_batches(10, 4, torch.Generator().manual_seed(3))
    assert [b.tolist() for b in batches] == [expected[:4].tolist(), expected[4:8].tolist(), expected[8:].tolist()]
    assert [len(b) for b in shuffled_batches(9, 4, torch.Generator().manual_seed(0), min_size=2)] == [4, 4]
    assert [len(b) for b in shuffled_batches(10, 4, torch.Generator().manual_seed(0), drop_last=True)] == [4, 4]
    assert [len(b) for b in shuffled_batches(10, 4, torch.Generator().manual_seed(0), min_size=2)] == [4, 4, 2]


def test_chunked_equals_the_whole_map_on_aligned_slices() -> None:
    x, y = torch.randn(10, 3), torch.randn(10, 3)
    assert torch.equal(chunked(lambda a, b: a * b + 1, x, y, size=4), x * y + 1)
    sizes: list[int] = []
    chunked(lambda a: (sizes.append(len(a)), a)[1], x, size=4)
    assert sizes == [4, 4, 2]
    assert chunked(lambda a: a, x[:0], size=4).numel() == 0


# Calls that run an optimizer step outside the loop: an L-BFGS closure (one call of L-BFGS, not a loop),
# the cost model's one-step timings, and TGDA's leader step (a hypergradient set by hand, not a loss).
OUTSIDE_THE_LOOP = {"benchmark/probe.py": 2, "benchmark/estimate.py": 2, "attacks/tgda.py": 1}


def test_every_training_loop_is_the_one_loop() -> None:
    """No gradient step is written out by hand in the engine or the plugins: ``zero_grad(`` and
    ``.backward()`` appear only in benchmark/training.py and the allow-listed one-off calls."""
    found: dict[str, int] = {}
    for folder in ("benchmark", "attacks", "defenses"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            name = path.relative_to(ROOT).as_posix()
            if name == "benchmark/training.py":
                continue
            hits = len(re.findall(r"zero_grad\(|\.backward\(\)", path.read_text()))
            if hits:
                found[name] = hits
    assert {name: n for name, n in found.items() if name not in OUTSIDE_THE_LOOP} == {}, \
        "write the loop with benchmark.api.fit (and epoch_batches / shuffled_batches)"
    assert all(found.get(name, 0) <= n for name, n in OUTSIDE_THE_LOOP.items())
