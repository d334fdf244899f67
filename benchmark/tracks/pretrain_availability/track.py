"""The pre-training availability track (He, Zha, Katabi, "Indiscriminate Poisoning Attacks on
Unsupervised Contrastive Learning", ICLR 2023): the attacker perturbs a fraction p of the unlabeled
pre-training images within an ℓ∞ ball ε; the victim pre-trains the same SSL recipe from scratch on them;
the metric is the linear-probe accuracy drop against the clean encoder.

Two probe protocols: ``probe=clean`` (the published one: the head is trained on the clean
labeled training set) gives ``poisoned_accuracy`` / ``accuracy_drop``; ``probe=poisoned`` (the head is
trained on the poisoned images' features, for a victim who uses the released data end to end) gives
``*_poisoned_probe``. With ``victim.supervised_eval`` a supervised CNN (the same backbone + a linear
layer) is trained on the poisoned vs the clean labeled set as a cross-evaluation.

Cached artifacts: the poison (attack config × encoder recipe × data × budget × ε × seed), the victim
encoder (the clean key plus ``variant = {poison, defense}``), features, and scalar accuracies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from benchmark.plugin_base import check_range, poison_count
from benchmark.plugins import catalogue
from benchmark.tracks._pretrain import (
    PretrainSetting,
    PretrainTrackSpec,
    defense_entry,
    defense_stage,
    diagnostic_tensors,
    diagnostics_of,
    sanitised_indices,
    supervised_accuracy,
    supervised_key,
    victim_encoder,
)
from benchmark.tracks._pretrain_work import add_pretrain_work
from benchmark.tracks.base import NO_ATTACK, Cell, Track, register_track
from benchmark.tracks.common import CellOutcome, RunEnv, cached_scalar, data_key, plugin_call
from benchmark.tracks.pretrain_availability.info import INFO
from benchmark.tracks.pretrain_availability.interface import AvailabilityPoison
from benchmark.tracks.pretrain_availability.validate import validate_availability
from benchmark.utils import derive_seed
from benchmark.validation import ThreatModelViolation, poison_from_answer, removed_shares
from benchmark.workers import CacheBridge

POISON_KIND = "poison-availability"
NOT_DECLARED = "(not in the attack's recipe_fields)"


def attacker_recipe(setting: PretrainSetting, cell: Cell) -> dict[str, Any]:
    """The victim recipe as the attack sees it: only the fields it declares it reads
    (``Attack.recipe_fields``; all when it declares none), so its poison is shared by the recipes that
    agree on them (keyed and handed over alike: a field it did not declare is at its default)."""
    fields = catalogue().get("attack", cell.attack.id).recipe_fields
    spec = setting.encoder_spec
    if fields is None:
        return dict(spec)
    # the recipe's required fields, when not declared, name no real method or backbone: building a model
    # from them fails loudly instead of quietly using a victim the poison is not keyed on
    return {"method": NOT_DECLARED, "backbone": NOT_DECLARED} | {k: spec[k] for k in fields if k in spec}


def poison_key(setting: PretrainSetting, cell: Cell) -> dict[str, Any]:
    return {"attack": {"id": cell.attack.id, "settings": cell.attack.settings}, "encoder": attacker_recipe(setting, cell),
            "pretrain": setting.scenario.pretrain, "data": data_key(setting.data), "seed": setting.seed,
            "budget": cell.budget, "epsilon": cell.variant("epsilon")}


def attack_request(setting: PretrainSetting, cell: Cell) -> tuple[dict[str, Any], int]:
    """What the availability attacker is granted (plain data): the clean unlabeled pre-training images and
    their labels (class-wise poisons), ε, the fraction p and budget, the victim's SSL recipe."""
    epsilon = cell.variant("epsilon")
    budget = poison_count(cell.budget, len(setting.pre))
    seed = derive_seed(setting.seed, cell.attack.id, cell.attack.settings, cell.budget, epsilon)
    context = {"images": setting.pre.images, "labels": setting.pre.labels, "num_classes": setting.pre.num_classes,
               "epsilon": float(epsilon), "poison_fraction": cell.budget, "budget": budget,
               "recipe": attacker_recipe(setting, cell)}
    return context, seed


def craft(setting: PretrainSetting, cell: Cell) -> tuple[AvailabilityPoison, str, float]:
    """The validated poison of this cell (cached), its cache key and its generation time."""
    env, key = setting.env, poison_key(setting, cell)
    context, seed = attack_request(setting, cell)
    name = env.cache.key(POISON_KIND, key)

    def validate(poison: AvailabilityPoison) -> None:
        validate_availability(poison, budget=context["budget"], images=setting.pre.images, epsilon=context["epsilon"])

    def build() -> dict[str, torch.Tensor]:  # an invalid poison raises: nothing is cached
        scope = {k: key[k] for k in ("encoder", "pretrain", "data", "seed", "budget", "epsilon")}
        answer = plugin_call(env, "craft", "attack", cell.attack, {"track": cell.track, "context": context}, rng_seed=seed,
                             bridge=CacheBridge(env.cache, f"attack-{cell.attack.id}", scope, checkpoint_key=name))
        poison = poison_from_answer(answer, AvailabilityPoison)
        validate(poison)
        return {"images": poison.images.float(), "indices": poison.indices,
                "seconds": torch.tensor(float(answer.get("seconds", 0.0))), **diagnostic_tensors(poison.diagnostics)}

    tensors = env.cache.get_or_build(POISON_KIND, key, build)
    poison = AvailabilityPoison(images=tensors["images"], indices=tensors["indices"], diagnostics=diagnostics_of(tensors))
    validate(poison)
    return poison, name, float(tensors["seconds"])


