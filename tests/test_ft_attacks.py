"""Feature-targeted attacks and gradient canceling: ζ stays in the clean-feature box, the FT decoder is gated
against the mean image, ``gc_unclipped`` may leave [0, 1] (space ``input-unclipped``) while ``gc`` may not,
and GC / TGDA report how far their schedules got. Tiny data: 300 MNIST digits at 16 px, a frozen
random-init ``cnn_micro`` extractor, l2 = 1e-2, budget 10 %."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

from benchmark.api import ATTACKS, DownstreamAttackContext, DownstreamPoison, FeatureExtractorView, HeadSpec
from benchmark.backbones import create_backbone
from benchmark.data import load_dataset
from benchmark.plugins import load_plugins
from benchmark.pretrain import make_extractor
from benchmark.tracks.downstream.validate import validate_downstream
from benchmark.validation import ThreatModelViolation
from tests.test_attacks_downstream import craft

L2 = 1e-2
EPS = 8 / 255


@dataclass
class Setting:
    view: FeatureExtractorView
    images: torch.Tensor
    labels: torch.Tensor
    features: torch.Tensor
    store: dict = field(default_factory=dict)
    builds: list = field(default_factory=list)

    def cached(self, kind: str, config: Mapping[str, Any], build: Callable[[], dict[str, torch.Tensor]]
               ) -> dict[str, torch.Tensor]:
        key = (kind, repr(sorted(config.items())))
        if key not in self.store:
            self.builds.append(kind)
            self.store[key] = build()
        return self.store[key]

    def ctx(self, seed: int = 0, *, epsilon: float | None = None) -> DownstreamAttackContext:
        return DownstreamAttackContext(
            extractor=self.view, train_images=self.images, train_labels=self.labels, train_features=self.features,
            num_classes=10, budget=len(self.labels) // 10, input_epsilon=epsilon, head=HeadSpec(10, L2),
            generator=torch.Generator().manual_seed(seed), device=torch.device("cpu"), cached=self.cached)

    def validate(self, poison: DownstreamPoison, space: str, epsilon: float | None = None) -> None:
        validate_downstream(poison, space=space, budget=len(self.labels) // 10, image_shape=(1, 16, 16),
                            feature_dim=self.view.feature_dim, num_classes=10, train_images=self.images,
                            input_epsilon=epsilon)


@pytest.fixture(scope="module")
def setting() -> Setting:
    torch.set_num_threads(1)
    load_plugins()
    train = load_dataset("mnist5k", "train", image_size=16, subset=300)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        extractor = make_extractor(create_backbone("cnn_micro", in_chans=1), train.images, torch.device("cpu"))
    view = FeatureExtractorView(extractor, extractor.feature_dim, torch.device("cpu"))
    return Setting(view, train.images, train.labels, view.features(train.images))


# ------------------------------------------------------------------------------------------ ζ in the box
def test_zeta_stays_in_the_clean_feature_box_by_default(setting: Setting) -> None:
    low, high = setting.features.amin(0), setting.features.amax(0)
    boxed = craft("ft_feature_space", setting.ctx(0), gc_steps=300, gradpc_steps=20, epsilon_w=0.5)
    assert ((boxed.features >= low - 1e-6) & (boxed.features <= high + 1e-6)).all()
    d = boxed.diagnostics
    assert d["zeta_in_clean_box"] == 1.0
    assert 0 < d["zeta_norm_ratio"] < 3.0  # measured 1.9 (box corners); unconstrained 5.6
    # the paper's unconstrained stage 2, kept available by name: it leaves the box (that is why the box exists)
    free = craft("ft_feature_space", setting.ctx(0), gc_steps=300, gradpc_steps=20, zeta_constraint="none",
                 epsilon_w=0.5)
    assert ((free.features < low - 1e-3) | (free.features > high + 1e-3)).any()
    assert free.diagnostics["zeta_in_clean_box"] == 0.0
    assert free.diagnostics["zeta_norm_ratio"] > 1.5 * d["zeta_norm_ratio"]  # measured 3.2 vs 1.8


def test_zeta_constraint_is_range_checked() -> None:
    load_plugins()
    for attack_id in ("ft_feature_space", "ft_decoder", "ft_feature_matching"):
        cls = ATTACKS.get(attack_id)
        assert cls.Config().zeta_constraint == "clean_box"
        assert any(p.startswith("zeta_constraint") for p in cls.Config(zeta_constraint="ball").problems())


def test_feature_matching_reports_the_box_diagnostics(setting: Setting) -> None:
    poison = craft("ft_feature_matching", setting.ctx(0), gc_steps=100, gradpc_steps=20, match_steps=5)
    d = poison.diagnostics
    assert d["zeta_in_clean_box"] == 1.0 and d["zeta_norm_ratio"] > 0
    assert {"gc_residual_start", "gc_residual_end", "gc_residual_ratio"} <= set(d)


# ------------------------------------------------------------------------------------------ decoder gate
def test_decoder_gate_fails_loudly_when_no_better_than_the_mean_image(setting: Setting) -> None:
    from attacks.ft_decoder import DecoderGateError

    settings = {"gc_steps": 10, "gradpc_steps": 5, "decoder_epochs": 1, "decoder_lr": 1e-7}
    with pytest.raises(DecoderGateError) as info:
        craft("ft_decoder", setting.ctx(0), **settings)
    message = str(info.value)
    blob = next(v for (kind, key), v in setting.store.items() if kind == "ft_decoder" and "1e-07" in key)
    mse, constant = float(blob["decoder_mse"]), float(blob["constant_mse"])
    assert mse >= 0.75 * constant
    assert f"{mse:.4g}" in message and f"{constant:.4g}" in message and "decoder_gate" in message
    with pytest.raises(DecoderGateError):  # a cached decoder is gated too
        craft("ft_decoder", setting.ctx(1), **settings)


def test_decoder_gate_passes_a_trained_decoder(setting: Setting) -> None:
    poison = craft("ft_decoder", setting.ctx(0), gc_steps=100, gradpc_steps=20, decoder_epochs=20)
    d = poison.diagnostics
    # measured: 0.018 vs 0.038 (the previous sigmoid decoder without the per-pixel bias stayed at ≈ 2× the
    # mean image's MSE at any number of epochs)
    assert d["decoder_mse"] < 0.6 * d["constant_mse"]  # below the default gate (0.75) with a margin
    assert 0 <= poison.images.min() and poison.images.max() <= 1


def test_decoder_gate_is_a_setting() -> None:
    from attacks.ft_decoder import DecoderGateError, FTDecoderConfig, check_gate

    assert FTDecoderConfig().decoder_gate == 0.75 and FTDecoderConfig().decoder_epochs == 100
    assert any(p.startswith("decoder_gate") for p in FTDecoderConfig(decoder_gate=0.0).problems())
    check_gate(0.01, 0.04, 0.6)
    with pytest.raises(DecoderGateError, match=r"0\.03"):
        check_gate(0.03, 0.04, 0.6)


# ------------------------------------------------------------------------------------------ gc_unclipped
def test_gc_unclipped_leaves_the_pixel_box_and_passes_its_validation(setting: Setting) -> None:
    assert ATTACKS.get("gc_unclipped").space == "input-unclipped" and ATTACKS.get("gc").space == "input"
    unclipped = craft("gc_unclipped", setting.ctx(0), steps=40, gradpc_steps=20)
    clipped = craft("gc", setting.ctx(0), steps=40, gradpc_steps=20)
    assert unclipped.images.min() < -0.01 or unclipped.images.max() > 1.01
    assert 0 <= clipped.images.min() and clipped.images.max() <= 1
    setting.validate(unclipped, "input-unclipped")
    setting.validate(clipped, "input")
    with pytest.raises(ThreatModelViolation, match=r"outside \[0, 1\]"):
        setting.validate(unclipped, "input")  # an input-space attack may not return such images
    # same base points and labels: only the clip differs
    assert torch.equal(unclipped.base_indices, clipped.base_indices) and torch.equal(unclipped.labels, clipped.labels)


def test_gc_unclipped_honours_the_input_constraint(setting: Setting) -> None:
    poison = craft("gc_unclipped", setting.ctx(0, epsilon=EPS), steps=20, gradpc_steps=20)
    base = setting.images[poison.base_indices]
    assert (poison.images - base).abs().max() <= EPS + 1e-6
    assert poison.images.min() < 0  # zero pixels pushed below 0, within ε
    setting.validate(poison, "input-unclipped", EPS)
    outside = DownstreamPoison(images=poison.images + 2 * EPS, labels=poison.labels, base_indices=poison.base_indices)
    with pytest.raises(ThreatModelViolation, match="exceeds ε"):
        setting.validate(outside, "input-unclipped", EPS)


def test_validation_checks_unclipped_images_except_the_range(setting: Setting) -> None:
    labels = setting.labels[:3].clone()
    wild = DownstreamPoison(images=setting.images[:3] * 5 - 2, labels=labels, base_indices=torch.arange(3))
    setting.validate(wild, "input-unclipped")
    for images, needle in [(torch.full((3, 1, 16, 16), float("inf")), "NaN or infinite"),
                           (setting.images[:3, :, :8], "shape"), (setting.images[:3].double(), "dtype")]:
        with pytest.raises(ThreatModelViolation, match=needle):
            setting.validate(DownstreamPoison(images=images, labels=labels), "input-unclipped")
    with pytest.raises(ThreatModelViolation, match="must return images"):
        setting.validate(DownstreamPoison(features=setting.features[:3], labels=labels), "input-unclipped")
    with pytest.raises(ThreatModelViolation, match="unknown attack space"):
        setting.validate(wild, "pixels")


# ------------------------------------------------------------------------------------------ convergence
@pytest.mark.parametrize("attack_id", ["gc", "gc_unclipped"])
def test_gc_reports_its_residual_ratio(setting: Setting, attack_id: str) -> None:
    d = craft(attack_id, setting.ctx(0), steps=100, gradpc_steps=20).diagnostics
    assert d["gc_residual_ratio"] == pytest.approx(d["gc_residual_end"] / d["gc_residual_start"])
    assert d["gc_residual_ratio"] < 0.95  # measured 0.87 at 100 steps


def test_feature_gc_reports_its_residual_ratio(setting: Setting) -> None:
    d = craft("ft_feature_space", setting.ctx(0), gc_steps=300, gradpc_steps=20).diagnostics
    assert d["gc_residual_ratio"] == pytest.approx(d["gc_residual_end"] / d["gc_residual_start"])
    assert d["gc_residual_ratio"] < 0.9


def test_tgda_reports_its_progress(setting: Setting) -> None:
    d = craft("tgda", setting.ctx(0), epochs=24, follower_steps=5, cg_iters=4).diagnostics
    # the objective is measured at the follower's best response (a refitted head), not at its iterate
    assert d["tgda_objective_gain"] == pytest.approx(d["val_ce_refit"] - d["refit_ce_start"])
    assert d["tgda_last_quarter_gain"] == pytest.approx(d["val_ce_refit"] - d["refit_ce_three_quarters"])
    assert d["val_ce_refit_gain"] == pytest.approx(d["val_ce_refit"] - d["leader_loss_start"])
    assert d["tgda_objective_gain"] > 0  # the leader raises the best response's validation loss
    assert d["tgda_last_quarter_share"] == pytest.approx(d["tgda_last_quarter_gain"] / d["tgda_objective_gain"])
