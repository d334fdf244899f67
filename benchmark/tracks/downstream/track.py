"""The downstream track (Lu et al., "Indiscriminate Data Poisoning Attacks on Pre-trained Feature
Extractors", SaTML 2024): a clean SSL encoder is frozen, a linear head is trained on the features of the
downstream training set plus ε_d·N poisoned points, and the metric is the head's test-accuracy drop
against the head trained on clean data.

Shared per (encoder, scenario, seed): the encoder, the cached train/test features, the head's L2 weight
(chosen on clean validation data), the clean head. Per cell: the attack, validation, the poisoned head.

Defenses (:class:`DefendedSetting`, shared per (encoder, scenario, seed, defense entry)):

* ``data`` stage: the victim's training images (clean and poisoned alike) are transformed by
  ``transform_images`` before features are computed; the test images too when the defense says
  ``transform_test`` (ME-Net preprocesses at inference). Clean and poison images are transformed in two
  calls (fresh, seeded masks) so that the clean part is cached; the transform is per image, so this is the
  same map as one call on the union, and the defense still cannot tell which images are poisoned.
* ``sanitise`` stage: ``keep_indices`` picks the training points (clean ∪ poison, with their labels and
  the frozen encoder) the victim keeps, and the victim's own head is trained on those; the cell records
  ``removed_clean_share`` and, under an attack, ``removed_poison_share``.
* ``training`` stage: the head is trained by ``fit_head`` on clean ∪ poison images.
* ``posthoc`` stage: the encoder is repaired once (``repair_encoder`` on the clean downstream training
  set; the defense draws its clean subset with its seeded generator) and cached; the head and the
  test features use the repaired encoder, poison images are encoded by it.

Feature-space poisons have no image: no defense here acts on them, so such a cell reports that it was not
run (status ``error`` with a "not applicable" message; the plan skips it: :meth:`Downstream.skip_reason`).
A defense is compared with the **undefended victim trained the same way** (the *reference*): for a
training-stage defense that declares ``reference_settings`` (adversarial training with ε = 0, DP-SGD with
σ = 0 and no clipping) the track trains that reference head on the same data with the same schedule and
seed beside the defended one; for data and post-hoc defenses the reference is the track's own victim.
Metrics with a defense: ``clean_accuracy`` (undefended, no attack), ``defended_clean_accuracy`` (defense,
no attack; cached per defense), ``poisoned_accuracy`` (defense + attack), ``accuracy_drop`` = clean −
poisoned, ``reference_clean_accuracy`` / ``reference_poisoned_accuracy`` (the reference victim without /
with the attack), ``defense_cost`` = reference clean − defended clean (the price of the defense),
``accuracy_restored`` = defended poisoned − reference poisoned (what the defense gives back),
``drop_under_defense`` = defended clean − poisoned, ``defense_seconds``, and for DP-SGD ``privacy_epsilon``
(δ = 1/N), for a sanitiser the shares it removed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from benchmark.plugin_base import FeatureExtractorView, poison_count
from benchmark.plugins import catalogue, resolved_config
from benchmark.probe import LinearHead, SGDProbeConfig, fit_linear_head, head_accuracy, train_sgd_probe
from benchmark.tracks.base import NO_ATTACK, NO_DEFENSE, Cell, MethodEntry, Track, TrackSpec, VictimSpec, register_track
from benchmark.tracks.common import (
    CellOutcome,
    RunEnv,
    cached_features,
    cached_scalar,
    encoder_key,
    extractor_from_tensors,
    extractor_spec,
    load_split,
    plain_tensor,
    plugin_call,
    pretrained_extractor,
    probe_accuracy,
    random_init_extractor,
    recipe_of,
    resolve_l2,
)
from benchmark.tracks.downstream.info import INFO
from benchmark.tracks.downstream.interface import DownstreamPoison
from benchmark.tracks.downstream.validate import validate_downstream
from benchmark.tracks.downstream.work import add_downstream
from benchmark.utils import config_hash, derive_seed
from benchmark.validation import ThreatModelViolation, poison_from_answer, removed_shares, validate_kept
from benchmark.workers import CacheBridge


class DownstreamSetting:
    """Everything a downstream cell shares with the other cells of its encoder/scenario/seed."""

    def __init__(self, cell: Cell, env: RunEnv) -> None:
        # only the shared parts (encoder, scenario, data, seed, victim) are kept; keys are built from the plain spec
        self.env, self.seed = env, cell.seed
        self.encoder_spec, self.victim, self.victim_key = cell.spec["encoder"], cell.victim, cell.spec["victim"]
        data, scenario = cell.data, cell.scenario
        pre = load_split(scenario.pretrain, "train", data, subset=data.pretrain_subset)
        self.channels, self.size = pre.images.shape[1], pre.images.shape[-1]
        self.encoder_key = encoder_key(self.encoder_spec, scenario.pretrain, data, self.seed)
        self.extractor = pretrained_extractor(env, self.encoder_key, pre.images)
        self.pretrain_images = pre.images
        self.train = load_split(scenario.downstream, "train", data, subset=data.downstream_subset, channels=self.channels,
                                image_size=self.size)
        self.test = load_split(scenario.downstream, "test", data, subset=data.downstream_subset, channels=self.channels,
                               image_size=self.size)
        self.num_classes = self.train.num_classes
        self.feature_key = {"encoder": self.encoder_key, "downstream": scenario.downstream}
        self.train_features = cached_features(env, {**self.feature_key, "split": "train"}, self.extractor, self.train.images)
        self.test_features = cached_features(env, {**self.feature_key, "split": "test"}, self.extractor, self.test.images)
        self.l2, self.l2_scores = resolve_l2(self.victim, self.train_features, self.train.labels, self.num_classes)

    def view(self) -> FeatureExtractorView:
        return FeatureExtractorView(self.extractor, self.extractor.feature_dim, self.env.device)

    def clean_accuracy(self) -> float:
        return self.head_accuracy(self.train.images, self.train_features, self.train.labels)

    def random_init_accuracy(self) -> float:
        rand = random_init_extractor(self.env, self.encoder_spec, self.pretrain_images, self.seed)
        with torch.no_grad():
            tr, te = rand(self.train.images.to(self.env.device)), rand(self.test.images.to(self.env.device))
        return probe_accuracy(tr, self.train.labels, te, self.test.labels, self.num_classes, self.l2)

    def head_accuracy(self, images: torch.Tensor | None, features: torch.Tensor, labels: torch.Tensor, *,
                      extractor: Any = None, test_features: torch.Tensor | None = None) -> float:
        """Test accuracy of the victim head trained on (images, features, labels); ``extractor`` and
        ``test_features`` replace the setting's (a defended encoder / preprocessed test set)."""
        extractor = self.extractor if extractor is None else extractor
        test_features = self.test_features if test_features is None else test_features
        if self.victim.kind == "sgd":
            head = train_sgd_probe(extractor, images, labels, self.num_classes, l2=self.l2,
                                   config=self.victim.sgd or SGDProbeConfig(),
                                   seed=self.seed, device=self.env.device)
        else:
            head = fit_linear_head(features, labels.to(features.device), self.num_classes, l2=self.l2)
        return head_accuracy(head, test_features, self.test.labels.to(test_features.device))


