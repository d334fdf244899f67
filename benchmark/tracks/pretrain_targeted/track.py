"""The pre-training targeted track (Liu, Jia, Gong, "PoisonedEncoder: Poisoning the Unlabeled
Pre-training Data in Contrastive Learning", USENIX Security 2022): the attacker injects a few extra
unlabeled images into the pre-training set so that its target inputs are classified as its target class
by a downstream linear classifier built on the encoder; clean accuracy should stay unchanged.

Targets come from a *target pool* the track hands the attacker: up to ``TARGET_POOL_SIZE`` clean labelled
images of the downstream dataset's train split that are neither pre-training images nor downstream
training images (the probe's training set), so a target is never a training point of the probe; the
harness checks that every returned target is an exact copy of a pool image. No such images left (the
subsets cover the whole split) is an error. Injected images may be canvases larger than the dataset's
images (each side up to twice it: PoisonedEncoder stitches [target | reference] at full size); the victim
pre-trains on the clean images plus the canvases, each view cropped from the whole image and resized to
the dataset's size (:func:`benchmark.pretrain.train_ssl`, ``extra_images``), and its feature
standardisation is fitted on the clean images.

Metrics: ``attack_success_rate`` (fraction of target inputs classified as the target class; also on
augmented views of them: ``attack_success_rate_augmented``), the same targets on the clean encoder
(``attack_success_rate_no_attack``), the gain ``asr_gain`` = ASR − no-attack ASR (what the board ranks);
``target_probability`` (mean softmax probability of the target class on the targets, poisoned victim's
probe), ``target_probability_no_attack`` (clean encoder's probe, same targets) and their difference
``target_probability_gain``: ASR moves in steps of 1/targets and rarely moves at CPU scale, the
probability shows the pull. A well-fitted probe puts ≈ 0.001 on a wrong class, so the
probability saturates: ``target_margin`` (target-class logit minus the largest other logit; ASR counts
margins > 0), its ``_no_attack`` value and ``target_margin_gain`` (logits) measure the pull before any
target crosses, and ``targets_pulled`` is the fraction of targets whose margin rose (the decoy control
gives its null); ``clean_accuracy`` (clean encoder) and ``poisoned_accuracy``
(poisoned encoder) on the clean test set, and ``clean_accuracy_change`` = poisoned − clean. The ``none``
attack measures the base rate: seeded random pool images of other classes vs a seeded random class.
Every rate is measured on the *eligible* targets only: those whose label is not the target class and that
the clean victim does not already put in the target class (a cell whose targets are all ineligible is
``invalid``).
"""

from __future__ import annotations

from typing import Any

import torch

from benchmark.augment import build_augmentation, place_augmentation
from benchmark.data import ImageDataset, load_dataset, stratified_subset
from benchmark.plugin_base import poison_count
from benchmark.pretrain import FeatureExtractor
from benchmark.probe import LinearHead
from benchmark.tracks._pretrain import (
    PretrainSetting,
    PretrainTrackSpec,
    diagnostic_tensors,
    diagnostics_of,
    victim_encoder,
)
from benchmark.tracks._pretrain_work import add_pretrain_work
from benchmark.tracks.base import NO_ATTACK, NO_DEFENSE, Cell, DataSpec, MethodEntry, ScenarioSpec, Track, register_track
from benchmark.tracks.common import CellOutcome, RunEnv, data_key, match_channels, plugin_call
from benchmark.tracks.pretrain_targeted.info import INFO
from benchmark.tracks.pretrain_targeted.interface import TargetedPoison, target_classes_of
from benchmark.tracks.pretrain_targeted.validate import pool_indices, validate_targeted
from benchmark.utils import derive_seed, seed_everything
from benchmark.validation import ThreatModelViolation, poison_from_answer
from benchmark.workers import CacheBridge

POISON_KIND = "poison-targeted"
BASE_RATE_TARGETS = 20
TARGET_POOL_SIZE = 512  # at most this many held-out labelled images are handed over as the target pool


def _subset_indices(labels: torch.Tensor, num_classes: int, n: int | None) -> set[int]:
    """The indices :func:`benchmark.tracks.common.load_split` keeps of a train split with these labels
    (its stratified subset of ``n`` with seed 0; all of them when ``n`` is None)."""
    if n is None:
        return set(range(len(labels)))
    index = ImageDataset("index", "train", torch.arange(len(labels), dtype=torch.float32).reshape(-1, 1, 1, 1),
                         labels, num_classes)
    return set(stratified_subset(index, int(n), seed=0).images.flatten().long().tolist())


