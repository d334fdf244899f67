"""What plugin isolation costs (pytest-benchmark; ``make bench``): one round trip to a fresh plugin process
with no work in it, and one with a downstream-sized payload (1000 16-px images, features and labels)."""

from __future__ import annotations

import torch

from benchmark.workers import call_plugin


def test_empty_plugin_call(benchmark) -> None:
    request = {"module": "attacks.label_flip", "entries": [], "combos": []}
    answer = benchmark(lambda: call_plugin("resolve", request, timeout=60))
    assert answer == {"entries": [], "reasons": []}


def test_plugin_call_with_a_downstream_payload(benchmark) -> None:
    images = torch.rand(1000, 1, 16, 16)
    request = {"module": "attacks.label_flip", "entries": [], "combos": [], "images": images,
               "features": torch.rand(1000, 64), "labels": torch.randint(0, 10, (1000,))}
    benchmark(lambda: call_plugin("resolve", request, timeout=60))
