"""``plan --estimate``: the work a suite does, counted once per shared artifact, priced by a device profile,
and every built-in suite inside the budget it states (benchmark/estimate.py)."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import pytest
import torch

from benchmark.__main__ import main
from benchmark.cost_models import evaluate
from benchmark.estimate import (
    DeviceProfile,
    bf16_peak_tflops,
    calibrate,
    estimate,
    forward_flops,
    load_profiles,
    ssl_step_flops,
    suite_work,
    utilisation_text,
)
from benchmark.plugins import catalogue
from benchmark.pretrain import SSLRecipe
from benchmark.suite import expand_cells, load_suite, read_suite_file, suite_names
from benchmark.work import WorkList, cell_sizes

ROOT = Path(__file__).resolve().parent.parent

# A profile with round numbers: 1 s per SimCLR image-epoch, 2 s for the momentum methods, 0.25 s a pass.
UNIT = DeviceProfile(name="unit", source="test", svd_seconds=0.0,
                     ssl_image_epoch={"cnn_micro@16": {"simclr": 1.0, "mocov2": 2.0, "byol": 2.0, "pass": 0.25}})


@cache
def full_work() -> WorkList:
    """The full tier's work list, built once for the tests that read it (≈ 3 s on 2 cores)."""
    return suite_work(load_suite("full"))


@pytest.mark.parametrize("name", [n for n in suite_names() if read_suite_file(n)[0].get("compute")])  # unvalidated: collection stays fast
@pytest.mark.heavy
def test_every_builtin_suite_fits_the_compute_it_states(name: str) -> None:
    suite = load_suite(name)
    compute = suite.raw["compute"]
    result = estimate(suite, load_profiles()[compute["profile"]])
    assert not result.unmodelled, result.unmodelled
    assert 0 < result.total <= compute["device_hours"]


def test_the_gpu_tiers_state_a_compute_limit() -> None:
    assert load_suite("full").raw["compute"]["device_hours"] <= 500
    assert load_suite("full-quick").raw["compute"]["device_hours"] <= 24


def test_a_clean_encoder_shared_by_cells_is_counted_once() -> None:
    suite = load_suite("smoke")
    cells = expand_cells(suite)[0]
    work = suite_work(suite, cells)
    clean = [w for w in work.items.values() if w.kind == "clean encoder"]
    # one per (method, pre-training data, seed, the track's data and recipe): downstream and the pre-training
    # tracks share it only where their data and recipe agree
    distinct = {(c.spec["encoder"]["method"], c.spec["scenario"]["pretrain"], c.spec["seed"],
                 str(sorted(c.spec["data"].items())), str(sorted(c.spec["encoder"].items(), key=str))) for c in cells}
    assert len(clean) == len(distinct) < len(cells) / 10


def test_cost_models_count_the_loops_of_their_method() -> None:
    work = full_work()
    cp_c = [w for w in work.items.values() if w.kind == "poison" and w.track == "pretrain-availability"
            and sum(w.ssl_epochs.values()) == 1000 * (20 + 20 * 1) * 512]
    assert len(cp_c) == 3 * 3  # CP-C: rounds × (model batches + noise batches × PGD steps) × batch, per method and seed
    # CP-S: 200 rounds of one model epoch + one noise epoch of 5 PGD steps, plus its 200-round classwise init
    cp_s = 200 * (50_000 + 5 * 50_000) * 2
    assert any(sum(w.ssl_epochs.values()) == cp_s for w in work.items.values() if w.kind == "poison")
    gc = [w for w in work.items.values() if w.kind == "poison" and w.track == "downstream" and w.passes == 300 * 10_000]
    assert gc  # GC: steps × poisons (ε_d = 0.2 of CIFAR-10's 50k)


