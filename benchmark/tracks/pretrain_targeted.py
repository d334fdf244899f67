"""The pre-training targeted track (Liu, Jia, Gong, "PoisonedEncoder: Poisoning the Unlabeled
Pre-training Data in Contrastive Learning", USENIX Security 2022): the attacker injects a few extra
unlabeled images into the pre-training set so that its target inputs are classified as its target class
by a downstream linear classifier built on the encoder; clean accuracy should stay unchanged.

Metrics: ``attack_success_rate`` (fraction of target inputs classified as the target class; also on
augmented views of them: ``attack_success_rate_augmented``), the same targets on the clean encoder
(``attack_success_rate_no_attack``), the gain ``asr_gain`` = ASR − no-attack ASR (what the board ranks), ``clean_accuracy`` (clean encoder) and ``poisoned_accuracy``
(poisoned encoder) on the clean test set, and ``clean_accuracy_change`` = poisoned − clean. The
``none`` attack measures the base rate: seeded random inputs of other classes vs a seeded random class.
Every rate is measured on the *eligible* targets only: those the clean victim does not already put in the
target class (a cell whose targets are all ineligible is ``invalid``).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from benchmark.api import TargetedPoison
from benchmark.augment import build_augmentation
from benchmark.pretrain import FeatureExtractor
from benchmark.probe import LinearHead
from benchmark.suite import NO_ATTACK, NO_DEFENSE, Cell
from benchmark.tracks import register_track
from benchmark.tracks._pretrain import PretrainSetting, diagnostic_tensors, diagnostics_of, victim_encoder
from benchmark.tracks.common import CellOutcome, RunEnv, data_key, plugin_call
from benchmark.utils import derive_seed, seed_everything
from benchmark.validation import ThreatModelViolation, poison_from_answer, validate_targeted
from benchmark.workers import CacheBridge

POISON_KIND = "poison-targeted"
BASE_RATE_TARGETS = 20


def craft(setting: PretrainSetting, cell: Cell) -> tuple[TargetedPoison, str, float]:
    """The validated injected images of this cell (cached), their cache key and the crafting time. The
    attacker is granted the clean unlabeled pre-training images (with labels, to pick references), the
    budget and the victim's SSL recipe, in its own plugin process."""
    spec, env = cell.spec, setting.env
    key = {"attack": {"id": cell.attack.id, "settings": cell.attack.settings}, "encoder": setting.encoder_spec,
           "pretrain": setting.scenario["pretrain"], "data": data_key(setting.data), "seed": setting.seed,
           "budget": spec["budget"]}
    name = env.cache.key(POISON_KIND, key)
    budget = math.floor(spec["budget"] * len(setting.pre) + 1e-9)
    shape = tuple(setting.pre.images.shape[1:])
    seed = derive_seed(setting.seed, cell.attack.id, cell.attack.settings, spec["budget"])
    context = {"images": setting.pre.images, "labels": setting.pre.labels, "num_classes": setting.pre.num_classes,
               "epsilon": 1.0, "poison_fraction": float(spec["budget"]), "budget": budget, "recipe": setting.encoder_spec}

    def validate(poison: TargetedPoison) -> None:
        validate_targeted(poison, budget=budget, image_shape=shape, num_classes=setting.num_classes)

    def build() -> dict[str, torch.Tensor]:  # an invalid poison raises: nothing is cached
        answer = plugin_call(env, "craft", "attack", cell.attack, {"track": cell.track, "context": context}, rng_seed=seed,
                             bridge=CacheBridge(env.cache, f"attack-{cell.attack.id}", key, checkpoint_key=name))
        poison = poison_from_answer(answer, TargetedPoison)
        validate(poison)
        return {"images": poison.images.float(), "target_images": poison.target_images.float(),
                "target_class": torch.tensor(int(poison.target_class)), "seconds": torch.tensor(float(answer.get("seconds", 0.0))),
                **diagnostic_tensors(poison.diagnostics)}

    t = env.cache.get_or_build(POISON_KIND, key, build)
    poison = TargetedPoison(images=t["images"], target_images=t["target_images"], target_class=int(t["target_class"]),
                            diagnostics=diagnostics_of(t))
    validate(poison)
    return poison, name, float(t["seconds"])