def build_target_pool(scenario: ScenarioSpec, data: DataSpec, *, channels: int, size: int,
                      seed: int) -> ImageDataset:
    """Up to ``TARGET_POOL_SIZE`` (seeded) images of the downstream dataset's train split that are in
    neither the downstream training subset nor (same dataset) the pre-training subset, at the setting's
    channels and size. Raises ``ValueError`` when the subsets leave none."""
    name = scenario.downstream
    full = load_dataset(name, "train", root=data.root, download=data.download, image_size=size)
    used = _subset_indices(full.labels, full.num_classes, data.downstream_subset)
    if scenario.pretrain == name:
        used |= _subset_indices(full.labels, full.num_classes, data.pretrain_subset)
    free = torch.tensor(sorted(set(range(len(full))) - used), dtype=torch.int64)
    if len(free) == 0:
        raise ValueError(
            f"pretrain-targeted needs held-out target inputs, but the pre-training subset "
            f"({data.pretrain_subset}) and the downstream training subset ({data.downstream_subset}) "
            f"of {name}/train leave none of its {len(full)} images: set data.pretrain_subset / "
            f"data.downstream_subset below {len(full)}")
    gen = torch.Generator().manual_seed(derive_seed(seed, "target-pool"))
    chosen = free[torch.randperm(len(free), generator=gen)[:TARGET_POOL_SIZE]].sort().values
    images = match_channels(full.images[chosen].contiguous(), channels)
    return ImageDataset(full.name, "target-pool", images.contiguous(), full.labels[chosen].clone(), full.num_classes)


def target_pool(setting: PretrainSetting) -> ImageDataset:
    """The setting's target pool (built once per setting, shared by its cells)."""
    key = {"track": "pretrain-targeted-pool", "scenario": setting.scenario.to_dict(), "data": data_key(setting.data),
           "channels": setting.channels, "size": setting.size, "seed": setting.seed}
    return setting.env.shared(key, lambda: build_target_pool(setting.scenario, setting.data, channels=setting.channels,
                                                             size=setting.size, seed=setting.seed))


def attack_stream_seed(seed: int, attack_id: str, budget: float) -> int:
    """The seed of the attacker's generator in a cell. It leaves the attack's settings out: the rows of one
    attack that differ only in settings (an attack and its control) draw the same random stream, so a
    control that says "the same targets" can keep its word (common random numbers)."""
    return derive_seed(seed, attack_id, budget)


def craft(setting: PretrainSetting, cell: Cell) -> tuple[TargetedPoison, str, float]:
    """The validated injected images of this cell (cached), their cache key and the crafting time. The
    attacker is granted the clean unlabeled pre-training images (with labels, to pick references), the
    target pool (held-out labelled images to pick targets and references from), the budget and the
    victim's SSL recipe, in its own plugin process."""
    env = setting.env
    pool = target_pool(setting)
    key = {"attack": {"id": cell.attack.id, "settings": cell.attack.settings}, "encoder": setting.encoder_spec,
           "pretrain": setting.scenario.pretrain, "data": data_key(setting.data), "seed": setting.seed,
           "budget": cell.budget, "target_pool": {"downstream": setting.scenario.downstream,
                                                     "size": TARGET_POOL_SIZE}}
    name = env.cache.key(POISON_KIND, key)
    budget = poison_count(cell.budget, len(setting.pre))
    shape = tuple(setting.pre.images.shape[1:])
    seed = attack_stream_seed(setting.seed, cell.attack.id, cell.budget)
    context = {"images": setting.pre.images, "labels": setting.pre.labels, "num_classes": setting.pre.num_classes,
               "epsilon": 1.0, "poison_fraction": cell.budget, "budget": budget, "recipe": setting.encoder_spec,
               "target_pool_images": pool.images, "target_pool_labels": pool.labels}

    def validate(poison: TargetedPoison) -> None:
        validate_targeted(poison, budget=budget, image_shape=shape, num_classes=setting.num_classes,
                          target_pool=pool.images)

    def build() -> dict[str, torch.Tensor]:  # an invalid poison raises: nothing is cached
        answer = plugin_call(env, "craft", "attack", cell.attack, {"track": cell.track, "context": context}, rng_seed=seed,
                             bridge=CacheBridge(env.cache, f"attack-{cell.attack.id}", key, checkpoint_key=name))
        poison = poison_from_answer(answer, TargetedPoison)
        validate(poison)
        return {"images": poison.images.float(), "target_images": poison.target_images.float(),
                "target_class": target_classes_of(poison), "seconds": torch.tensor(float(answer.get("seconds", 0.0))),
                **diagnostic_tensors(poison.diagnostics)}

    t = env.cache.get_or_build(POISON_KIND, key, build)
    poison = TargetedPoison(images=t["images"], target_images=t["target_images"], target_class=t["target_class"],
                            diagnostics=diagnostics_of(t))
    validate(poison)
    return poison, name, float(t["seconds"])


