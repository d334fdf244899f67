"""The pre-training tracks: Contrastive Poisoning (cp), PoisonedEncoder (poisoned_encoder) and the
``pretrain-availability`` / ``pretrain-targeted`` pipelines, with throwaway defenses for the hooks."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from benchmark.api import (
    ATTACKS,
    DirectoryCheckpoints,
    PretrainAttackContext,
)
from benchmark.augment import build_augmentation
from benchmark.data import load_dataset
from benchmark.plugins import load_plugins
from benchmark.pretrain import SSLRecipe
from benchmark.runner import run_suite
from benchmark.suite import load_suite
from benchmark.utils import seed_everything

load_plugins()

AUGMENT = {"crop_scale_min": 0.3, "flip": False, "rotation_degrees": 10, "grayscale_prob": 0.0}
METHOD_SETTINGS = {"simclr": {"proj_hidden": 64, "proj_dim": 32},
                   "mocov2": {"queue_size": 256, "proj_hidden": 64, "proj_dim": 32},
                   "byol": {"proj_hidden": 64, "proj_dim": 32}}


def tiny_recipe(method: str = "simclr", **kwargs: Any) -> SSLRecipe:
    return SSLRecipe(method=method, backbone="cnn_micro", epochs=2, batch_size=128, lr=0.002, augment=AUGMENT,
                     method_settings=METHOD_SETTINGS[method], **kwargs)


def tiny_context(tmp_path: Path, n: int = 300, method: str = "simclr", seed: int = 0) -> PretrainAttackContext:
    ds = load_dataset("mnist5k", "train", image_size=16, subset=n, subset_seed=0)
    return PretrainAttackContext(
        images=ds.images, labels=ds.labels, num_classes=ds.num_classes, epsilon=8 / 255, poison_fraction=1.0,
        budget=n, ssl=tiny_recipe(method), generator=torch.Generator().manual_seed(seed),
        device=torch.device("cpu"), checkpoints=DirectoryCheckpoints(tmp_path / "ckpt"),
        cached=lambda kind, config, build: build())


def cp(**settings: Any) -> Any:
    cls = ATTACKS.get("cp")
    return cls(cls.Config(**settings))


# ------------------------------------------------------------------------------------------ CP
def test_cp_classwise_lowers_contrastive_loss_within_epsilon(tmp_path: Path) -> None:
    ctx = tiny_context(tmp_path)
    poison = cp(mode="classwise", rounds=2, model_steps=2, noise_batches=4, pgd_steps=2).craft_availability(ctx)
    diag = poison.diagnostics
    assert diag["loss_poisoned"] < diag["loss_clean"], diag
    dist = (poison.images - ctx.images[poison.indices]).abs().amax()
    assert dist <= ctx.epsilon + 1e-6
    assert poison.images.min() >= 0 and poison.images.max() <= 1
    # class-wise: every poisoned image of a class carries the same δ where no pixel was clipped
    assert len(poison.indices) == ctx.budget


def test_cp_dual_branch_changes_the_gradient_reaching_delta() -> None:
    from attacks.cp import delta_gradient

    ds = load_dataset("mnist5k", "train", image_size=16, subset=64, subset_seed=0)
    images = ds.images
    delta = torch.zeros_like(images).uniform_(-1, 1, generator=torch.Generator().manual_seed(0))

    def grads(method: str) -> tuple[torch.Tensor, torch.Tensor]:
        recipe = tiny_recipe(method)
        torch.manual_seed(0)
        model = recipe.build_model(1).train()
        with torch.no_grad():  # a target/key branch that differs from the online branch
            for p in model.parameters():
                if not p.requires_grad:
                    p.add_(0.05 * torch.randn_like(p))
        augment = build_augmentation(recipe.augment_config(), image_size=16, channels=1)
        out = []
        for dual in (False, True):
            seed_everything(1)
            out.append(delta_gradient(model, augment, images, delta, 8 / 255, dual_branch=dual))
        return out[0], out[1]

    single, dual = grads("mocov2")
    assert not torch.allclose(single, dual)
    single, dual = grads("byol")
    assert not torch.allclose(single, dual)
    single, dual = grads("simclr")  # no momentum branch: the option changes nothing
    assert torch.allclose(single, dual)


def test_cp_generation_resumes_to_the_same_delta(tmp_path: Path) -> None:
    from attacks.cp import CPConfig, generate

    ctx = tiny_context(tmp_path, n=128, method="mocov2")
    config = CPConfig(mode="samplewise", rounds=3, model_steps=1, noise_batches=1, pgd_steps=1, batch_size=64)
    indices = torch.arange(128)
    straight, _ = generate(ctx, config, indices, 7, checkpoint="a")
    partial, _ = generate(ctx, config, indices, 7, checkpoint="b", max_rounds=1)
    assert not torch.equal(partial, straight)
    resumed, diag = generate(ctx, config, indices, 7, checkpoint="b")
    assert diag["rounds"] == 3
    assert torch.equal(resumed, straight)


def test_cp_checkpoints_every_k_rounds_and_after_the_last(tmp_path: Path) -> None:
    from attacks.cp import CPConfig, generate

    ctx = tiny_context(tmp_path, n=64)
    saves: list[int] = []
    store = ctx.checkpoints
    save = store.save

    def counting(name: str, state: Any) -> None:
        saves.append(int(state["round"]))
        save(name, state)

    store.save = counting  # type: ignore[method-assign]
    config = CPConfig(mode="classwise", rounds=7, model_steps=1, noise_batches=1, batch_size=32, checkpoint_every=3)
    generate(ctx, config, torch.arange(64), 7, checkpoint="k")
    assert saves == [3, 6, 7]
    saves.clear()
    _interrupted, _ = generate(ctx, config, torch.arange(64), 7, checkpoint="k2", max_rounds=5)
    assert saves == [3, 5]  # an interruption still leaves its last state


def test_cp_samplewise_initialised_from_classwise(tmp_path: Path) -> None:
    ctx = tiny_context(tmp_path, n=128)
    calls: list[tuple[str, int]] = []

    def cached(kind: str, config: Any, build: Any) -> dict[str, torch.Tensor]:
        calls.append((kind, config["config"]["rounds"]))
        return build()

    ctx = PretrainAttackContext(**{**ctx.__dict__, "cached": cached})
    poison = cp(mode="samplewise", init_from="classwise", init_rounds=2, rounds=1, model_steps=1, noise_batches=1,
                batch_size=64).craft_availability(ctx)
    assert calls == [("cp-classwise-init", 2)]  # the CP-C initialisation runs its own number of rounds
    assert (poison.images - ctx.images[poison.indices]).abs().amax() <= ctx.epsilon + 1e-6


def test_cp_config_problems() -> None:
    from attacks.cp import CPConfig

    assert CPConfig().problems() == []
    problems = CPConfig(mode="x", init_from="classwise", rounds=0, generator_method="nope").problems()
    assert len(problems) == 4
    assert any(p.startswith("init_rounds") for p in CPConfig(init_rounds=3).problems())


# ------------------------------------------------------------------------------------------ PoisonedEncoder
def test_poisoned_encoder_stitches_targets_and_references(tmp_path: Path) -> None:
    from attacks.poisoned_encoder import stitch

    ctx = tiny_context(tmp_path, n=300)
    ctx = PretrainAttackContext(**{**ctx.__dict__, "budget": 12})
    cls = ATTACKS.get("poisoned_encoder")
    poison = cls(cls.Config(n_targets=3, n_references=2)).craft_targeted(ctx)
    # each part at its own size: [target | reference] on a 16 × 32 canvas
    assert poison.images.shape == (12, 1, 16, 32) and poison.images.dtype == torch.float32
    assert len(poison.target_images) == 3
    # no target input is of the target class (no target pool in this context: the pre-training images stand in)
    for t in poison.target_images:
        match = (ctx.images == t).flatten(1).all(1).nonzero().flatten()
        assert int(ctx.labels[match[0]]) != poison.target_class
    a, b = torch.zeros(1, 16, 16), torch.ones(1, 16, 16)
    h = stitch(a, b, vertical=False)
    assert h.shape == (1, 16, 32) and h[:, :, :16].max() == 0 and h[:, :, 16:].min() == 1
    v = stitch(a, b, vertical=True)
    assert v.shape == (1, 32, 16) and v[:, :16].max() == 0 and v[:, 16:].min() == 1


# ------------------------------------------------------------------------------------------ tracks
@pytest.fixture
def test_defenses() -> None:
    from tests.plugins import hooks

    hooks.reset()


def tiny_pretrain_suite(tracks: dict[str, Any], seeds: list[int] | None = None, n: int = 300) -> dict[str, Any]:
    return {
        "name": "tiny-pretrain", "tier": "custom", "seeds": seeds or [0],
        "data": {"image_size": 16, "pretrain_subset": n, "downstream_subset": n},
        "encoders": {"methods": ["simclr"], "backbones": ["cnn_micro"],
                     "recipe": {"epochs": 2, "batch_size": 128, "optimizer": "adam", "lr": 0.002, "augment": AUGMENT},
                     "method_settings": {"simclr": METHOD_SETTINGS["simclr"]}},
        "scenarios": [{"name": "finetune", "pretrain": "mnist5k", "downstream": "mnist5k"}],
        "tracks": tracks,
    }


def run_records(raw: dict[str, Any], tmp_path: Path, write_suite: Any) -> list[dict[str, Any]]:
    suite = load_suite(str(write_suite(raw)))
    run_suite(suite, results_dir=tmp_path / "results", cache_dir=tmp_path / "cache", device="cpu")
    return [json.loads(p.read_text()) for p in sorted((tmp_path / "results").rglob("*.json"))]


def by_attack(records: list[dict[str, Any]], track: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["cell"]["attack"]["name"], r["cell"]["defense"]["name"]): r for r in records if r["track"] == track}


def test_pretrain_track_cells_end_to_end(tmp_path: Path, write_suite: Any) -> None:
    cp_entry = {"id": "cp", "settings": {"rounds": 1, "model_steps": 1, "noise_batches": 1}}
    raw = tiny_pretrain_suite({
        "pretrain-availability": {"budgets": [0.5], "attacks": ["none", "random_noise", cp_entry],
                                  "victim": {"l2": 0.001, "supervised_eval": True, "supervised_epochs": 1},
                                  "recipe": {"epochs": 1}},
        "pretrain-targeted": {"budgets": [0.02], "victim": {"l2": 0.001}, "recipe": {"epochs": 1},
                              "attacks": ["none", "poisoned_encoder",
                                          {"id": "poisoned_encoder", "name": "pe_classes",
                                           "settings": {"n_targets": 4, "n_target_classes": 4}}]},
    }, n=200)
    records = run_records(raw, tmp_path, write_suite)
    assert all(r["status"] == "ok" for r in records), [(r["cell_id"], r["message"]) for r in records if r["status"] != "ok"]
    avail = by_attack(records, "pretrain-availability")
    none = avail[("none", "none")]["metrics"]
    assert none["accuracy_drop"] == 0 and none["accuracy_drop_poisoned_probe"] == 0
    cp_m = avail[("cp", "none")]["metrics"]
    for key in ("clean_accuracy", "poisoned_accuracy", "accuracy_drop", "poisoned_accuracy_poisoned_probe",
                "accuracy_drop_poisoned_probe", "supervised_clean_accuracy", "supervised_poisoned_accuracy",
                "supervised_accuracy_drop", "poison_seconds"):
        assert key in cp_m, key
    assert cp_m["n_poison"] == 100
    assert avail[("cp", "none")]["cell"]["encoder"]["epochs"] == 1  # the track's recipe override
    targeted = by_attack(records, "pretrain-targeted")
    m = targeted[("poisoned_encoder", "none")]["metrics"]
    for key in ("clean_accuracy", "poisoned_accuracy", "attack_success_rate", "attack_success_rate_no_attack",
                "attack_success_rate_augmented", "clean_accuracy_change", "target_probability",
                "target_probability_no_attack"):
        assert key in m and (not key.startswith(("attack", "target")) or 0 <= m[key] <= 1), key
    assert m["target_probability_gain"] == pytest.approx(m["target_probability"] - m["target_probability_no_attack"])
    assert m["target_margin_gain"] == pytest.approx(m["target_margin"] - m["target_margin_no_attack"], abs=1e-5)
    assert 0 <= m["targets_pulled"] <= 1
    assert m["n_poison"] == 4
    assert targeted[("poisoned_encoder", "none")]["details"]["poison_shape"] == [1, 16, 32]
    several = targeted[("pe_classes", "none")]  # one class per target: rates average over four classes
    assert isinstance(several["details"]["target_class"], list) and len(several["details"]["target_class"]) == 4
    assert several["details"]["attack_diagnostics"]["n_target_classes"] == 4
    assert 0 <= several["metrics"]["target_probability"] <= 1


def test_pretrain_tracks_call_the_defense_hooks(tmp_path: Path, write_suite: Any, test_defenses: None) -> None:
    raw = tiny_pretrain_suite({
        "pretrain-availability": {"budgets": [0.5], "attacks": ["random_noise"],
                                  "defenses": ["_test_data", "_test_training", "_test_posthoc"],
                                  "victim": {"l2": 0.001, "supervised_eval": True, "supervised_epochs": 1},
                                  "recipe": {"epochs": 1}},
        "pretrain-targeted": {"budgets": [0.02], "attacks": ["poisoned_encoder"], "defenses": ["_test_posthoc"],
                              "victim": {"l2": 0.001}, "recipe": {"epochs": 1}},
    }, n=200)
    records = run_records(raw, tmp_path, write_suite)
    assert all(r["status"] == "ok" for r in records), [(r["cell_id"], r["message"]) for r in records if r["status"] != "ok"]
    for r in records:
        m = r["metrics"]
        assert m["defense_cost"] == pytest.approx(m["clean_accuracy"] - m["defended_clean_accuracy"])
    from tests.plugins.hooks import calls

    assert calls("transform") > 0 and calls("loss") > 0 and calls("repair") > 0


# ------------------------------------------------------------------------------------------ effects (slow)
SMOKE_RECIPE = {"epochs": 20, "batch_size": 128, "optimizer": "adam", "lr": 0.002, "augment": AUGMENT}


def effect_suite(tracks: dict[str, Any], seed: int) -> dict[str, Any]:
    raw = tiny_pretrain_suite(tracks, seeds=[seed], n=1000)
    raw["encoders"]["recipe"] = copy.deepcopy(SMOKE_RECIPE)
    raw["encoders"]["method_settings"] = {"simclr": {"proj_hidden": 128, "proj_dim": 64}}
    return raw


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_cp_lowers_the_contrastive_loss_more_than_random_noise(tmp_path: Path, seed: int) -> None:
    """REFERENCE §6: at smoke scale the clean-probe gap is within seed noise; the contrastive loss of the
    generator model on CP-poisoned vs random-noise (same ε, same views) batches shows the effect."""
    ctx = tiny_context(tmp_path, n=500, seed=seed)
    diag = cp(mode="classwise", rounds=6, model_steps=4, noise_batches=8).craft_availability(ctx).diagnostics
    assert diag["loss_poisoned"] < diag["loss_random_noise"], diag
    assert diag["loss_poisoned"] < diag["loss_clean"], diag


NO_JITTER = {**AUGMENT, "jitter_strength": 0.0}


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_cp_lowers_the_poisoned_probe_accuracy_more_than_random_noise(tmp_path: Path, write_suite: Any,
                                                                      seed: int) -> None:
    """REFERENCE §6 at the smallest scale where it shows (≈ 70 s per seed): 28 px mnist5k (1000 images),
    cnn_micro SimCLR, 20 victim epochs, crop + rotation (no colour jitter), CP-C 40 whole-epoch rounds.
    Measured here: probe=poisoned 87.6 % (CP-C) vs 92.1 % (random noise), seed 0. The head trained on
    the poisoned images' features leans on the class-wise δ and fails on clean test images."""
    cp_c = {"id": "cp", "name": "cp_c", "settings": {"mode": "classwise", "rounds": 40, "model_steps": 0,
                                                     "noise_batches": 0}}
    raw = tiny_pretrain_suite({"pretrain-availability": {"budgets": [1.0], "attacks": ["random_noise", cp_c],
                                                         "victim": {"l2": 0.001}}}, seeds=[seed], n=1000)
    raw["data"]["image_size"] = 28
    raw["encoders"]["recipe"] = {**SMOKE_RECIPE, "batch_size": 256, "augment": NO_JITTER}
    raw["encoders"]["method_settings"] = {"simclr": {"temperature": 0.5, "proj_hidden": 128, "proj_dim": 64}}
    records = by_attack(run_records(raw, tmp_path, write_suite), "pretrain-availability")
    cp_m, noise = records[("cp_c", "none")]["metrics"], records[("random_noise", "none")]["metrics"]
    assert cp_m["poisoned_accuracy_poisoned_probe"] < noise["poisoned_accuracy_poisoned_probe"] - 0.02, (cp_m, noise)
    assert cp_m["accuracy_drop_poisoned_probe"] > 0.02, cp_m


