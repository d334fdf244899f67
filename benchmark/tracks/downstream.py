"""The downstream track (Lu et al., "Indiscriminate Data Poisoning Attacks on Pre-trained Feature
Extractors", SaTML 2024): a clean SSL encoder is frozen, a linear head is trained on the features of the
downstream training set plus ε_d·N poisoned points, and the metric is the head's test-accuracy drop
against the head trained on clean data.

Shared per (encoder, scenario, seed): the encoder, the cached train/test features, the head's L2 weight
(chosen on clean validation data), the clean head. Per cell: the attack, validation, the poisoned head.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import torch

from benchmark.api import ATTACKS, DownstreamAttackContext, FeatureExtractorView, HeadSpec
from benchmark.data import ImageDataset
from benchmark.probe import SGDProbeConfig, fit_linear_head, head_accuracy, train_sgd_probe
from benchmark.suite import NO_ATTACK, Cell
from benchmark.tracks import register_track
from benchmark.tracks.common import (
    CellOutcome,
    RunEnv,
    cached_features,
    encoder_key,
    load_split,
    pretrained_extractor,
    probe_accuracy,
    random_init_extractor,
    resolve_l2,
)
from benchmark.utils import config_hash, derive_seed
from benchmark.validation import ThreatModelViolation, fingerprint, validate_downstream


class DownstreamSetting:
    """Everything a downstream cell shares with the other cells of its encoder/scenario/seed."""

    def __init__(self, cell: Cell, env: RunEnv) -> None:
        spec = cell.spec  # only the shared parts (encoder, scenario, data, seed, victim) are kept
        self.env, self.seed = env, int(spec["seed"])
        self.encoder_spec, self.victim = spec["encoder"], spec["victim"]
        data, scenario = spec["data"], spec["scenario"]
        pre = load_split(scenario["pretrain"], "train", data, subset_key="pretrain_subset")
        self.channels, self.size = pre.images.shape[1], pre.images.shape[-1]
        self.encoder_key = encoder_key(spec["encoder"], scenario["pretrain"], data, self.seed)
        self.extractor = pretrained_extractor(env, self.encoder_key, pre.images)
        self.pretrain_images = pre.images
        self.train = load_split(scenario["downstream"], "train", data, subset_key="downstream_subset",
                                channels=self.channels, image_size=self.size)
        self.test = load_split(scenario["downstream"], "test", data, subset_key="downstream_subset",
                               channels=self.channels, image_size=self.size)
        self.num_classes = self.train.num_classes
        self.feature_key = {"encoder": self.encoder_key, "downstream": scenario["downstream"]}
        self.train_features = cached_features(env, {**self.feature_key, "split": "train"}, self.extractor, self.train.images)
        self.test_features = cached_features(env, {**self.feature_key, "split": "test"}, self.extractor, self.test.images)
        self.l2, self.l2_scores = resolve_l2(spec["victim"], self.train_features, self.train.labels, self.num_classes)

    def view(self) -> FeatureExtractorView:
        return FeatureExtractorView(self.extractor, self.extractor.feature_dim, self.env.device)

    def clean_accuracy(self) -> float:
        return self.head_accuracy(self.train.images, self.train_features, self.train.labels)

    def random_init_accuracy(self) -> float:
        rand = random_init_extractor(self.env, self.encoder_spec, self.pretrain_images, self.seed)
        with torch.no_grad():
            tr, te = rand(self.train.images.to(self.env.device)), rand(self.test.images.to(self.env.device))
        return probe_accuracy(tr, self.train.labels, te, self.test.labels, self.num_classes, self.l2)

    def head_accuracy(self, images: torch.Tensor | None, features: torch.Tensor, labels: torch.Tensor) -> float:
        """Test accuracy of the victim head trained on (images, features, labels)."""
        if self.victim["kind"] == "sgd":
            config = SGDProbeConfig(**(self.victim.get("sgd") or {}))
            head = train_sgd_probe(self.extractor, images, labels, self.num_classes, l2=self.l2, config=config,
                                   seed=self.seed, device=self.env.device)
        else:
            head = fit_linear_head(features, labels.to(features.device), self.num_classes, l2=self.l2)
        return head_accuracy(head, self.test_features, self.test.labels.to(self.test_features.device))


def cached_scalar(env: RunEnv, kind: str, key: Mapping[str, Any], compute: Any) -> float:
    return float(env.cache.get_or_build(kind, key, lambda: {"value": torch.tensor(compute())})["value"])


def craft_poison(setting: DownstreamSetting, cell: Cell) -> tuple[Any, float]:
    """Run the cell's attack under the harness: a read-only view in, a validated poison out."""
    spec, env = cell.spec, setting.env
    entry = cell.attack
    cls = ATTACKS.get(entry.id)
    attack = cls(cls.Config(**entry.settings))
    budget = int(spec["budget"] * len(setting.train))
    seed = derive_seed(setting.seed, entry.name, spec["budget"], spec["input_epsilon"])
    encoder_hash = config_hash(setting.encoder_key)

    def cached(kind: str, config: Mapping[str, Any], build: Any) -> dict[str, torch.Tensor]:
        return env.cache.get_or_build(f"attack-{kind}", {"encoder": encoder_hash, "downstream": spec["scenario"]["downstream"], **config}, build)

    ctx = DownstreamAttackContext(
        extractor=setting.view(), train_images=setting.train.images, train_labels=setting.train.labels,
        train_features=setting.train_features, num_classes=setting.num_classes, budget=budget,
        input_epsilon=spec["input_epsilon"], head=HeadSpec(setting.num_classes, setting.l2),
        generator=torch.Generator().manual_seed(seed), device=env.device, cached=cached)
    before = fingerprint(setting.train.images, setting.train.labels, setting.train_features)
    start = time.perf_counter()
    poison = attack.craft_downstream(ctx)
    seconds = time.perf_counter() - start
    problems = []
    if fingerprint(setting.train.images, setting.train.labels, setting.train_features) != before:
        problems.append("the attack mutated the clean training data it was given")
    try:
        validate_downstream(poison, space=cls.space, budget=budget, image_shape=tuple(setting.train.images.shape[1:]),
                            feature_dim=setting.extractor.feature_dim, num_classes=setting.num_classes,
                            train_images=setting.train.images, input_epsilon=spec["input_epsilon"])
    except ThreatModelViolation as exc:
        problems += exc.problems
    if problems:
        raise ThreatModelViolation(problems)
    return poison, seconds