class DefendedSetting:
    """A defense applied to a :class:`DownstreamSetting`: what every cell of that defense shares. Every
    call into the defense runs in its own plugin process and gets copies of the victim's training data
    (never which points are poisoned, never test labels)."""

    def __init__(self, setting: DownstreamSetting, entry: Any) -> None:
        self.setting, self.entry, env = setting, entry, setting.env
        info = catalogue().get("defense", entry.id)
        self.stage = info.stage
        # the same-schedule undefended victim of a training-stage defense (None: the track's own victim)
        self.reference = (MethodEntry(entry.id, f"{entry.name} (reference)", {**entry.settings, **info.reference_settings})
                          if self.stage == "training" and info.reference_settings is not None else None)
        self.transform_test = resolved_config("defense", entry.id, entry.settings).transform_test
        self.seed = derive_seed(setting.seed, "defense", entry.id, entry.settings)
        self.key = {**setting.feature_key, "defense": {"id": entry.id, "settings": entry.settings}, "seed": setting.seed}
        self.extractor = setting.extractor
        self.train_images, self.test_images = setting.train.images, setting.test.images
        self.train_features, self.test_features = setting.train_features, setting.test_features
        start = time.perf_counter()
        if self.stage == "data":
            self.train_images = self.transform(setting.train.images, "train")
            self.train_features = cached_features(env, {**self.key, "split": "train"}, self.extractor, self.train_images)
            if self.transform_test:
                self.test_images = self.transform(setting.test.images, "test")
                self.test_features = cached_features(env, {**self.key, "split": "test"}, self.extractor, self.test_images)
        elif self.stage == "posthoc":
            self.extractor = self.repaired_extractor()
            self.train_features = cached_features(env, {**self.key, "split": "train"}, self.extractor, setting.train.images)
            self.test_features = cached_features(env, {**self.key, "split": "test"}, self.extractor, setting.test.images)
        self.setup_seconds = time.perf_counter() - start

    def call(self, function: str, purpose: str, request: dict[str, Any], entry: MethodEntry | None = None) -> dict[str, Any]:
        """``function`` of the defense (or of ``entry``: its reference) in its plugin process, with a context
        seeded for ``purpose`` (the same seed for the defense and its reference: the same batches)."""
        seed = derive_seed(self.seed, purpose)
        context = {"track": INFO.name, "num_classes": self.setting.num_classes, "seed": seed}
        return plugin_call(self.setting.env, function, "defense", entry or self.entry,
                           {**request, "defense_context": context}, rng_seed=seed)

    def transform(self, images: torch.Tensor, purpose: str) -> torch.Tensor:
        """The data-stage defense's transform of ``images`` (checked: same shape, finite)."""
        out = plain_tensor(self.call("transform_images", purpose, {"images": images})["images"], "transformed images").float()
        if out.shape != images.shape or not torch.isfinite(out).all():
            raise ValueError(f"{self.entry.id}.transform_images returned shape {tuple(out.shape)} (expected "
                             f"{tuple(images.shape)}) or non-finite values")
        return out

    def kept(self, images: torch.Tensor, labels: torch.Tensor, purpose: str) -> torch.Tensor:
        """The sanitising defense's selection of the training points (checked; sorted indices)."""
        s = self.setting
        answer = self.call("keep_indices", purpose, {"extractor": extractor_spec(s.encoder_spec, self.extractor, s.channels),
                                                      "images": images, "labels": labels})
        return validate_kept(answer.get("kept"), len(images), self.entry.id)

    def sanitised(self, images: torch.Tensor, features: torch.Tensor, labels: torch.Tensor, purpose: str,
                  n_poison: int) -> dict[str, float]:
        """The victim's accuracy on the points the sanitiser keeps of (images, features, labels), whose last
        ``n_poison`` rows are the poisons, and the shares it removed."""
        kept = self.kept(images, labels, purpose)
        poisons = torch.arange(len(images) - n_poison, len(images)) if n_poison else None
        on_device = kept.to(features.device)
        return {**self.accuracy(images[kept], features[on_device], labels[kept]),
                **removed_shares(kept, len(images), poisons)}

    def repaired_extractor(self) -> Any:
        s = self.setting
        recipe = recipe_of(s.encoder_spec)

        def build() -> dict[str, torch.Tensor]:
            answer = self.call("repair_encoder", "repair", {"extractor": extractor_spec(s.encoder_spec, s.extractor, s.channels),
                                                           "images": s.train.images, "labels": s.train.labels})
            return {k: plain_tensor(v, f"repaired encoder tensor {k}") for k, v in answer["tensors"].items()}

        tensors = s.env.cache.get_or_build("encoder", {**s.encoder_key, "variant": self.key}, build)
        return extractor_from_tensors(recipe, s.channels, tensors, s.env.device)

    def view(self) -> FeatureExtractorView:
        return FeatureExtractorView(self.extractor, self.extractor.feature_dim, self.setting.env.device)

    def fit_head(self, images: torch.Tensor, labels: torch.Tensor, purpose: str,
                 entry: MethodEntry | None = None) -> tuple[LinearHead, dict[str, float]]:
        """The training-stage defense's head (or its reference's; checked: shapes, finite) and its privacy
        accounting."""
        s = self.setting
        answer = self.call("fit_head", purpose, {"extractor": extractor_spec(s.encoder_spec, self.extractor, s.channels),
                                                  "images": images, "labels": labels, "num_classes": s.num_classes, "l2": s.l2},
                           entry)
        weight, bias = plain_tensor(answer["weight"], "head weight").float(), plain_tensor(answer["bias"], "head bias").float()
        if weight.shape != (s.num_classes, self.extractor.feature_dim) or bias.shape != (s.num_classes,) \
                or not (torch.isfinite(weight).all() and torch.isfinite(bias).all()):
            raise ValueError(f"{self.entry.id}.fit_head returned a head of shape {tuple(weight.shape)}/{tuple(bias.shape)} "
                             f"(expected ({s.num_classes}, {self.extractor.feature_dim})/({s.num_classes},)) or non-finite values")
        privacy = {str(k): float(v) for k, v in (answer.get("privacy") or {}).items()}
        return LinearHead(weight.to(s.env.device), bias.to(s.env.device)), privacy

    def accuracy(self, images: torch.Tensor | None, features: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """Test accuracy of the defended victim trained on (images, features, labels), with the defense's
        scalars (privacy ε for DP-SGD) and, for a training-stage defense with a reference, the
        ``reference_accuracy`` of the same-schedule undefended head on the same data."""
        s = self.setting
        out: dict[str, float] = {}
        if self.stage == "training":
            head, privacy = self.fit_head(images, labels, "victim")
            out["accuracy"] = head_accuracy(head, self.test_features, s.test.labels.to(self.test_features.device))
            out |= privacy
            if self.reference is not None:
                reference, _ = self.fit_head(images, labels, "victim", self.reference)
                out["reference_accuracy"] = head_accuracy(reference, self.test_features,
                                                          s.test.labels.to(self.test_features.device))
        else:
            out["accuracy"] = s.head_accuracy(images, features, labels, extractor=self.extractor, test_features=self.test_features)
        return out

    def clean(self) -> dict[str, float]:
        """Defense, no attack: cached per (encoder, scenario, seed, victim, defense)."""
        s = self.setting
        key = {**self.key, "victim": s.victim_key, "l2": s.l2}

        def build() -> dict[str, torch.Tensor]:
            start = time.perf_counter()
            if self.stage == "sanitise":
                out = self.sanitised(self.train_images, self.train_features, s.train.labels, "train", 0)
            else:
                out = self.accuracy(self.train_images, self.train_features, s.train.labels)
            out["seconds"] = time.perf_counter() - start + self.setup_seconds
            return {k: torch.tensor(v, dtype=torch.float64) for k, v in out.items()}

        return {k: float(v) for k, v in s.env.cache.get_or_build("defended-clean", key, build).items()}

    def poisoned(self, poison: Any, cell_seed: int) -> dict[str, float]:
        """Defense + attack: the victim trains on clean ∪ poison (the defense cannot tell them apart)."""
        s = self.setting
        poison_images = poison.images.cpu()
        if self.stage == "data":
            poison_images = self.transform(poison_images, f"poison-{cell_seed}")
        poison_feats = self.view().features(poison_images)
        feats = torch.cat([self.train_features, poison_feats])
        images = torch.cat([self.train_images, poison_images])
        labels = torch.cat([s.train.labels, poison.labels.cpu()])
        if self.stage == "sanitise":
            return self.sanitised(images, feats, labels, f"poison-{cell_seed}", len(poison_images))
        return self.accuracy(images, feats, labels)


def defended_metrics(setting: DownstreamSetting, cell: Cell, clean: float, poison: Any | None,
                     undefended_poisoned: float) -> tuple[dict[str, float], str | None]:
    """Metrics of a cell with a defense; ``poison`` None for the no-attack cell. Returns (metrics, reason
    the cell does not apply)."""
    entry = cell.defense
    if poison is not None and poison.images is None:
        return {}, (f"not applicable: {cell.attack.name} poisons features, which bypass every defense's input "
                    f"pipeline ({entry.name} acts on images, heads on images or the encoder)")
    defended = setting.env.shared({"defended": config_hash(setting.feature_key), "seed": setting.seed,
                                   "victim": setting.victim_key, "defense": entry.to_dict()},
                                  lambda: DefendedSetting(setting, entry))
    start = time.perf_counter()
    base = defended.clean()
    result = base if poison is None else defended.poisoned(poison, derive_seed(cell.id))
    reference_clean = base.get("reference_accuracy", clean)
    reference_poisoned = result.get("reference_accuracy", undefended_poisoned)
    metrics = {"defended_clean_accuracy": base["accuracy"], "poisoned_accuracy": result["accuracy"],
               "accuracy_drop": clean - result["accuracy"], "reference_clean_accuracy": reference_clean,
               "reference_poisoned_accuracy": reference_poisoned, "defense_cost": reference_clean - base["accuracy"],
               "accuracy_restored": result["accuracy"] - reference_poisoned,
               "drop_under_defense": base["accuracy"] - result["accuracy"],
               "defense_seconds": (time.perf_counter() - start) if poison is not None else base.get("seconds", 0.0)}
    for name in ("privacy_epsilon", "removed_clean_share", "removed_poison_share"):
        if name in result:
            metrics[name] = result[name]
    return metrics, None


def craft_poison(setting: DownstreamSetting, cell: Cell) -> tuple[DownstreamPoison, float]:
    """Run the cell's attack in its plugin process on copies of what the threat model grants (the frozen
    extractor's weights, the clean training set and its features, the budget, ε, the head's L2 weight);
    a validated poison out."""
    env, entry = setting.env, cell.attack
    space = catalogue().get("attack", entry.id).space
    budget = poison_count(cell.budget, len(setting.train))
    seed = derive_seed(setting.seed, entry.name, cell.budget, cell.input_epsilon)
    scope = {"encoder": config_hash(setting.encoder_key), "downstream": cell.scenario.downstream}
    context = {"extractor": extractor_spec(setting.encoder_spec, setting.extractor, setting.channels),
               "train_images": setting.train.images, "train_labels": setting.train.labels,
               "train_features": setting.train_features, "num_classes": setting.num_classes, "budget": budget,
               "input_epsilon": cell.input_epsilon, "l2": setting.l2}
    answer = plugin_call(env, "craft", "attack", entry, {"track": INFO.name, "context": context}, rng_seed=seed,
                         bridge=CacheBridge(env.cache, f"attack-{entry.id}", scope))
    poison = poison_from_answer(answer, DownstreamPoison)
    validate(setting, poison, space, budget, cell.input_epsilon)
    return poison, float(answer.get("seconds", 0.0))


def validate(setting: DownstreamSetting, poison: DownstreamPoison, space: str | None, budget: int,
             input_epsilon: float | None) -> None:
    validate_downstream(poison, space=space or "input", budget=budget, image_shape=tuple(setting.train.images.shape[1:]),
                        feature_dim=setting.extractor.feature_dim, num_classes=setting.num_classes,
                        train_images=setting.train.images, input_epsilon=input_epsilon)


POISON_FIELDS = ("labels", "images", "features", "base_indices")


def shared_poison(setting: DownstreamSetting, cell: Cell) -> tuple[DownstreamPoison, float]:
    """The cell's validated poison, crafted once and shared by every defense of the same attack cell
    (cached under the attack entry, budget, constraint, seed and encoder/scenario); invalid poisons are
    never cached."""
    key = {"feature_key": setting.feature_key, "attack": cell.spec["attack"], "budget": cell.budget,
           "input_epsilon": cell.input_epsilon, "seed": cell.seed, "l2": setting.l2}

    def build() -> dict[str, torch.Tensor]:
        poison, seconds = craft_poison(setting, cell)
        tensors = {name: getattr(poison, name) for name in POISON_FIELDS if getattr(poison, name) is not None}
        tensors |= {f"diagnostic.{k}": torch.tensor(float(v), dtype=torch.float64) for k, v in poison.diagnostics.items()}
        return tensors | {"attack_seconds": torch.tensor(seconds, dtype=torch.float64)}

    tensors = setting.env.cache.get_or_build("poison-downstream", key, build)
    fields = {name: tensors.get(name) for name in POISON_FIELDS}
    diagnostics = {k.removeprefix("diagnostic."): float(v) for k, v in tensors.items() if k.startswith("diagnostic.")}
    poison = DownstreamPoison(**fields, diagnostics=diagnostics)
    budget = poison_count(cell.budget, len(setting.train))  # what the victim consumes is what was validated
    validate(setting, poison, catalogue().get("attack", cell.attack.id).space, budget, cell.input_epsilon)
    return poison, float(tensors["attack_seconds"])


def run_downstream_cell(cell: Cell, env: RunEnv) -> CellOutcome:
    setting = env.shared({"track": INFO.name, **{k: cell.spec[k] for k in ("encoder", "scenario", "data", "seed", "victim")}},
                         lambda: DownstreamSetting(cell, env))
    shared_key = {"encoder": setting.encoder_key, "downstream": cell.scenario.downstream,
                  "victim": setting.victim_key, "l2": setting.l2}
    clean = cached_scalar(env, "clean-accuracy", shared_key, setting.clean_accuracy)
    random_init = cached_scalar(env, "random-init-accuracy", shared_key, setting.random_init_accuracy)
    details: dict[str, Any] = {"head_l2": setting.l2, "head_l2_validation": setting.l2_scores,
                               "n_train": len(setting.train), "n_test": len(setting.test)}
    poison = None
    if cell.attack.id == NO_ATTACK:
        n_poison, attack_seconds = 0, 0.0
    else:
        try:
            poison, attack_seconds = shared_poison(setting, cell)
        except ThreatModelViolation as exc:
            return CellOutcome(metrics={}, details=details, status="invalid", message=str(exc))
        n_poison = len(poison.labels)
        details["attack_diagnostics"] = dict(poison.diagnostics)
        details["attack_space"] = catalogue().get("attack", cell.attack.id).space
    poisoned = clean if poison is None else undefended_poisoned_accuracy(setting, cell, poison)
    common = {"clean_accuracy": clean, "random_init_accuracy": random_init, "encoder_gain": clean - random_init,
              "n_poison": float(n_poison), "attack_seconds": attack_seconds}
    if cell.defense.id != NO_DEFENSE:
        extra, reason = defended_metrics(setting, cell, clean, poison, poisoned)
        if reason:
            return CellOutcome(metrics={}, details=details, status="error", message=reason)
        details["defense_stage"] = catalogue().get("defense", cell.defense.id).stage
        return CellOutcome(metrics={**common, **extra}, details=details)
    return CellOutcome(metrics={**common, "poisoned_accuracy": poisoned, "accuracy_drop": clean - poisoned}, details=details)


def undefended_poisoned_accuracy(setting: DownstreamSetting, cell: Cell, poison: DownstreamPoison) -> float:
    """Test accuracy of the undefended victim trained on clean ∪ poison: the undefended cell's number and the
    reference of its data and post-hoc defenses (cached under the poison's key)."""
    key = {"feature_key": setting.feature_key, "attack": cell.spec["attack"], "budget": cell.budget,
           "input_epsilon": cell.input_epsilon, "seed": cell.seed, "victim": setting.victim_key, "l2": setting.l2}

    def compute() -> float:
        poison_feats = (poison.features.to(setting.env.device).float() if poison.features is not None
                        else setting.view().features(poison.images))
        feats = torch.cat([setting.train_features, poison_feats])
        labels = torch.cat([setting.train.labels, poison.labels.cpu()])
        images = torch.cat([setting.train.images, poison.images.cpu()]) if poison.images is not None else None
        return setting.head_accuracy(images, feats, labels)

    return cached_scalar(setting.env, "poisoned-accuracy", key, compute)


@dataclass(frozen=True, kw_only=True)
class DownstreamTrackSpec(TrackSpec):
    """``tracks.downstream``; ``input_epsilons``: null (unconstrained) and/or ℓ∞ radii in (0, 1]."""

    input_epsilons: list[float | None] = field(default_factory=lambda: [None])

    def problems(self) -> list[str]:
        return super().problems() + [f"input_epsilons: {e!r} must be null or in (0, 1]"
                                     for e in self.input_epsilons if e is not None and not 0 < e <= 1]


@register_track
class Downstream(Track[DownstreamTrackSpec]):
    """Poisoned points added to the training set of a frozen encoder's linear head (this module's docstring)."""

    info = INFO
    Spec = DownstreamTrackSpec

    def variants(self, spec: DownstreamTrackSpec) -> list[dict[str, Any]]:
        return [{"input_epsilon": eps} for eps in spec.input_epsilons or [None]]

    def skip_reason(self, attack: MethodEntry, attack_space: str | None, defense: MethodEntry,
                    victim: VictimSpec, variant: Mapping[str, Any]) -> str | None:
        if attack.id == NO_ATTACK or attack_space != "feature":
            return None
        if victim.kind != "convex":
            return f"{attack.name} poisons features, which only the convex head on cached features consumes"
        if variant.get("input_epsilon") is not None:
            return f"{attack.name} poisons features; an input constraint does not apply to it"
        if defense.id != NO_DEFENSE:
            return (f"{attack.name} poisons features directly; {defense.name} acts on images, on how heads "
                    f"train on images, or on the encoder, so it has nothing to act on")
        return None

    def run(self, cell: Cell, env: RunEnv) -> CellOutcome:
        return run_downstream_cell(cell, env)

    def add_work(self, work: Any, cell: Cell, sizes: Any) -> None:
        add_downstream(work, cell, sizes)
