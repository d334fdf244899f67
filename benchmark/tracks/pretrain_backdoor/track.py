"""The pre-training backdoor track: the attacker modifies or injects at most a fraction p of the unlabeled
pre-training set so that, once the victim has pre-trained on it and fitted the standard clean linear probe on clean
labelled data, test images carrying the attacker's trigger are classified as the target class (Saha et al., CVPR
2022; Li et al., ICCV 2023; Zhang et al., CVPR 2024).

Every attack of a cell aims at the same target class: one drawn per (setting, seed), or each class of the track's
``target_classes`` (the same for every seed, so the seed spread is the training's): the cell then pre-trains one
victim per class and records each metric's mean over them (each class's metrics in its details). The attack returns its
poisons and its trigger's parameters as plain tensors (:class:`~.interface.BackdoorPoison`); the validator checks the
budget and that the poisons carry that trigger, and the harness (:mod:`.triggers`), never the attack, applies it to
the test images of every non-target class (a patch at seeded random locations, the same for every encoder of the
cell). Metrics: ``attack_success_rate`` (the share of those triggered images the backdoored victim's probe puts in
the target class), ``attack_success_rate_clean_encoder`` (the same triggered images on the clean encoder and its
probe: what the trigger does with no poison, the trigger-only control), the gain ``asr_gain`` (what the board ranks),
``target_rate_no_trigger`` (the clean victim on the untriggered images), ``clean_accuracy`` (clean encoder),
``poisoned_accuracy`` and ``clean_accuracy_change``. The ``none`` attack has no trigger: its rates are the
untriggered rate, its gain 0. An attack run with no poison (a control setting) is measured on the clean encoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from benchmark.plugin_base import config_problems, poison_count
from benchmark.pretrain import FeatureExtractor
from benchmark.probe import LinearHead
from benchmark.ssl import SSL_METHODS
from benchmark.tracks._pretrain import (
    PretrainSetting,
    PretrainTrackSpec,
    defense_entry,
    defense_request,
    defense_stage,
    diagnostic_tensors,
    diagnostics_of,
    sanitised_indices,
    victim_encoder,
)
from benchmark.tracks._pretrain_work import add_pretrain_work
from benchmark.tracks.base import NO_ATTACK, NO_DEFENSE, Cell, MethodEntry, Track, register_track
from benchmark.tracks.common import CellOutcome, RunEnv, data_key, extractor_spec, plugin_call, pretrained_extractor
from benchmark.tracks.pretrain_backdoor.info import INFO
from benchmark.tracks.pretrain_backdoor.interface import BackdoorPoison
from benchmark.tracks.pretrain_backdoor.triggers import add_frequency, paste_patch, random_locations
from benchmark.tracks.pretrain_backdoor.validate import validate_backdoor
from benchmark.utils import derive_seed
from benchmark.validation import ThreatModelViolation, poison_from_answer, removed_shares
from benchmark.work import add_clean_encoder
from benchmark.workers import CacheBridge

POISON_KIND = "poison-backdoor"
TRIGGER_FIELDS = ("patch", "patch_locations", "patch_opacity", "patch_test_region", "frequency", "frequency_window",
                  "frequency_test_scale")


def target_class(setting: PretrainSetting) -> int:
    """The class every attack of the setting's cells aims at when the track names none (seeded per setting and
    seed)."""
    gen = torch.Generator().manual_seed(derive_seed(setting.seed, "backdoor-target-class"))
    return int(torch.randint(0, setting.num_classes, (1,), generator=gen))


def target_classes(setting: PretrainSetting, cell: Cell) -> list[int]:
    """The classes the cell's attack aims at, one victim each: the track's ``target_classes``, else one drawn."""
    named = cell.variant("target_classes")
    if not named:
        return [target_class(setting)]
    outside = [c for c in named if not 0 <= c < setting.num_classes]
    if outside:
        raise ValueError(f"target_classes: {outside} outside the {setting.num_classes} classes of {setting.scenario.downstream}")
    return [int(c) for c in named]


def craft(setting: PretrainSetting, cell: Cell, target: int) -> tuple[BackdoorPoison, str, float]:
    """The validated poison of this cell (cached), its cache key and the crafting time: the attacker is granted the
    clean unlabeled pre-training images (with labels, to find the target class's), the budget, the victim's SSL
    recipe and the target class, in its own plugin process."""
    env = setting.env
    key = {"attack": {"id": cell.attack.id, "settings": cell.attack.settings}, "encoder": setting.encoder_spec,
           "pretrain": setting.scenario.pretrain, "data": data_key(setting.data), "seed": setting.seed,
           "budget": cell.budget, "target_class": target}
    name = env.cache.key(POISON_KIND, key)
    budget = poison_count(cell.budget, len(setting.pre))
    context = {"images": setting.pre.images, "labels": setting.pre.labels, "num_classes": setting.pre.num_classes,
               "epsilon": 1.0, "poison_fraction": cell.budget, "budget": budget, "recipe": setting.encoder_spec,
               "target_class": target}

    def validate(poison: BackdoorPoison) -> None:
        validate_backdoor(poison, budget=budget, images=setting.pre.images, target_class=target)

    def build() -> dict[str, torch.Tensor]:  # an invalid poison raises: nothing is cached
        answer = plugin_call(env, "craft", "attack", cell.attack, {"track": cell.track, "context": context},
                             rng_seed=derive_seed(setting.seed, cell.attack.id, cell.budget),
                             bridge=CacheBridge(env.cache, f"attack-{cell.attack.id}", key, checkpoint_key=name))
        poison = poison_from_answer(answer, BackdoorPoison)
        validate(poison)
        optional = {f: getattr(poison, f) for f in ("indices", *TRIGGER_FIELDS) if getattr(poison, f) is not None}
        return {"images": poison.images.float(), **optional, "seconds": torch.tensor(float(answer.get("seconds", 0.0))),
                **diagnostic_tensors(poison.diagnostics)}

    t = env.cache.get_or_build(POISON_KIND, key, build)
    poison = BackdoorPoison(images=t["images"], indices=t.get("indices"), target_class=target,
                            **{f: t.get(f) for f in TRIGGER_FIELDS}, diagnostics=diagnostics_of(t))
    validate(poison)
    return poison, name, float(t["seconds"])


def triggered(poison: BackdoorPoison, images: torch.Tensor, seed: int) -> torch.Tensor:
    """``images`` with the poison's trigger as the harness applies it at test time: a patch (at its opacity) at
    random locations drawn from ``seed`` (the same for every encoder of a setting; within its test region when it
    declares one), a frequency trigger at its test magnitude."""
    if poison.patch is not None:
        gen = torch.Generator().manual_seed(derive_seed(seed, "backdoor-test-locations"))
        region = None if poison.patch_test_region is None else (float(poison.patch_test_region[0]),
                                                                float(poison.patch_test_region[1]))
        locations = random_locations(len(images), tuple(images.shape), tuple(poison.patch.shape), gen, region)
        opacity = 1.0 if poison.patch_opacity is None else float(poison.patch_opacity)
        return paste_patch(images, poison.patch, locations, opacity)
    assert poison.frequency is not None and poison.frequency_window is not None and poison.frequency_test_scale is not None
    test = poison.frequency.double().clone()
    test[:, 2] *= float(poison.frequency_test_scale)
    return add_frequency(images, test, int(poison.frequency_window))


def target_rate(head: LinearHead, extractor: FeatureExtractor, images: torch.Tensor, target: int,
                device: torch.device) -> float:
    """The share of ``images`` the probe ``head`` on ``extractor`` puts in class ``target``."""
    with torch.no_grad():
        return float((head.predict(extractor(images.to(device))).cpu() == target).float().mean())


def poisoned_pretraining(setting: PretrainSetting, poison: BackdoorPoison) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The victim's pre-training images: the clean ones with the poisons in place of ``indices``; or the clean ones
    and the injected poisons (canvases of their own shape, each view cropped from the whole canvas)."""
    if poison.indices is None:
        return setting.pre.images, poison.images if len(poison.images) else None
    images = setting.pre.images.clone()
    images[poison.indices] = poison.images
    return images, None


# ------------------------------------------------------------------------------------------ defenses
def sanitiser_view(canvases: torch.Tensor, side: int) -> torch.Tensor:
    """Injected canvases as a sanitiser sees them beside the clean images: the shorter side resized to ``side``,
    then the centre ``side`` × ``side`` crop (the evaluation transform of PatchSearch's reference code)."""
    height, width = canvases.shape[-2:]
    scale = side / min(height, width)
    resized = F.interpolate(canvases, size=(max(side, round(height * scale)), max(side, round(width * scale))),
                            mode="bilinear", align_corners=False)
    top, left = (resized.shape[-2] - side) // 2, (resized.shape[-1] - side) // 2
    return resized[..., top:top + side, left:left + side]


def poison_rows(poison: BackdoorPoison, n: int) -> torch.Tensor:
    """The rows of the poisons in what a sanitiser sees: the replaced indices, or the injected canvases after the
    ``n`` pre-training images."""
    return poison.indices if poison.indices is not None else torch.arange(n, n + len(poison.images))


def victim(setting: PretrainSetting, cell: Cell, images: torch.Tensor, poison: str | None,
           injected: torch.Tensor | None, rows: torch.Tensor | None) -> tuple[dict[str, Any], FeatureExtractor, dict[str, float]]:
    """The victim pre-trained on ``images`` (and the ``injected`` canvases) under the cell's defense, its cache key,
    and for a sanitiser the shares of clean images and of poisons (``rows``) it removed. A detector leaves the victim
    undefended. A sanitiser sees the images and the canvases (:func:`sanitiser_view`) together, with the encoder
    pre-trained on all of them (PatchSearch's protocol); the victim then pre-trains on what it keeps."""
    stage, env = defense_stage(cell), setting.env
    if stage != "sanitise":
        if stage == "detect":
            key = setting.variant_key({"poison": poison})
            return key, pretrained_extractor(env, key, images, injected), {}
        key, extractor = victim_encoder(setting, cell, images, poison, injected)
        return key, extractor, {}
    undefended_key = setting.variant_key({"poison": poison})
    undefended = pretrained_extractor(env, undefended_key, images, injected)
    seen = images if injected is None else torch.cat([images, sanitiser_view(injected, images.shape[-1])])
    kept = sanitised_indices(setting, cell, seen, poison, encoder=(undefended_key, undefended))
    n = len(images)
    if len(kept) < 2:
        raise ValueError(f"{cell.defense.id} kept {len(kept)} of {len(seen)} pre-training images: too few to pre-train the victim")
    kept_injected = None if injected is None else injected[kept[kept >= n] - n]
    key = setting.variant_key({"poison": poison, "defense": defense_entry(cell)})
    return key, pretrained_extractor(env, key, images[kept[kept < n]], kept_injected), removed_shares(kept, len(seen), rows)


def detection(setting: PretrainSetting, cell: Cell, key: dict[str, Any], extractor: FeatureExtractor) -> dict[str, float]:
    """The cell's detector on the encoder ``key`` (cached per encoder), given the clean labelled training images
    without their labels: its score, verdict (1 = flagged) and diagnostics."""
    env = setting.env
    context, seed = defense_request(setting, cell)

    def build() -> dict[str, torch.Tensor]:
        request = {**context, "extractor": extractor_spec(setting.encoder_spec, extractor, setting.channels),
                   "images": setting.train.images}
        answer = plugin_call(env, "detect_encoder", "defense", cell.defense, request, rng_seed=seed)
        score = float(answer["score"])
        if score != score or abs(score) == float("inf"):
            raise ValueError(f"{cell.defense.id}.detect_encoder returned a score that is not finite: {score}")
        numbers = {k: v for k, v in (answer.get("diagnostics") or {}).items() if v is not None}
        return {"score": torch.tensor(score), "flagged": torch.tensor(float(bool(answer["flagged"]))),
                **diagnostic_tensors(numbers)}

    # the shadow images are the downstream training set: part of the key (a transfer scenario has other ones)
    t = env.cache.get_or_build("detection", {"encoder": key, "defense": defense_entry(cell),
                                             "images": setting.scenario.downstream}, build)
    return {"score": float(t["score"]), "flagged": float(t["flagged"]), **diagnostics_of(t)}


def defense_metrics(setting: PretrainSetting, cell: Cell, key: dict[str, Any], extractor: FeatureExtractor,
                    clean: float) -> tuple[dict[str, float], dict[str, Any]]:
    """A detector's verdicts on the victim and on the clean encoder; any other defense's victim pre-trained on the
    clean images (its clean accuracy and cost against the clean encoder)."""
    if defense_stage(cell) == "detect":
        victim_verdict = detection(setting, cell, key, extractor)
        clean_verdict = detection(setting, cell, setting.clean_key, setting.clean)
        metrics = {"detection_score": victim_verdict.pop("score"), "detection_flagged": victim_verdict.pop("flagged"),
                   "detection_score_clean_encoder": clean_verdict.pop("score"),
                   "detection_flagged_clean_encoder": clean_verdict.pop("flagged")}
        return metrics, {"detection_diagnostics": victim_verdict, "detection_diagnostics_clean_encoder": clean_verdict}
    defended_key, defended, shares = victim(setting, cell, setting.pre.images, None, None, None)
    defended_clean = setting.probe_accuracy(defended_key, defended)
    extra = {"removed_clean_share_clean_set": shares["removed_clean_share"]} if shares else {}
    return {"defended_clean_accuracy": defended_clean, "defense_cost": clean - defended_clean, **extra}, {}


# ------------------------------------------------------------------------------------------ the SSL settings axis
@dataclass(frozen=True, kw_only=True)
class BackdoorTrackSpec(PretrainTrackSpec):
    """The pre-training track section and ``method_settings_axis``: a list of SSL method settings (e.g. SimCLR's
    ``temperature``), each overriding the suite's for this track's encoders, one cell per entry (CTRL's result depends
    on SimCLR's temperature); null: the suite's settings only."""

    method_settings_axis: list[dict[str, Any]] | None = None
    # the target classes of every cell, the same for every seed (one victim each, the metrics their mean);
    # null: one class drawn per seed
    target_classes: list[int] | None = None

    def problems(self) -> list[str]:
        problems = super().problems()
        if self.target_classes is not None:
            classes = self.target_classes
            if not classes or any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in classes):
                problems.append(f"target_classes: expected a non-empty list of class indices ≥ 0, got {classes!r}")
            elif len(set(classes)) != len(classes):
                problems.append(f"target_classes: {classes} names a class twice")
        for i, entry in enumerate(self.method_settings_axis or []):
            where = f"method_settings_axis[{i}]"
            per_method = {name: config_problems(SSL_METHODS.get(name).Config, entry, where) for name in SSL_METHODS.names()}
            if all(per_method.values()):  # valid for no SSL method: the problems of the method it comes closest to
                problems += min(per_method.values(), key=lambda found: ("did you mean" not in " ".join(found), len(found)))
        return problems