def test_me_net_pretraining_cost_drops_with_the_bank() -> None:
    svds = catalogue().get("defense", "matrix_completion").cost["pretrain-availability"]["svds"]

    def count(**config: float) -> float:
        return evaluate(svds, {"n_masks": 10, "ssl_prob": 1.0, "ssl_bank": 0, **config, "n": 50_000, "encoder_epochs": 1000})

    assert count() == 10 * 1000 * 50_000  # every image, mask and epoch
    # ssl_prob < 1 reconstructs every image and keeps the picked ones (no data-dependent subset: no host sync)
    assert count(ssl_prob=0.5) == 10 * 1000 * 50_000
    assert count(ssl_prob=0.0) == 0
    assert count(ssl_bank=4) == 4 * 10 * 50_000  # k reconstructions, once
    assert count(ssl_bank=4, ssl_prob=0.0) == 0
    # the full tier's pre-training victims use the bank: 4 × 10 masks × (50k images + the injected canvases)
    work = full_work()
    victims = [w for w in work.items.values() if w.kind == "victim encoder" and w.svds > 0]
    assert victims and {w.svds for w in victims if w.track == "pretrain-availability"} == {4 * 10 * 50_000}
    assert all(w.svds <= 4 * 10 * 51_000 for w in victims)


def test_profile_prices_ssl_epochs_and_passes_and_scales_by_flops() -> None:
    suite = load_suite("smoke", ["seeds=[0]"])
    result = estimate(suite, UNIT)
    work = suite_work(suite)
    clean = next(w for w in work.items.values() if w.kind == "clean encoder" and w.track == "downstream")
    assert UNIT.seconds(clean) == pytest.approx(sum(clean.ssl_epochs.values()) * 1.0)
    bigger = DeviceProfile(name="x", source="t", svd_seconds=0.0,
                           ssl_image_epoch={"cnn_micro@32": {"simclr": 1.0, "pass": 0.25}})
    assert bigger.seconds(clean) == pytest.approx(UNIT.seconds(clean) / 4, rel=0.05)  # 16 px has ¼ the FLOPs of 32 px
    assert result.total > 0 and result.wall_hours(8) >= result.longest_hours


def test_calibration_measures_this_machine() -> None:
    suite = load_suite("smoke", ["seeds=[0]"])
    profile = calibrate(suite, "cpu", images=256)
    measured = profile.ssl_image_epoch["cnn_micro@16"]
    assert measured["simclr"] > 0 and measured["pass"] > 0 and profile.svd_seconds > 0
    assert estimate(suite, profile).total > 0
    assert "achieved" in profile.source and "TFLOP/s" in profile.source  # the rate each method reached


def test_an_ssl_step_costs_two_views_of_forward_and_backward() -> None:
    """SimCLR: two views, each a forward and a backward of about twice its FLOPs, so ≈ 6 forwards (the
    projection head adds a little); the momentum methods add a branch. 6.66 GFLOP per image on ResNet-18
    with the CIFAR stem, the figure the A6000 anchor's utilisation in device_profiles.yaml is based on."""
    def step(method: str, backbone: str, cifar_stem: bool = False) -> float:
        return ssl_step_flops(SSLRecipe(method=method, backbone=backbone, cifar_stem=cifar_stem, epochs=1,
                                        batch_size=8), 32)

    before = torch.random.get_rng_state()
    simclr = step("simclr", "resnet18", cifar_stem=True)
    assert torch.equal(torch.random.get_rng_state(), before)  # counting draws nothing from the caller's stream
    assert simclr == pytest.approx(6.66e9, rel=0.01)
    assert 5.9 <= simclr / forward_flops("resnet18+cifar_stem", 32) <= 6.1  # no input gradient: a little under 6
    assert step("byol", "cnn_micro") > step("simclr", "cnn_micro")


def test_utilisation_names_the_fraction_of_the_gpus_bf16_peak() -> None:
    assert bf16_peak_tflops("NVIDIA H200") == bf16_peak_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert bf16_peak_tflops("NVIDIA H100 PCIe") == 756.0 and bf16_peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert bf16_peak_tflops("NVIDIA RTX A6000") == 154.8 and bf16_peak_tflops("cpu (2 threads)") is None
    assert utilisation_text(98.94e12, "NVIDIA H200") == "98.9 TFLOP/s (10.0 % of the 989 TFLOP/s bf16 dense peak)"
    assert utilisation_text(2e9, "cpu (2 threads)") == "0.002 TFLOP/s"


def test_plan_estimate_prints_the_total_and_fails_over_the_compute_limit(capsys) -> None:
    assert main(["plan", "--suite", "full-quick", "--estimate"]) == 0
    out = capsys.readouterr().out
    assert "total:" in out and "pretrain-availability" in out and "compute limit: 24.0" in out
    assert main(["plan", "--suite", "full-quick", "--estimate", "--set", "compute.device_hours=0.5"]) == 1
    assert "OVER THE COMPUTE LIMIT" in capsys.readouterr().err
    assert main(["plan", "--suite", "full-quick", "--estimate", "--profile", "tpu"]) == 2