@pytest.mark.slow
@pytest.mark.xfail(strict=False, reason=(
    "ASR is too coarse at CPU scale (the cpu board reports the target-class probability gain beside it). Tried "
    "before the full-size canvas layout of issue #15, when each part was squeezed to half the image (seed 0 unless noted): 16 "
    "and 28 px mnist5k, cnn_micro and cnn_tiny, "
    "SimCLR and BYOL, 20-100 victim epochs, crop scale min 0.3 and 0.08, 1-5 targets with 1-60 % poisons per "
    "target, targets outside the pre-training set, the target class set to each target's runner-up class: the "
    "targets' probability of the target class never rose consistently (ASR 0 vs 0; augmented ASR 0.00-0.26 vs "
    "0.01-0.28). Even an extra loss term pulling the targets' features onto the references' during SimCLR left "
    "them in their own class; only supervised planting moves them (tests/test_defenses.py). With this test's "
    "settings seed 0 passes (augmented ASR 0.22 vs 0.10) and seed 1 does not (0.00 vs 0.00)."))
@pytest.mark.parametrize("seed", [0, 1])
def test_poisoned_encoder_asr_exceeds_the_no_attack_asr(tmp_path: Path, write_suite: Any, seed: int) -> None:
    attack = {"id": "poisoned_encoder", "settings": {"n_targets": 1, "n_references": 3}}
    raw = effect_suite({"pretrain-targeted": {"budgets": [0.1], "attacks": [attack],
                                              "victim": {"l2": 0.001, "asr_augmentations": 50}}}, seed)
    (record,) = run_records(raw, tmp_path, write_suite)
    m = record["metrics"]
    assert m["attack_success_rate_augmented"] > m["attack_success_rate_augmented_no_attack"], m
    assert m["attack_success_rate"] >= m["attack_success_rate_no_attack"], m