def with_method_settings(cell: Cell) -> Cell:
    """``cell`` with its axis entry's SSL method settings in its encoder (what its encoders are pre-trained with)."""
    override = cell.variant("method_settings")
    if not override:
        return cell
    encoder = cell.spec["encoder"]
    settings = {**(encoder.get("method_settings") or {}), **override}
    return Cell(cell.track, {**cell.spec, "encoder": {**encoder, "method_settings": settings}})


def run_pretrain_backdoor_cell(cell: Cell, env: RunEnv) -> CellOutcome:
    cell = with_method_settings(cell)
    setting = PretrainSetting.shared(cell, env)
    targets = target_classes(setting, cell)
    outcomes = [run_target(setting, cell, target) for target in targets]
    if len(outcomes) == 1:
        return outcomes[0]
    invalid = next((o for o in outcomes if o.status == "invalid"), None)
    if invalid is not None:
        return invalid
    details = {k: v for k, v in outcomes[0].details.items() if k not in PER_TARGET_DETAILS}
    for name in ("attack_diagnostics", "detection_diagnostics"):
        if name in outcomes[0].details:  # what the board shows: each number's mean over the target classes
            details[name] = mean_of([o.details[name] for o in outcomes])
    details |= {"target_class": targets, "per_target_class": {
        str(t): {"metrics": o.metrics, **{k: o.details[k] for k in PER_TARGET_DETAILS if k in o.details}}
        for t, o in zip(targets, outcomes, strict=True)}}
    return CellOutcome(metrics=mean_of([o.metrics for o in outcomes]), details=details)