def test_an_availability_poison_that_reads_only_the_backbone_is_counted_once_for_all_methods() -> None:
    """UE's ``recipe_fields`` are the backbone's: the track builds one UE poison per backbone, data and
    seed for SimCLR, MoCo v2 and BYOL alike (random noise reads no field), and the estimate counts it so;
    CP reads the SSL method: one poison per method."""
    suite = load_suite("full")
    cells = [c for c in expand_cells(suite)[0] if c.track == "pretrain-availability"]
    work = suite_work(suite, cells)
    poisons = [w for w in work.items.values() if w.kind == "poison"]
    by_attack = {a: {(c.spec["scenario"]["pretrain"], c.spec["seed"]) for c in cells if c.attack.id == a}
                 for a in ("ue", "random_noise", "cp")}
    methods = {c.spec["encoder"]["method"] for c in cells}
    n_cp_settings = len({str(c.attack.settings) for c in cells if c.attack.id == "cp"})
    assert len(methods) == 3
    shared = len(by_attack["ue"]) + len(by_attack["random_noise"])  # random_noise reads no recipe field
    assert len(poisons) == shared + len(methods) * n_cp_settings * len(by_attack["cp"])


# ------------------------------------------------------------------------------------------ declared cost models
def _costed_suite(tiny_suite_dict: dict, write_suite, attacks: list[str], defenses: list[str]):
    tiny_suite_dict["tracks"]["downstream"]["attacks"] = attacks
    tiny_suite_dict["tracks"]["downstream"]["defenses"] = defenses
    return load_suite(str(write_suite(tiny_suite_dict)))


@pytest.fixture
def costed_plugins(monkeypatch):
    from benchmark.plugins import EXTRA_PLUGINS_ENV

    monkeypatch.setenv(EXTRA_PLUGINS_ENV, os.environ.get(EXTRA_PLUGINS_ENV, "") + ",tests.plugins.costed")


def test_a_plugin_declares_its_own_cost_model_and_its_subclasses_inherit_it(costed_plugins, tiny_suite_dict,
                                                                            write_suite) -> None:
    """A new attack or defense is estimated from the ``cost`` on its class (tests/plugins/costed.py): no
    central table to edit; the model is read from source and evaluated, never imported or run."""
    suite = _costed_suite(tiny_suite_dict, write_suite, ["none", "_test_costed", "_test_costed_child"],
                          ["none", "_test_costed_defense"])
    cells = expand_cells(suite)[0]
    work = suite_work(suite, cells)
    assert not work.unmodelled, work.unmodelled
    poisons = {w.passes for w in work.items.values() if w.kind == "poison"}
    n_poison = {int(c.spec["budget"] * cell_sizes(c).train) for c in cells if c.attack.id != "none"}
    assert poisons == {7.0 * n + 1 for n in n_poison}  # steps × n_poison + 1 (steps > 5)
    svds = [w.svds for w in work.items.values() if w.kind == "defense" and w.svds > 0]
    assert svds and all(s % 3 == 0 for s in svds)  # rounds × images


def test_a_plugin_without_a_cost_model_is_listed_with_the_attribute_to_declare(costed_plugins, tiny_suite_dict,
                                                                               write_suite) -> None:
    suite = _costed_suite(tiny_suite_dict, write_suite, ["none", "_test_uncosted"], ["none"])
    (problem,) = suite_work(suite).unmodelled
    assert "_test_uncosted" in problem and "declare `cost`" in problem and "benchmark/cost_models.py" in problem


def test_cost_expressions_evaluate_arithmetic_only() -> None:
    from benchmark.cost_models import CostModelError, evaluate

    assert evaluate("steps * n + max(1, k // 2) if mode == 'a' and not off else 0",
                    {"steps": 3, "n": 10, "k": 5, "mode": "a", "off": False}) == 32.0
    assert evaluate(12, {}) == 12.0
    for bad, why in (("__import__('os').system('x')", "may not"), ("steps.real", "may not"),
                     ("unknown * 2", "neither a config field"), ("steps *", "does not parse"), ("'text'", "not a number")):
        with pytest.raises(CostModelError, match=why):
            evaluate(bad, {"steps": 3})
