"""PoisonedEncoder (attacks/poisoned_encoder.py) and what the targeted track does for it: full-size
canvases whose crops are often single-part, held-out targets from the track's target pool, the canvas
threat model, the engine's pre-training on clean images plus canvases, the decoy control."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from benchmark.api import ATTACKS, DirectoryCheckpoints, PretrainAttackContext, TargetedPoison, target_classes_of
from benchmark.data import load_dataset
from benchmark.plugins import load_plugins
from benchmark.pretrain import SSLRecipe, SSLTrainingHooks, train_ssl
from benchmark.tracks.pretrain_targeted.validate import validate_targeted
from benchmark.validation import ThreatModelViolation

load_plugins()

SIZE = 16
AUGMENT = {"crop_scale_min": 0.3, "flip": False, "rotation_degrees": 10, "grayscale_prob": 0.0}


def recipe(**kwargs: Any) -> SSLRecipe:
    settings = {"method": "simclr", "backbone": "cnn_micro", "epochs": 1, "batch_size": 32, "lr": 0.002,
                "augment": AUGMENT, "method_settings": {"proj_hidden": 32, "proj_dim": 16}}
    return SSLRecipe(**{**settings, **kwargs})


def context(tmp_path: Path, pool_images: torch.Tensor | None = None, pool_labels: torch.Tensor | None = None,
            budget: int = 12, n: int = 200, seed: int = 0) -> PretrainAttackContext:
    ds = load_dataset("mnist5k", "train", image_size=SIZE, subset=n, subset_seed=0)
    return PretrainAttackContext(
        images=ds.images, labels=ds.labels, num_classes=ds.num_classes, epsilon=1.0, poison_fraction=budget / n,
        budget=budget, ssl=recipe(), generator=torch.Generator().manual_seed(seed), device=torch.device("cpu"),
        checkpoints=DirectoryCheckpoints(tmp_path / "ckpt"), cached=lambda kind, config, build: build(),
        target_pool_images=pool_images, target_pool_labels=pool_labels)


def attack(**settings: Any) -> Any:
    cls = ATTACKS.get("poisoned_encoder")
    return cls(cls.Config(**settings))


def held_out_pool(n: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    """mnist5k test images as a stand-in pool (disjoint from the train split the context uses)."""
    ds = load_dataset("mnist5k", "test", image_size=SIZE)
    pick = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:n].sort().values
    return ds.images[pick].clone(), ds.labels[pick].clone()


def squeezed_indicator(size: int) -> torch.Tensor:
    """The earlier layout: target and reference each squeezed into one half of a size × size image."""
    target = torch.zeros(1, size, size)
    target[:, :, : size // 2] = 1
    return torch.cat([target, 1 - target])


def row_of(image: torch.Tensor, pool: torch.Tensor) -> int:
    match = (pool == image).flatten(1).all(1).nonzero().flatten()
    return int(match[0]) if len(match) else -1


# ------------------------------------------------------------------------------------------ (a) layout
def test_full_size_canvases_give_far_more_single_part_views_than_squeezed_halves(tmp_path: Path) -> None:
    """REFERENCE §6: squeezing both parts into one image leaves ≈ 0.4 % of positive pairs with one view
    mostly target and the other mostly reference; keeping each part at its size on a larger canvas gives
    ≈ 15 % under the same crops (scale 0.3–1). Measured on the attack's own poisons: the pool's targets
    are all-ones images and its references (the target class) all-zeros, so each crafted canvas is its own
    target indicator."""
    from attacks.poisoned_encoder import single_part_view_fraction

    _, labels = held_out_pool(200)
    target_class = 3
    images = (labels != target_class).float().reshape(-1, 1, 1, 1).expand(-1, 1, SIZE, SIZE).contiguous()
    aug = recipe().augment_config()
    for layout in ("horizontal", "vertical"):
        poison = attack(n_targets=4, target_class=target_class, layout=layout).craft_targeted(
            context(tmp_path, images, labels))
        assert len(poison.images) == 12
        canvas = poison.images[0]
        assert canvas.shape == ((1, 2 * SIZE, SIZE) if layout == "vertical" else (1, SIZE, 2 * SIZE))
        assert 0.45 < float(canvas.mean()) < 0.55  # half target, half reference, at full size
        new = single_part_view_fraction(torch.cat([canvas, 1 - canvas]), aug, image_size=SIZE, pairs=2000, seed=1)
        reported = poison.diagnostics["single_part_view_fraction"]
        assert new > 0.08 and reported > 0.08, (layout, new, reported)
        old = single_part_view_fraction(squeezed_indicator(SIZE), aug, image_size=SIZE, pairs=2000, seed=1)
        assert old < 0.02 and new > 5 * old, (layout, old, new)


# ------------------------------------------------------------------------------------------ (b) pool
def test_the_target_pool_is_disjoint_from_the_pretraining_and_probe_training_sets(tmp_path: Path) -> None:
    from benchmark.tracks.common import load_split
    from benchmark.tracks.pretrain_targeted.track import TARGET_POOL_SIZE, build_target_pool
    from benchmark.tracks.specs import DataSpec, ScenarioSpec

    scenario = ScenarioSpec(name="finetune", pretrain="mnist5k", downstream="mnist5k")
    data = DataSpec(image_size=SIZE, pretrain_subset=300, downstream_subset=200)
    pool = build_target_pool(scenario, data, channels=1, size=SIZE, seed=0)
    pre = load_split("mnist5k", "train", data, subset=data.pretrain_subset)
    train = load_split("mnist5k", "train", data, subset=data.downstream_subset, channels=1, image_size=SIZE)
    assert 0 < len(pool) <= TARGET_POOL_SIZE and pool.images.shape[1:] == (1, SIZE, SIZE)
    used = {r.numpy().tobytes() for r in torch.cat([pre.images, train.images]).flatten(1)}
    assert not any(r.numpy().tobytes() in used for r in pool.images.flatten(1))
    # the check above can fail: the pool is cut from the very split (and resolution) the subsets come from
    full = load_dataset("mnist5k", "train", image_size=SIZE)
    everything = {r.numpy().tobytes() for r in full.images.flatten(1)}
    assert all(r.numpy().tobytes() in everything for r in pool.images.flatten(1))
    assert all(r.numpy().tobytes() in everything for r in pre.images.flatten(1))

    # the attack's targets and references come from the pool it is handed
    ctx = context(tmp_path, pool.images, pool.labels, n=300)
    poison = attack(n_targets=5).craft_targeted(ctx)
    for t in poison.target_images:
        assert row_of(t, pool.images) >= 0 and t.numpy().tobytes() not in used
    validate_targeted(poison, budget=ctx.budget, image_shape=(1, SIZE, SIZE), num_classes=10, target_pool=pool.images)

    # subsets that cover the whole split leave no held-out target: a clear error
    with pytest.raises(ValueError, match="held-out target inputs"):
        build_target_pool(scenario, DataSpec(image_size=SIZE, downstream_subset=200),
                          channels=1, size=SIZE, seed=0)


# ------------------------------------------------------------------------------------------ (c) validation
def test_validate_targeted_accepts_canvases_and_pool_targets_only() -> None:
    pool, _ = held_out_pool(20)
    targets = pool[:3].clone()
    shape = (1, SIZE, SIZE)

    def check(images: torch.Tensor, target_images: torch.Tensor = targets, target_pool: Any = pool) -> None:
        validate_targeted(TargetedPoison(images=images, target_images=target_images, target_class=1),
                          budget=4, image_shape=shape, num_classes=10, target_pool=target_pool)

    for canvas in ((1, SIZE, SIZE), (1, SIZE, 2 * SIZE), (1, 2 * SIZE, SIZE), (1, 24, 20), (1, 2 * SIZE, 2 * SIZE)):
        check(torch.rand(4, *canvas))
    for bad in ((1, SIZE, 3 * SIZE), (1, 3 * SIZE, SIZE), (1, 3 * SIZE, 3 * SIZE), (3, SIZE, 2 * SIZE), (1, 8, 2 * SIZE)):
        with pytest.raises(ThreatModelViolation, match="images: shape"):
            check(torch.rand(4, *bad))
    with pytest.raises(ThreatModelViolation, match="outside"):
        check(torch.rand(4, 1, SIZE, 2 * SIZE) + 1)
    with pytest.raises(ThreatModelViolation, match="NaN"):
        check(torch.full((4, 1, SIZE, 2 * SIZE), float("nan")))
    with pytest.raises(ThreatModelViolation, match="budget"):
        check(torch.rand(5, 1, SIZE, 2 * SIZE))
    # a target that is not a pool image (a pre-training image, or a pool image changed by one pixel value)
    outsider = load_dataset("mnist5k", "train", image_size=SIZE, subset=10, subset_seed=0).images[:1]
    nudged = targets.clone()
    nudged[1, 0, 5, 5] = (nudged[1, 0, 5, 5] + 0.01).clamp(0, 1) if nudged[1, 0, 5, 5] < 0.5 else nudged[1, 0, 5, 5] - 0.01
    for bad_targets in (torch.cat([targets, outsider]), nudged):
        with pytest.raises(ThreatModelViolation, match="not images of the target pool"):
            check(torch.rand(4, 1, SIZE, 2 * SIZE), bad_targets)
    # targets keep the dataset's shape (a canvas is not a target)
    with pytest.raises(ThreatModelViolation, match="target_images: shape"):
        check(torch.rand(4, 1, SIZE, 2 * SIZE), torch.rand(2, 1, SIZE, 2 * SIZE))


# ------------------------------------------------------------------------------------------ (d) engine
def test_train_ssl_trains_on_clean_images_plus_canvases_and_transforms_both() -> None:
    ds = load_dataset("mnist5k", "train", image_size=SIZE, subset=48, subset_seed=0)
    canvases = torch.cat([ds.images[:16], ds.images[16:32]], dim=3)  # (16, 1, 16, 32)
    seen: list[tuple[int, ...]] = []

    def transform(x: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(x.shape[1:]))
        return x

    views: list[int] = []

    def loss_fn(model: Any, clean: torch.Tensor, v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
        assert v1.shape[1:] == (1, SIZE, SIZE) and v1.shape == v2.shape and clean.shape[1:] == (1, SIZE, SIZE)
        views.append(len(v1) - len(clean))
        return model.loss(v1, v2)

    torch.manual_seed(0)
    before = {k: v.clone() for k, v in recipe().build_model(1).state_dict().items()}
    model = train_ssl(recipe(epochs=2), ds.images, seed=0, device=torch.device("cpu"), extra_images=canvases,
                      hooks=SSLTrainingHooks(batch_transform=transform, loss_fn=loss_fn))
    assert len(views) == 2 * (64 // 32)  # steps over the union of 48 images and 16 canvases
    assert sum(views) > 0  # canvases reached the views
    assert (1, SIZE, 2 * SIZE) in seen and (1, SIZE, SIZE) in seen  # the per-batch transform saw both groups
    after = model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if after[k].is_floating_point())
    with pytest.raises(ValueError, match="extra_images"):
        train_ssl(recipe(), ds.images, seed=0, device=torch.device("cpu"), extra_images=torch.rand(4, 3, SIZE, 2 * SIZE))


# ------------------------------------------------------------------------------------------ (e) decoy
def test_the_decoy_control_draws_references_from_another_class(tmp_path: Path) -> None:
    pool, labels = held_out_pool(300)
    for reference in ("target_class", "decoy"):
        poison = attack(n_targets=4, n_references=3, target_class=2, reference=reference).craft_targeted(
            context(tmp_path, pool, labels))
        assert poison.target_class == 2  # the goal stays the target class
        ref_class = int(poison.diagnostics["reference_class"])
        assert (ref_class == 2) == (reference == "target_class")
        targets = {row_of(t, pool) for t in poison.target_images}
        assert -1 not in targets and all(int(labels[t]) not in (2, ref_class) for t in targets)
        for canvas in poison.images:
            left, right = row_of(canvas[:, :, :SIZE], pool), row_of(canvas[:, :, SIZE:], pool)
            assert left >= 0 and right >= 0
            target, ref = (left, right) if left in targets else (right, left)
            assert target in targets and int(labels[ref]) == ref_class


def test_the_decoy_control_stitches_the_attacks_own_targets(tmp_path: Path) -> None:
    """Attack and control crafted from generators seeded alike (as the track seeds them: settings left out)
    use the same targets, target classes and canvas positions; only the reference part differs, and its
    class is neither a target class nor the class of one of that goal's targets."""
    from benchmark.tracks.pretrain_targeted.track import attack_stream_seed

    assert attack_stream_seed(1, "poisoned_encoder", 0.1) == attack_stream_seed(1, "poisoned_encoder", 0.1)
    assert attack_stream_seed(1, "poisoned_encoder", 0.1) != attack_stream_seed(2, "poisoned_encoder", 0.1)
    pool, labels = held_out_pool(300)
    for seed in range(4):
        settings = {"n_targets": 10, "n_target_classes": 2, "n_references": 3}
        real = attack(**settings).craft_targeted(context(tmp_path / f"a{seed}", pool, labels, budget=20, seed=seed))
        decoy = attack(**settings, reference="decoy").craft_targeted(
            context(tmp_path / f"d{seed}", pool, labels, budget=20, seed=seed))
        assert torch.equal(real.target_images, decoy.target_images)
        assert torch.equal(target_classes_of(real), target_classes_of(decoy))
        classes, n = target_classes_of(real), len(real.target_images)
        for i, (a, b) in enumerate(zip(real.images, decoy.images)):  # poison i stitches target i mod n
            target, goal = real.target_images[i % n], int(classes[i % n])
            mine, other = (slice(0, SIZE), slice(SIZE, None))
            if not torch.equal(a[:, :, mine], target):
                mine, other = other, mine
            assert torch.equal(a[:, :, mine], target) and torch.equal(b[:, :, mine], target)
            assert int(labels[row_of(a[:, :, other], pool)]) == goal
            decoy_class = int(labels[row_of(b[:, :, other], pool)])
            of_goal = {int(labels[row_of(t, pool)]) for t, c in zip(real.target_images, classes) if int(c) == goal}
            assert decoy_class not in set(classes.tolist()) | of_goal