# what differs between a cell's target classes (the rest of the details is the setting's)
PER_TARGET_DETAILS = ("target_class", "n_triggered_test", "attack_diagnostics", "detection_diagnostics")


def mean_of(numbers: list[dict[str, float]]) -> dict[str, float]:
    """Each key's mean over ``numbers`` (the keys every one of them has)."""
    return {k: sum(n[k] for n in numbers) / len(numbers) for k in numbers[0] if all(k in n for n in numbers)}


def run_target(setting: PretrainSetting, cell: Cell, target: int) -> CellOutcome:
    """The cell's metrics for one target class: the attack's poisons aimed at it, the victim pre-trained on them."""
    env = setting.env
    others = setting.test.images[setting.test.labels != target]
    details: dict[str, Any] = {"head_l2": setting.l2, "n_pretrain": len(setting.pre), "n_test": len(setting.test),
                               "target_class": target, "n_triggered_test": len(others)}
    clean = setting.probe_accuracy(setting.clean_key, setting.clean)
    clean_head = setting.head(setting.clean_key, setting.clean)
    untriggered = target_rate(clean_head, setting.clean, others, target, env.device)
    metrics: dict[str, float] = {"clean_accuracy": clean, "target_rate_no_trigger": untriggered}
    key, extractor, n_poison, seconds = setting.clean_key, setting.clean, 0, 0.0
    stage = defense_stage(cell)
    retrains = stage not in (None, "detect")  # the victim pre-trains under the defense
    if cell.attack.id == NO_ATTACK:
        asr = clean_asr = untriggered
        if retrains:
            key, extractor, shares = victim(setting, cell, setting.pre.images, None, None, None)
            metrics |= shares
    else:
        try:
            poison, name, seconds = craft(setting, cell, target)
        except ThreatModelViolation as exc:
            return CellOutcome(metrics={}, details=details, status="invalid", message=str(exc))
        n_poison = len(poison.images)
        details |= {"attack_diagnostics": poison.diagnostics, "trigger": "patch" if poison.patch is not None else "frequency",
                    "poisons_injected": poison.indices is None}
        if n_poison or retrains:
            images, injected = poisoned_pretraining(setting, poison)
            key, extractor, shares = victim(setting, cell, images, name, injected, poison_rows(poison, len(images)))
            metrics |= shares
        test = triggered(poison, others, setting.seed)
        asr = target_rate(setting.head(key, extractor), extractor, test, target, env.device)
        clean_asr = target_rate(clean_head, setting.clean, test, target, env.device)
    poisoned = setting.probe_accuracy(key, extractor)
    metrics |= {"poisoned_accuracy": poisoned, "clean_accuracy_change": poisoned - clean, "accuracy_drop": clean - poisoned,
                "attack_success_rate": asr, "attack_success_rate_clean_encoder": clean_asr, "asr_gain": asr - clean_asr,
                "n_poison": float(n_poison), "poison_seconds": seconds}
    if stage is not None:
        numbers, more = defense_metrics(setting, cell, key, extractor, clean)
        metrics |= numbers
        details |= more
    return CellOutcome(metrics=metrics, details=details)