@register_track("downstream")
def run_downstream_cell(cell: Cell, env: RunEnv) -> CellOutcome:
    spec = cell.spec
    setting = env.shared({"track": "downstream", **{k: spec[k] for k in ("encoder", "scenario", "data", "seed", "victim")}},
                         lambda: DownstreamSetting(cell, env))
    shared_key = {"encoder": setting.encoder_key, "downstream": cell.spec["scenario"]["downstream"],
                  "victim": cell.spec["victim"], "l2": setting.l2}
    clean = cached_scalar(env, "clean-accuracy", shared_key, setting.clean_accuracy)
    random_init = cached_scalar(env, "random-init-accuracy", shared_key, setting.random_init_accuracy)
    details: dict[str, Any] = {"head_l2": setting.l2, "head_l2_validation": setting.l2_scores,
                               "n_train": len(setting.train), "n_test": len(setting.test)}
    if cell.attack.id == NO_ATTACK:
        poisoned, n_poison, attack_seconds = clean, 0, 0.0
    else:
        try:
            poison, attack_seconds = craft_poison(setting, cell)
        except ThreatModelViolation as exc:
            return CellOutcome(metrics={}, details=details, status="invalid", message=str(exc))
        n_poison = len(poison.labels)
        poison_feats = (poison.features.to(env.device).float() if poison.features is not None
                        else setting.view().features(poison.images))
        feats = torch.cat([setting.train_features, poison_feats])
        labels = torch.cat([setting.train.labels, poison.labels.cpu()])
        images = torch.cat([setting.train.images, poison.images.cpu()]) if poison.images is not None else None
        poisoned = setting.head_accuracy(images, feats, labels)
        details["attack_diagnostics"] = dict(poison.diagnostics)
        details["attack_space"] = ATTACKS.get(cell.attack.id).space
    metrics = {"clean_accuracy": clean, "poisoned_accuracy": poisoned, "accuracy_drop": clean - poisoned,
               "random_init_accuracy": random_init, "encoder_gain": clean - random_init,
               "n_poison": float(n_poison), "attack_seconds": attack_seconds}
    return CellOutcome(metrics=metrics, details=details)