def eligible_targets(setting: PretrainSetting, targets: torch.Tensor, target_class: int) -> torch.Tensor:
    """The targets the clean victim (clean encoder + its probe) does not already put in ``target_class``:
    success on the others would be no attack's doing, so ASR is measured on these only."""
    head = setting.head(setting.clean_key, setting.clean)
    with torch.no_grad():
        predicted = head.predict(setting.clean(targets.to(setting.env.device))).cpu()
    return targets[predicted != target_class]


def base_rate_targets(setting: PretrainSetting) -> tuple[torch.Tensor, int]:
    """For the ``none`` attack: seeded random pre-training images of classes other than a random class."""
    gen = torch.Generator().manual_seed(derive_seed(setting.seed, "base-rate-targets"))
    target_class = int(torch.randint(0, setting.num_classes, (1,), generator=gen))
    others = torch.nonzero(setting.pre.labels != target_class).flatten()
    chosen = others[torch.randperm(len(others), generator=gen)[:BASE_RATE_TARGETS]]
    return setting.pre.images[chosen], target_class


def success_rates(setting: PretrainSetting, head: LinearHead, extractor: FeatureExtractor, targets: torch.Tensor,
                  target_class: int) -> tuple[float, float]:
    """ASR on the target inputs and on ``victim.asr_augmentations`` augmented views of each (seeded)."""
    device = setting.env.device
    with torch.no_grad():
        asr = float((head.predict(extractor(targets.to(device))) == target_class).float().mean())
        views = int(setting.victim.get("asr_augmentations", 10))
        augment = build_augmentation(setting.recipe.augment_config(), image_size=setting.size,
                                     channels=setting.channels).to(device)
        seed_everything(derive_seed(setting.seed, "asr-views"))
        batch = targets.to(device).repeat(views, 1, 1, 1)
        aug = float((head.predict(extractor(augment(batch))) == target_class).float().mean())
    return asr, aug


@register_track("pretrain-targeted")
def run_pretrain_targeted_cell(cell: Cell, env: RunEnv) -> CellOutcome:
    setting = PretrainSetting.shared(cell, env)
    details: dict[str, Any] = {"head_l2": setting.l2, "n_pretrain": len(setting.pre), "n_test": len(setting.test)}
    clean = setting.probe_accuracy(setting.clean_key, setting.clean)
    images, poison_name, n_poison, seconds = setting.pre.images, None, 0, 0.0
    if cell.attack.id == NO_ATTACK:
        targets, target_class = base_rate_targets(setting)
    else:
        try:
            poison, poison_name, seconds = craft(setting, cell)
        except ThreatModelViolation as exc:
            return CellOutcome(metrics={}, details=details, status="invalid", message=str(exc))
        targets, target_class = poison.target_images, poison.target_class
        images = torch.cat([setting.pre.images, poison.images])
        n_poison = len(poison.images)
        details["attack_diagnostics"] = poison.diagnostics
    eligible = eligible_targets(setting, targets, target_class)
    details |= {"target_class": target_class, "n_targets": len(targets), "n_targets_eligible": len(eligible)}
    if len(eligible) == 0:
        return CellOutcome(metrics={}, details=details, status="invalid",
                           message=f"every one of the {len(targets)} targets is already classified as the target class "
                                   f"{target_class} by the clean victim: there is nothing for the attack to achieve")
    key, extractor = victim_encoder(setting, cell, images, poison_name)
    poisoned = setting.probe_accuracy(key, extractor)
    asr, asr_aug = success_rates(setting, setting.head(key, extractor), extractor, eligible, target_class)
    base, base_aug = success_rates(setting, setting.head(setting.clean_key, setting.clean), setting.clean,
                                   eligible, target_class)
    metrics = {"clean_accuracy": clean, "poisoned_accuracy": poisoned, "clean_accuracy_change": poisoned - clean,
               "accuracy_drop": clean - poisoned,
               "attack_success_rate": asr, "attack_success_rate_augmented": asr_aug,
               "attack_success_rate_no_attack": base, "attack_success_rate_augmented_no_attack": base_aug,
               "asr_gain": asr - base, "asr_gain_augmented": asr_aug - base_aug,
               "n_poison": float(n_poison), "poison_seconds": seconds}
    if cell.defense.id != NO_DEFENSE:
        dkey, defended = victim_encoder(setting, cell, setting.pre.images, None)
        defended_clean = setting.probe_accuracy(dkey, defended)
        metrics |= {"defended_clean_accuracy": defended_clean, "defense_cost": clean - defended_clean}
    return CellOutcome(metrics=metrics, details=details)