def test_classes_absent_from_the_pool_are_never_drawn(tmp_path: Path) -> None:
    pool_images, pool_labels = held_out_pool()
    keep = pool_labels <= 2  # a subset in which only three of the ten classes have images
    images, labels = pool_images[keep], pool_labels[keep]
    for seed in range(5):
        ctx = context(tmp_path / str(seed), images, labels)
        ctx.generator.manual_seed(seed)
        poison = attack(n_targets=2, n_references=2, reference="decoy").craft_targeted(ctx)
        assert poison.target_class in (0, 1, 2) and int(poison.diagnostics["reference_class"]) in (0, 1, 2)
    only_one = pool_labels == 3
    with pytest.raises(ValueError, match="no target input of a class outside"):
        attack(reference="decoy").craft_targeted(context(tmp_path / "one", pool_images[only_one], pool_labels[only_one]))
    two = (pool_labels == 3) | (pool_labels == 4)  # no third class: the decoy falls back to the targets' own
    poison = attack(reference="decoy", n_targets=2, target_class=3).craft_targeted(
        context(tmp_path / "two", pool_images[two], pool_labels[two]))
    assert int(poison.diagnostics["reference_class"]) == 4


# ------------------------------------------------------------------------------------------ target classes
def test_targets_split_over_several_classes_each_with_its_own_references(tmp_path: Path) -> None:
    """n_target_classes = k: k distinct target classes, targets round-robin over them, every target of a
    class other than its own goal (and decoy), every canvas stitches a target with a reference of its goal's
    reference class; the poison carries one class per target and passes the track's validator."""
    pool, labels = held_out_pool(300)
    for reference in ("target_class", "decoy"):
        poison = attack(n_targets=6, n_references=3, n_target_classes=3, reference=reference).craft_targeted(
            context(tmp_path / reference, pool, labels, budget=12))
        classes = target_classes_of(poison)
        assert isinstance(poison.target_class, torch.Tensor) and len(classes) == len(poison.target_images) == 6
        assert sorted(torch.bincount(classes).tolist(), reverse=True)[:3] == [2, 2, 2]
        assert poison.diagnostics["n_target_classes"] == 3 and "reference_class" not in poison.diagnostics
        rows = [row_of(t, pool) for t in poison.target_images]
        assert len(set(rows)) == 6 and all(int(labels[r]) != int(c) for r, c in zip(rows, classes))
        goal_of_row = dict(zip(rows, classes.tolist()))
        for canvas in poison.images:
            left, right = row_of(canvas[:, :, :SIZE], pool), row_of(canvas[:, :, SIZE:], pool)
            target, ref = (left, right) if left in goal_of_row else (right, left)
            goal = goal_of_row[target]
            assert (int(labels[ref]) == goal) == (reference == "target_class")
        validate_targeted(poison, budget=12, image_shape=(1, SIZE, SIZE), num_classes=10, target_pool=pool)


