"""Speed benchmarks (pytest-benchmark): one downstream cell on cached features vs. the reference probe.

Run with ``make bench`` (``pytest tests/benchmarks --benchmark-enable``). Both victims are trained on the
same clean + label-flip-poisoned mnist5k set (16 px) with the same frozen SimCLR ``cnn_micro`` encoder;
``extra_info`` records both test accuracies, and the time ratio is printed.
"""

from __future__ import annotations

import time

import pytest
import torch

from benchmark.data import load_dataset
from benchmark.pretrain import SSLRecipe, make_extractor, train_ssl
from benchmark.probe import SGDProbeConfig, fit_linear_head, head_accuracy, train_sgd_probe

pytestmark = pytest.mark.slow
DEVICE = torch.device("cpu")
TIMES: dict[str, float] = {}


@pytest.fixture(scope="module")
def setting():
    train, test = load_dataset("mnist5k", "train", image_size=16), load_dataset("mnist5k", "test", image_size=16)
    recipe = SSLRecipe(method="simclr", backbone="cnn_micro", epochs=5, lr=2e-3,
                       augment={"flip": False, "rotation_degrees": 10, "grayscale_prob": 0.0},
                       method_settings={"proj_hidden": 128, "proj_dim": 64})
    extractor = make_extractor(train_ssl(recipe, train.images, seed=0, device=DEVICE).backbone, train.images, DEVICE)
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(train), generator=g)[:400]
    images = torch.cat([train.images, train.images[idx]])
    labels = torch.cat([train.labels, (train.labels[idx] + 1 + torch.randint(0, 9, (400,), generator=g)) % 10])
    with torch.no_grad():
        train_features, test_features = extractor(train.images), extractor(test.images)
    return extractor, images, labels, train_features, test_features, test


def test_downstream_cell_on_cached_features(benchmark, setting) -> None:
    extractor, images, labels, train_features, test_features, test = setting

    def cell() -> float:
        start = time.perf_counter()
        with torch.no_grad():
            poison_features = extractor(images[len(train_features):])
        head = fit_linear_head(torch.cat([train_features, poison_features]), labels, 10, l2=1e-3)
        acc = head_accuracy(head, test_features, test.labels)
        TIMES["cached"] = time.perf_counter() - start
        return acc

    accuracy = benchmark.pedantic(cell, rounds=3, iterations=1)
    benchmark.extra_info["test_accuracy"] = accuracy
    assert accuracy > 0.5


def test_reference_sgd_probe_protocol(benchmark, setting) -> None:
    extractor, images, labels, _, test_features, test = setting
    config = SGDProbeConfig(epochs=100, lr=1.0, flip=False, crop_padding=2)

    def cell() -> float:
        start = time.perf_counter()
        head = train_sgd_probe(extractor, images, labels, 10, l2=1e-3, config=config, seed=0, device=DEVICE)
        acc = head_accuracy(head, test_features, test.labels)
        TIMES["reference"] = time.perf_counter() - start
        return acc

    accuracy = benchmark.pedantic(cell, rounds=1, iterations=1)
    benchmark.extra_info["test_accuracy"] = accuracy
    if "cached" in TIMES:
        benchmark.extra_info["time_ratio_reference_over_cached"] = TIMES["reference"] / TIMES["cached"]
        print(f"reference probe {TIMES['reference']:.1f} s vs cached-feature cell {TIMES['cached']:.2f} s: "
              f"{TIMES['reference'] / TIMES['cached']:.0f}x")
    assert accuracy > 0.5
