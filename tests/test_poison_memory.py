"""Memory bounded by a batch, not by the poison set (issue #13): GC, TGDA, UE and FT feature matching
optimise their poisons chunk by chunk with the exact full-set gradient, and feature extraction is chunked.

* equivalence: every attack gives the same poisons (to float rounding) whether its extractor view
  processes 512 images at a time or 16;
* memory: peak resident memory of GC on ResNet-18 (CIFAR stem, 32 px, where one image's saved activations
  are ≈ 18 MiB) for 32 and for 256 poisons, each in a fresh process: the full-set graph would grow by
  ≈ 4 GiB, the chunked one must not grow by more than the poisons themselves and a margin.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap

import pytest
import torch

from tests.test_attacks_downstream import Setting, craft, setting  # noqa: F401 (fixture)

SMALL = {  # every chunked code path, a few steps each
    "gc": {"steps": 5, "gradpc_steps": 5},
    "gc_unclipped": {"steps": 5, "gradpc_steps": 5},
    "tgda": {"epochs": 2, "follower_steps": 2, "cg_iters": 3},
    "ue": {"max_rounds": 2, "pgd_steps": 2, "stop_error": 0.0},
    "ft_feature_matching": {"gc_steps": 5, "gradpc_steps": 5, "match_steps": 5},
    "ft_decoder": {"gc_steps": 5, "gradpc_steps": 5, "decoder_epochs": 1, "decoder_gate": 1e6},
}


@pytest.mark.parametrize("attack_id", sorted(SMALL))
def test_chunked_poison_optimisation_equals_the_whole_set(setting: Setting, attack_id: str) -> None:  # noqa: F811
    whole = craft(attack_id, setting.ctx(3, fraction=0.1), **SMALL[attack_id])  # 60 poisons, one chunk of 512
    chunked_view = dataclasses.replace(setting.view, batch_size=16)
    chunked_ctx = dataclasses.replace(setting.ctx(3, fraction=0.1), extractor=chunked_view)
    chunked = craft(attack_id, chunked_ctx, **SMALL[attack_id])  # 4 chunks
    assert torch.equal(whole.base_indices, chunked.base_indices)
    assert torch.allclose(whole.images, chunked.images, atol=1e-4), (whole.images - chunked.images).abs().max()


PEAK = textwrap.dedent("""
    import json, resource, sys, torch
    from benchmark.api import ATTACKS, DownstreamAttackContext, FeatureExtractorView, HeadSpec
    from benchmark.backbones import create_backbone
    from benchmark.plugins import load_plugins
    from benchmark.pretrain import make_extractor
    torch.set_num_threads(1)
    load_plugins()
    n_poison = int(sys.argv[1])
    torch.manual_seed(0)
    images = torch.rand(max(64, n_poison), 3, 32, 32)
    labels = torch.arange(len(images)) % 10
    extractor = make_extractor(create_backbone("resnet18", in_chans=3, cifar_stem=True), images[:64], torch.device("cpu"))
    view = FeatureExtractorView(extractor, extractor.feature_dim, torch.device("cpu"), batch_size=16)
    features = view.features(images)
    ctx = DownstreamAttackContext(extractor=view, train_images=images, train_labels=labels, train_features=features,
                                  num_classes=10, budget=n_poison, input_epsilon=None, head=HeadSpec(10, 1e-3),
                                  generator=torch.Generator().manual_seed(0), device=torch.device("cpu"),
                                  cached=lambda kind, config, build: build())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cls = ATTACKS.get("gc")
    cls(cls.Config(steps=1, gradpc_steps=1)).craft_downstream(ctx)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"before_kib": before, "after_kib": after}))
""")


def _peak_growth_mib(n_poison: int) -> float:
    out = subprocess.run([sys.executable, "-c", PEAK, str(n_poison)], capture_output=True, text=True, check=True)
    numbers = json.loads(out.stdout.strip().splitlines()[-1])
    return (numbers["after_kib"] - numbers["before_kib"]) / 1024


@pytest.mark.slow
def test_gc_peak_memory_does_not_grow_with_the_poison_count() -> None:
    small, large = _peak_growth_mib(32), _peak_growth_mib(256)
    # 224 more poisons: their pixels, features and Adam state are < 10 MiB; a full-set graph would add ≈ 4 GiB
    assert large - small < 300, (small, large)