def test_an_attack_that_reads_only_the_backbone_shares_its_poison_across_ssl_methods(tmp_path: Path,
                                                                                      write_suite: Any) -> None:
    """UE's supervised surrogate reads the recipe's backbone only (``recipe_fields``): SimCLR and BYOL
    victims of the same backbone, data and seed get one poison, built once; the context's recipe names no
    SSL method (building the victim's model from it fails loudly)."""
    from benchmark.tracks.pretrain_availability.track import NOT_DECLARED

    raw = tiny_pretrain_suite({"pretrain-availability": {
        "budgets": [0.5], "victim": {"l2": 0.001}, "recipe": {"epochs": 1},
        "attacks": [{"id": "ue", "settings": {"max_rounds": 1, "pgd_steps": 1}}]}}, n=100)
    raw["encoders"]["methods"] = ["simclr", "byol"]
    raw["encoders"]["method_settings"]["byol"] = METHOD_SETTINGS["byol"]
    records = run_records(raw, tmp_path, write_suite)
    ue = [r for r in records if r["cell"]["attack"]["id"] == "ue"]
    assert len(ue) == 2 and all(r["status"] == "ok" for r in ue), [r["message"] for r in ue]
    assert ue[0]["details"]["poison_key"] == ue[1]["details"]["poison_key"]
    built = [json.loads(p.read_text()) for p in (tmp_path / "cache" / "poison-availability").glob("*.json")]
    assert len(built) == 1
    recipe = built[0]["config"]["encoder"]
    assert recipe["method"] == NOT_DECLARED and recipe["backbone"] == "cnn_micro" and "epochs" not in recipe


def test_target_margin_is_positive_exactly_when_the_target_is_in_its_class() -> None:
    from benchmark.probe import LinearHead
    from benchmark.tracks.pretrain_targeted.track import target_scores

    head = LinearHead(torch.eye(3), torch.zeros(3))  # logits = features
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.5, 2.0, 1.5], [0.0, 0.0, -4.0]])
    classes = torch.tensor([0, 2, 2])
    prob, margin = target_scores(head, lambda x: x, logits, classes, torch.device("cpu"))
    assert margin.tolist() == pytest.approx([2.0, -0.5, -4.0])
    assert prob.tolist() == pytest.approx(torch.softmax(logits, 1)[torch.arange(3), classes].tolist())
    predicted = logits.argmax(1)
    assert ((margin > 0) == (predicted == classes)).all()