def victim_accuracies(setting: PretrainSetting, cell: Cell, images: torch.Tensor, poison: str | None) -> dict[str, float | None]:
    """Probe = clean and probe = poisoned accuracies of the victim pre-trained on ``images`` (for a sanitising
    defense: on the images it keeps, and the probe = poisoned head on those too)."""
    key, extractor = victim_encoder(setting, cell, images, poison)
    kept = sanitised_indices(setting, cell, images, poison) if defense_stage(cell) == "sanitise" else None
    return {"probe_clean": setting.probe_accuracy(key, extractor),
            "probe_poisoned": setting.poisoned_probe_accuracy(key, extractor, images, poison, kept)}


def supervised_metrics(setting: PretrainSetting, cell: Cell, images: torch.Tensor, poison: str | None) -> dict[str, float]:
    env, entry = setting.env, defense_entry(cell)
    if defense_stage(cell) == "posthoc":
        entry = None  # a post-hoc defense repairs encoders: the supervised victim is the undefended one
    clean = cached_scalar(env, "supervised-accuracy", supervised_key(setting, None, None),
                          lambda: supervised_accuracy(setting, setting.pre.images, None))
    poisoned = cached_scalar(env, "supervised-accuracy", supervised_key(setting, poison, entry),
                             lambda: supervised_accuracy(setting, images, cell if entry is not None else None))
    return {"supervised_clean_accuracy": clean, "supervised_poisoned_accuracy": poisoned,
            "supervised_accuracy_drop": clean - poisoned}


def run_pretrain_availability_cell(cell: Cell, env: RunEnv) -> CellOutcome:
    setting = PretrainSetting.shared(cell, env)
    details: dict[str, Any] = {"head_l2": setting.l2, "head_l2_validation": setting.l2_scores,
                               "n_pretrain": len(setting.pre), "n_train": len(setting.train),
                               "n_test": len(setting.test), "epsilon": cell.variant("epsilon"),
                               "probe_protocols": {"poisoned_accuracy": "probe=clean (published)",
                                                   "poisoned_accuracy_poisoned_probe": "probe=poisoned"}}
    clean = setting.probe_accuracy(setting.clean_key, setting.clean)
    clean_pp = setting.poisoned_probe_accuracy(setting.clean_key, setting.clean, setting.pre.images, None)
    images, poison_name, n_poison, seconds = setting.pre.images, None, 0, 0.0
    poison_indices: torch.Tensor | None = None
    if cell.attack.id != NO_ATTACK:
        try:
            poison, poison_name, seconds = craft(setting, cell)
        except ThreatModelViolation as exc:
            return CellOutcome(metrics={}, details=details, status="invalid", message=str(exc))
        images = setting.pre.images.clone()
        images[poison.indices] = poison.images
        n_poison, poison_indices = len(poison.indices), poison.indices
        details["attack_diagnostics"] = poison.diagnostics
        details["poison_key"] = poison_name
    victim = victim_accuracies(setting, cell, images, poison_name)
    metrics: dict[str, float] = {
        "clean_accuracy": clean, "poisoned_accuracy": victim["probe_clean"],
        "accuracy_drop": clean - victim["probe_clean"], "n_poison": float(n_poison), "poison_seconds": seconds}
    if victim["probe_poisoned"] is not None and clean_pp is not None:
        metrics |= {"clean_accuracy_poisoned_probe": clean_pp,
                    "poisoned_accuracy_poisoned_probe": victim["probe_poisoned"],
                    "accuracy_drop_poisoned_probe": clean_pp - victim["probe_poisoned"]}
    if cell.defense.id != "none":
        defended = victim_accuracies(setting, cell, setting.pre.images, None)["probe_clean"]
        metrics |= {"defended_clean_accuracy": defended, "defense_cost": clean - defended}
    if defense_stage(cell) == "sanitise":
        kept = sanitised_indices(setting, cell, images, poison_name)
        metrics |= removed_shares(kept, len(images), poison_indices)
    if setting.victim.supervised_eval and setting.same_data:
        metrics |= supervised_metrics(setting, cell, images, poison_name)
    return CellOutcome(metrics=metrics, details=details)


@dataclass(frozen=True, kw_only=True)
class AvailabilityTrackSpec(PretrainTrackSpec):
    """``tracks.pretrain-availability``; ``epsilon``: the ℓ∞ bound of the perturbation."""

    epsilon: float = 8 / 255

    def problems(self) -> list[str]:
        problems = super().problems()
        check_range(problems, "epsilon", self.epsilon, 0.0, 1.0, low_open=True)
        return problems


@register_track
class PretrainAvailability(Track[AvailabilityTrackSpec]):
    """Unlabeled pre-training images perturbed within an ℓ∞ ball (this module's docstring)."""

    info = INFO
    Spec = AvailabilityTrackSpec

    def variants(self, spec: AvailabilityTrackSpec) -> list[dict[str, Any]]:
        return [{"input_epsilon": None, "epsilon": float(spec.epsilon)}]

    def run(self, cell: Cell, env: RunEnv) -> CellOutcome:
        return run_pretrain_availability_cell(cell, env)

    def add_work(self, work: Any, cell: Cell, sizes: Any) -> None:
        # the poison is keyed on the recipe fields the attack declares it reads (Attack.recipe_fields)
        add_pretrain_work(work, cell, sizes, injected=False, recipe_keyed=True)