@register_track
class PretrainBackdoor(Track[BackdoorTrackSpec]):
    """A trigger planted through unlabeled pre-training images (this module's docstring)."""

    info = INFO
    Spec = BackdoorTrackSpec

    def variants(self, spec: BackdoorTrackSpec) -> list[dict[str, Any]]:
        base: dict[str, Any] = {"input_epsilon": None}
        if spec.target_classes:
            base["target_classes"] = list(spec.target_classes)
        if not spec.method_settings_axis:
            return [base]
        return [{**base, "method_settings": dict(entry)} for entry in spec.method_settings_axis]

    def defense_reason(self, defense: MethodEntry, stage: str | None) -> str | None:
        return None  # every stage acts here: detectors' verdicts are recorded, sanitisers see injected canvases too

    def run(self, cell: Cell, env: RunEnv) -> CellOutcome:
        return run_pretrain_backdoor_cell(cell, env)

    def add_work(self, work: Any, cell: Cell, sizes: Any) -> None:
        cell = with_method_settings(cell)
        if cell.attack.settings.get("mode") == "trigger_only" and cell.defense.id == NO_DEFENSE:
            add_clean_encoder(work, cell, sizes)  # the shipped attacks' control releases no poison: the clean encoder
            return
        # the poisons replace (or join: counted as joining) pre-training images; no supervised cross-evaluation here;
        # one poison and victim per named target class (a drawn one: one)
        for target in cell.variant("target_classes") or [None]:
            add_pretrain_work(work, cell, sizes, injected=True, recipe_keyed=False, aim=target)
