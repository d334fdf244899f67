"""Contract tests over the registry, as timm tests every registered model: every attack and defense module
in ``attacks/`` and ``defenses/`` is picked up with no list to edit, and each must

* build from its default config (no range problems) and from the scaled-down settings it declares in the
  ``smoke`` suite (which every method must join: that is how the board gets its row),
* be deterministic under a seed, pass its track's validator on tiny data and never mutate its inputs,
* run one tiny cell end to end through the harness (plugin processes included) with status ``ok``.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from benchmark.api import (
    AvailabilityPoison,
    DefenseContext,
    Detection,
    DirectoryCheckpoints,
    DownstreamAttackContext,
    DownstreamPoison,
    FeatureExtractorView,
    HeadSpec,
    PretrainAttackContext,
    TargetedPoison,
)
from benchmark.data import load_dataset
from benchmark.plugins import PLUGIN_PACKAGES, load_plugins
from benchmark.pretrain import FeatureExtractor, SSLRecipe, make_extractor
from benchmark.suite import SUITES_DIR, parse_yaml
from benchmark.tracks.downstream.validate import validate_downstream
from benchmark.tracks.pretrain_availability.validate import validate_availability
from benchmark.tracks.pretrain_targeted.validate import validate_targeted
from benchmark.utils import seed_everything
from benchmark.validation import fingerprint, validate_kept


def _registered() -> tuple[dict[str, Any], dict[str, Any]]:
    attacks, defenses = load_plugins(include_extra=False)
    own = lambda cls: cls.__module__.split(".")[0] in PLUGIN_PACKAGES
    return ({n: attacks.get(n) for n in attacks.names() if own(attacks.get(n))},
            {n: defenses.get(n) for n in defenses.names() if own(defenses.get(n))})


ATTACK_CLASSES, DEFENSE_CLASSES = _registered()
SMOKE = parse_yaml((SUITES_DIR / "smoke.yaml").read_text())
ATTACK_TRACKS = [(a, t) for a, cls in ATTACK_CLASSES.items() for t in cls.tracks()]
DEFENSE_TRACKS = [(d, t) for d, cls in DEFENSE_CLASSES.items() for t in cls.applies_to()]
HEAVY_CELLS = {("patchsearch", "pretrain-backdoor")}  # ≈ 8 s: scheduled first (tests/conftest.py)


def smoke_settings(kind: str, plugin_id: str, track: str) -> dict[str, Any]:
    """The scaled-down settings ``plugin_id`` declares for ``track`` in the smoke suite."""
    entries = SMOKE["tracks"].get(track, {}).get("attacks" if kind == "attack" else "defenses", [])
    for entry in entries:
        entry = {"id": entry} if isinstance(entry, str) else entry
        if entry["id"] == plugin_id:
            return dict(entry.get("settings") or {})
    pytest.fail(f"{kind} {plugin_id!r} applies to {track} but is not in benchmark/suites/smoke.yaml's {track} track: "
                "add it there with scaled-down settings (see CONTRIBUTING.md)")


@pytest.mark.parametrize("plugin_id", sorted(ATTACK_CLASSES) + sorted(DEFENSE_CLASSES))
def test_builds_from_its_default_config(plugin_id: str) -> None:
    cls = ATTACK_CLASSES.get(plugin_id) or DEFENSE_CLASSES[plugin_id]
    config = cls.Config()
    assert config.problems() == [], f"{plugin_id}'s defaults are out of its own ranges"
    assert cls.citation, f"{plugin_id} names no paper (class attribute `citation`)"
    cls(config)


# ------------------------------------------------------------------------------------------ attacks
ENCODER = {"method": "simclr", "backbone": "cnn_micro", "epochs": 1, "batch_size": 64,
           "augment": {"flip": False, "rotation_degrees": 10, "grayscale_prob": 0.0, "jitter_strength": 0.0},
           "method_settings": {"proj_hidden": 64, "proj_dim": 32}}


def tiny_extractor(images: torch.Tensor) -> FeatureExtractor:
    torch.manual_seed(0)
    return make_extractor(SSLRecipe(**ENCODER).build_model(images.shape[1]).backbone, images, torch.device("cpu"))


def attack_context(track: str, tmp_path: Path, seed: int) -> Any:
    data = load_dataset("mnist5k", "train", image_size=16, subset=300, subset_seed=0)
    generator = torch.Generator().manual_seed(seed)
    cached = lambda kind, config, build: build()
    if track == "downstream":
        extractor = tiny_extractor(data.images)
        with torch.no_grad():
            features = extractor(data.images)
        return DownstreamAttackContext(
            extractor=FeatureExtractorView(extractor, extractor.feature_dim, torch.device("cpu")), train_images=data.images,
            train_labels=data.labels, train_features=features, num_classes=10, budget=30, input_epsilon=None,
            head=HeadSpec(10, 1e-3), generator=generator, device=torch.device("cpu"), cached=cached)
    budget = 300 if track == "pretrain-availability" else 6
    ctx = PretrainAttackContext(
        images=data.images, labels=data.labels, num_classes=10, epsilon=8 / 255 if track == "pretrain-availability" else 1.0,
        poison_fraction=budget / 300, budget=budget, ssl=SSLRecipe(**ENCODER), generator=generator,
        device=torch.device("cpu"), checkpoints=DirectoryCheckpoints(tmp_path / f"ckpt-{seed}-{len(list(tmp_path.iterdir()))}"),
        cached=cached)
    if track == "pretrain-backdoor":
        from benchmark.api import BackdoorAttackContext

        return BackdoorAttackContext(**ctx.__dict__, target_class=3)
    return ctx


def craft(cls: Any, settings: dict[str, Any], track: str, ctx: Any) -> Any:
    attack = cls(cls.Config(**settings))
    seed_everything(0)
    return getattr(attack, cls.track_base(track).craft_method)(ctx)


def tensors_of(poison: Any) -> dict[str, Any]:
    return {k: getattr(poison, k) for k in poison.__dataclass_fields__ if k != "diagnostics"}


def check_attack_contract(cls: Any, settings: dict[str, Any], track: str, tmp_path: Path) -> None:
    """Deterministic under a seed, valid for its track's validator, inputs untouched (AssertionError or
    ThreatModelViolation otherwise)."""
    ctx = attack_context(track, tmp_path, seed=3)
    given = (ctx.train_images, ctx.train_labels, ctx.train_features) if track == "downstream" else (ctx.images, ctx.labels)
    before = fingerprint(*given)
    first = craft(cls, settings, track, ctx)
    assert fingerprint(*given) == before, f"{cls.id} mutated its inputs"
    second = craft(cls, settings, track, attack_context(track, tmp_path, seed=3))
    for name, value in tensors_of(first).items():
        other = tensors_of(second)[name]
        assert (torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other), f"{cls.id}.{name} is not deterministic"
    if track == "downstream":
        assert isinstance(first, DownstreamPoison)
        validate_downstream(first, space=cls.space, budget=ctx.budget, image_shape=tuple(ctx.train_images.shape[1:]),
                            feature_dim=ctx.extractor.feature_dim, num_classes=10, train_images=ctx.train_images,
                            input_epsilon=None)
    elif track == "pretrain-availability":
        assert isinstance(first, AvailabilityPoison)
        validate_availability(first, budget=ctx.budget, images=ctx.images, epsilon=ctx.epsilon)
    elif track == "pretrain-backdoor":
        from benchmark.tracks.pretrain_backdoor.validate import validate_backdoor

        validate_backdoor(first, budget=ctx.budget, images=ctx.images, target_class=ctx.target_class)
    else:
        assert isinstance(first, TargetedPoison)
        validate_targeted(first, budget=ctx.budget, image_shape=tuple(ctx.images.shape[1:]), num_classes=10)


@pytest.mark.parametrize(("attack_id", "track"), ATTACK_TRACKS)
def test_attack_is_deterministic_valid_and_leaves_its_inputs_alone(attack_id: str, track: str, tmp_path: Path) -> None:
    check_attack_contract(ATTACK_CLASSES[attack_id], smoke_settings("attack", attack_id, track), track, tmp_path)


@pytest.mark.parametrize("breakage", ["unseeded", "mutates", "over budget"])
def test_a_broken_attack_fails_the_contract(breakage: str, tmp_path: Path) -> None:
    """The contract catches what a broken submission does (the same checks every module gets)."""
    from benchmark.api import MethodConfig
    from benchmark.validation import ThreatModelViolation

    class Broken(ATTACK_CLASSES["label_flip"]):  # type: ignore[misc, valid-type]
        id = "broken"

        def craft_downstream(self, ctx: Any) -> DownstreamPoison:
            poison = super().craft_downstream(ctx)
            if breakage == "unseeded":  # draws from the operating system, not from ctx.generator
                fresh = torch.Generator().manual_seed(int.from_bytes(os.urandom(4), "little"))
                labels = torch.randint(0, 10, poison.labels.shape, generator=fresh)
                return DownstreamPoison(images=poison.images, labels=labels, base_indices=poison.base_indices)
            if breakage == "mutates":
                ctx.train_labels[:3] = (ctx.train_labels[:3] + 1) % 10
                return poison
            n = ctx.budget + 1
            return DownstreamPoison(images=ctx.train_images[:n].clone(), labels=ctx.train_labels[:n].clone())

    assert issubclass(Broken.Config, MethodConfig)
    with pytest.raises((AssertionError, ThreatModelViolation)):
        check_attack_contract(Broken, {}, "downstream", tmp_path)


# ------------------------------------------------------------------------------------------ defenses
@pytest.mark.parametrize("defense_id", sorted(DEFENSE_CLASSES))
def test_defense_hooks_are_deterministic_and_leave_their_inputs_alone(defense_id: str) -> None:
    cls = DEFENSE_CLASSES[defense_id]
    settings = smoke_settings("defense", defense_id, cls.applies_to()[0])
    data = load_dataset("mnist5k", "train", image_size=16, subset=200, subset_seed=0)
    extractor = tiny_extractor(data.images)

    def call() -> dict[str, torch.Tensor]:
        defense = cls(cls.Config(**settings))
        ctx = DefenseContext("downstream", 10, 5, torch.Generator().manual_seed(5), torch.device("cpu"))
        seed_everything(5)
        view = FeatureExtractorView(extractor, extractor.feature_dim, torch.device("cpu"))
        if cls.stage == "data":
            return {"images": defense.transform_images(data.images, ctx)}
        if cls.stage == "sanitise":
            return {"kept": validate_kept(defense.keep_indices(view, data.images, data.labels, ctx), len(data.images), defense_id)}
        if cls.stage == "training":
            head = defense.fit_head(view, data.images, data.labels, HeadSpec(10, 1e-3), ctx)
            return {"weight": head.weight, "bias": head.bias}
        if cls.stage == "detect":
            found = defense.detect_encoder(view, data.images, ctx)
            assert isinstance(found, Detection) and isinstance(found.flagged, bool)
            return {"score": torch.tensor(found.score), **{k: torch.tensor(v) for k, v in found.diagnostics.items()}}
        repaired = defense.repair_encoder(extractor, data.images, data.labels, ctx)
        assert isinstance(repaired, FeatureExtractor)
        return dict(repaired.state_dict())

    before = fingerprint(data.images, data.labels, *extractor.state_dict().values())
    first, second = call(), call()
    assert fingerprint(data.images, data.labels, *extractor.state_dict().values()) == before, f"{defense_id} mutated its inputs"
    for name, value in first.items():
        assert torch.equal(value, second[name]), f"{defense_id}: {name} is not deterministic"
        assert torch.isfinite(value.float()).all()


# ------------------------------------------------------------------------------------------ end to end
def tiny_suite(track: str, attacks: list[Any], defenses: list[Any]) -> dict[str, Any]:
    from tests.conftest import TINY_SUITE

    raw = copy.deepcopy(TINY_SUITE)
    raw["scenarios"] = raw["scenarios"][:1]
    raw["encoders"]["recipe"]["epochs"] = 1
    raw["data"] = {"image_size": 16, "pretrain_subset": 200, "downstream_subset": 200}
    body: dict[str, Any] = {"attacks": attacks, "defenses": defenses, "victim": {"l2": 0.001}}
    if track == "downstream":
        body |= {"budgets": [0.1], "input_epsilons": [None]}
    else:
        body |= {"budgets": [0.03 if track == "pretrain-targeted" else 1.0], "recipe": {"epochs": 1}}
        if track == "pretrain-availability":
            body |= {"epsilon": 8 / 255, "victim": {"l2": 0.001, "supervised_eval": True, "supervised_epochs": 1}}
    raw["tracks"] = {track: body}
    return raw


def run_tiny(raw: dict[str, Any], tmp_path: Path) -> list[dict[str, Any]]:
    import json

    import yaml

    from benchmark.runner import run_suite
    from benchmark.suite import load_suite

    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(raw))
    run_suite(load_suite(str(path)), results_dir=tmp_path / "results", cache_dir=tmp_path / "cache", device="cpu")
    return [json.loads(p.read_text()) for p in sorted((tmp_path / "results").rglob("*.json"))]


@pytest.mark.parametrize(("attack_id", "track"), ATTACK_TRACKS)
def test_attack_runs_one_tiny_cell_end_to_end(attack_id: str, track: str, tmp_path: Path) -> None:
    entry = {"id": attack_id, "settings": smoke_settings("attack", attack_id, track)}
    (record,) = run_tiny(tiny_suite(track, [entry], ["none"]), tmp_path)
    assert record["status"] == "ok", record["message"]
    assert record["provenance"]["sources"]["attack"]["sha256"]
    meta = record["plugins"]["attack"]  # what the board reads about the attack: from the record, not its source
    assert meta["id"] == attack_id and meta["module"] == f"attacks.{attack_id}" and meta["summary"]
    assert set(meta) >= {"citation", "paper_url", "space", "expected_null", "control_settings"}
    assert "defense" not in record["plugins"]


@pytest.mark.parametrize(("defense_id", "track"), [pytest.param(*c, marks=pytest.mark.heavy) if c in HEAVY_CELLS else c
                                                   for c in DEFENSE_TRACKS])
def test_defense_runs_one_tiny_cell_end_to_end(defense_id: str, track: str, tmp_path: Path) -> None:
    attack = {"downstream": "label_flip", "pretrain-availability": "random_noise", "pretrain-targeted": "none",
              "pretrain-backdoor": "sslbkd"}[track]
    entry = {"id": defense_id, "settings": smoke_settings("defense", defense_id, track)}
    records = run_tiny(tiny_suite(track, [attack], [entry]), tmp_path)
    if not records:
        pytest.skip(f"{defense_id} does not support the tiny {track} encoder (the plan lists the reason)")
    (record,) = records
    assert record["status"] == "ok", record["message"]
    metrics = record["metrics"]
    if DEFENSE_CLASSES[defense_id].stage == "detect":  # a verdict on the victim and on the clean encoder
        assert {"detection_score", "detection_flagged", "detection_score_clean_encoder"} <= set(metrics)
    else:
        assert "defense_cost" in metrics
    if DEFENSE_CLASSES[defense_id].stage == "sanitise":
        assert 0 <= metrics["removed_clean_share"] <= 1 and 0 <= metrics["removed_poison_share"] <= 1