def target_labels(setting: PretrainSetting, targets: torch.Tensor) -> torch.Tensor:
    """The pool labels of validated targets (each an exact copy of a pool image)."""
    pool = target_pool(setting)
    return pool.labels[pool_indices(targets, pool.images)]


def eligible_targets(setting: PretrainSetting, targets: torch.Tensor,
                     classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The targets (and their target classes) whose label is not their target class and that the clean
    victim (clean encoder + its probe) does not already put in it: success on the others would be no
    attack's doing, so every rate is measured on these only."""
    head = setting.head(setting.clean_key, setting.clean)
    with torch.no_grad():
        predicted = head.predict(setting.clean(targets.to(setting.env.device))).cpu()
    keep = (predicted != classes) & (target_labels(setting, targets) != classes)
    return targets[keep], classes[keep]


def base_rate_targets(setting: PretrainSetting) -> tuple[torch.Tensor, int]:
    """For the ``none`` attack: seeded random target-pool images of classes other than a random class."""
    pool = target_pool(setting)
    gen = torch.Generator().manual_seed(derive_seed(setting.seed, "base-rate-targets"))
    target_class = int(torch.randint(0, setting.num_classes, (1,), generator=gen))
    others = torch.nonzero(pool.labels != target_class).flatten()
    chosen = others[torch.randperm(len(others), generator=gen)[:BASE_RATE_TARGETS]].sort().values
    return pool.images[chosen].clone(), target_class


def target_scores(head: LinearHead, extractor: FeatureExtractor, targets: torch.Tensor, classes: torch.Tensor,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per target: the softmax probability of its target class and its margin (the target class's logit
    minus the largest other logit; > 0 exactly when the target is classified as its target class) under
    ``head`` on ``extractor``."""
    with torch.no_grad():
        logits = head.logits(extractor(targets.to(device))).float().cpu()
    column = classes.reshape(-1, 1)
    mine = logits.gather(1, column).flatten()
    others = logits.scatter(1, column, float("-inf")).amax(dim=1)
    return torch.softmax(logits, dim=1).gather(1, column).flatten(), mine - others


def pull_metrics(setting: PretrainSetting, head: LinearHead, extractor: FeatureExtractor, clean_head: LinearHead,
                 targets: torch.Tensor, classes: torch.Tensor) -> dict[str, float]:
    """How far the poisoned victim moves each target towards its class against the clean victim on the same
    targets: probability and margin (means and gains) and the fraction of targets whose margin rose."""
    device = setting.env.device
    prob, margin = target_scores(head, extractor, targets, classes, device)
    base_prob, base_margin = target_scores(clean_head, setting.clean, targets, classes, device)
    return {"target_probability": float(prob.mean()), "target_probability_no_attack": float(base_prob.mean()),
            "target_probability_gain": float((prob - base_prob).mean()),
            "target_margin": float(margin.mean()), "target_margin_no_attack": float(base_margin.mean()),
            "target_margin_gain": float((margin - base_margin).mean()),
            "targets_pulled": float((margin > base_margin).float().mean())}


def success_rates(setting: PretrainSetting, head: LinearHead, extractor: FeatureExtractor, targets: torch.Tensor,
                  classes: torch.Tensor) -> tuple[float, float]:
    """ASR (each target in its class) on the target inputs and on ``victim.asr_augmentations`` augmented
    views of each (seeded)."""
    device = setting.env.device
    with torch.no_grad():
        asr = float((head.predict(extractor(targets.to(device))).cpu() == classes).float().mean())
        views = setting.victim.asr_augmentations
        augment = place_augmentation(build_augmentation(setting.recipe.augment_config(), image_size=setting.size,
                                                        channels=setting.channels), device)
        seed_everything(derive_seed(setting.seed, "asr-views"))
        batch = targets.to(device).repeat(views, 1, 1, 1)
        aug = float((head.predict(extractor(augment(batch))).cpu() == classes.repeat(views)).float().mean())
    return asr, aug


def run_pretrain_targeted_cell(cell: Cell, env: RunEnv) -> CellOutcome:
    setting = PretrainSetting.shared(cell, env)
    pool = target_pool(setting)
    details: dict[str, Any] = {"head_l2": setting.l2, "n_pretrain": len(setting.pre), "n_test": len(setting.test),
                               "n_target_pool": len(pool)}
    clean = setting.probe_accuracy(setting.clean_key, setting.clean)
    extra, poison_name, n_poison, seconds = None, None, 0, 0.0
    if cell.attack.id == NO_ATTACK:
        targets, target_class = base_rate_targets(setting)
        classes = torch.full((len(targets),), target_class, dtype=torch.int64)
    else:
        try:
            poison, poison_name, seconds = craft(setting, cell)
        except ThreatModelViolation as exc:
            return CellOutcome(metrics={}, details=details, status="invalid", message=str(exc))
        targets, classes = poison.target_images, target_classes_of(poison)
        extra = poison.images if len(poison.images) else None
        n_poison = len(poison.images)
        details["attack_diagnostics"] = poison.diagnostics
        details["poison_shape"] = list(poison.images.shape[1:])
    eligible, eligible_classes = eligible_targets(setting, targets, classes)
    distinct = sorted(set(classes.tolist()))
    details |= {"target_class": distinct[0] if len(distinct) == 1 else distinct, "n_targets": len(targets),
                "n_targets_eligible": len(eligible)}
    if len(eligible) == 0:
        return CellOutcome(metrics={}, details=details, status="invalid",
                           message=f"every one of the {len(targets)} targets is already classified as its target class "
                                   f"({', '.join(map(str, distinct))}) by the clean victim (or is of that class): there "
                                   f"is nothing for the attack to achieve")
    key, extractor = victim_encoder(setting, cell, setting.pre.images, poison_name, extra)
    poisoned = setting.probe_accuracy(key, extractor)
    head, clean_head = setting.head(key, extractor), setting.head(setting.clean_key, setting.clean)
    asr, asr_aug = success_rates(setting, head, extractor, eligible, eligible_classes)
    base, base_aug = success_rates(setting, clean_head, setting.clean, eligible, eligible_classes)
    metrics = {"clean_accuracy": clean, "poisoned_accuracy": poisoned, "clean_accuracy_change": poisoned - clean,
               "accuracy_drop": clean - poisoned,
               "attack_success_rate": asr, "attack_success_rate_augmented": asr_aug,
               "attack_success_rate_no_attack": base, "attack_success_rate_augmented_no_attack": base_aug,
               "asr_gain": asr - base, "asr_gain_augmented": asr_aug - base_aug,
               **pull_metrics(setting, head, extractor, clean_head, eligible, eligible_classes),
               "n_poison": float(n_poison), "poison_seconds": seconds}
    if cell.defense.id != NO_DEFENSE:
        dkey, defended = victim_encoder(setting, cell, setting.pre.images, None)
        defended_clean = setting.probe_accuracy(dkey, defended)
        metrics |= {"defended_clean_accuracy": defended_clean, "defense_cost": clean - defended_clean}
    return CellOutcome(metrics=metrics, details=details)


@register_track
class PretrainTargeted(Track[PretrainTrackSpec]):
    """Images injected into pre-training so that chosen inputs get a chosen class (this module's docstring)."""

    info = INFO
    Spec = PretrainTrackSpec

    def defense_reason(self, defense: MethodEntry, stage: str | None) -> str | None:
        if stage == "sanitise":
            return (f"{defense.id} sanitises training data, and the targeted track's injected images are canvases of "
                    "another shape than the clean ones: a sanitiser could drop them by their shape alone")
        return super().defense_reason(defense, stage)

    def run(self, cell: Cell, env: RunEnv) -> CellOutcome:
        return run_pretrain_targeted_cell(cell, env)

    def add_work(self, work: Any, cell: Cell, sizes: Any) -> None:
        # the injected images join the victim's pre-training set; no supervised cross-evaluation here
        add_pretrain_work(work, cell, sizes, injected=True, recipe_keyed=False)