def test_one_target_class_draws_what_the_one_class_attack_drew(tmp_path: Path) -> None:
    pool, labels = held_out_pool(300)
    a = attack(n_targets=4, n_references=3).craft_targeted(context(tmp_path / "a", pool, labels))
    b = attack(n_targets=4, n_references=3, n_target_classes=1).craft_targeted(context(tmp_path / "b", pool, labels))
    assert isinstance(a.target_class, int) and a.target_class == b.target_class
    assert torch.equal(a.images, b.images) and torch.equal(a.target_images, b.target_images)


def test_per_target_classes_are_validated() -> None:
    pool, _ = held_out_pool(20)
    targets, images = pool[:3].clone(), torch.rand(4, 1, SIZE, 2 * SIZE)

    def check(target_class: Any) -> None:
        validate_targeted(TargetedPoison(images=images, target_images=targets, target_class=target_class),
                          budget=4, image_shape=(1, SIZE, SIZE), num_classes=10, target_pool=pool)

    check(torch.tensor([1, 2, 3]))
    for bad, message in ((torch.tensor([1, 2]), "one class per target"), (torch.tensor([1, 2, 10]), "outside"),
                         (torch.tensor([1.0, 2.0, 3.0]), "integer tensor"), (torch.tensor([[1, 2, 3]]), "one class per target")):
        with pytest.raises(ThreatModelViolation, match=message):
            check(bad)
    config = ATTACKS.get("poisoned_encoder").Config
    assert any("n_target_classes" in p for p in config(n_targets=2, n_target_classes=3).problems())
    assert any("fixed target class" in p for p in config(target_class=1, n_target_classes=2).problems())
    assert not config(n_targets=10, n_target_classes=10).problems()
