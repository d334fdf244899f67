"""The pre-training backdoor track: its triggers, its threat model and the attacks that plant one."""

from __future__ import annotations

import pytest
import torch

from benchmark.tracks.pretrain_backdoor.interface import BackdoorPoison
from benchmark.tracks.pretrain_backdoor.triggers import add_frequency, dct_matrix, paste_patch, random_locations
from benchmark.tracks.pretrain_backdoor.validate import validate_backdoor
from benchmark.validation import ThreatModelViolation


def _images(n: int = 40, channels: int = 1, side: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, channels, side, side, generator=torch.Generator().manual_seed(seed)) * 0.6 + 0.2


# ------------------------------------------------------------------------------------------ triggers
def test_the_dct_is_scipys_orthonormal_dct_ii() -> None:
    from scipy.fft import dctn

    d = dct_matrix(8)
    x = torch.rand(8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(d @ d.T, torch.eye(8, dtype=torch.float64))
    assert torch.allclose(d @ x @ d.T, torch.from_numpy(dctn(x.numpy(), norm="ortho")))


def test_the_frequency_trigger_adds_its_dct_basis_pattern_in_every_tile() -> None:
    """On a grey image (no clamping) the trigger is additive: magnitude / 255 × the (u, v) basis image, per tile."""
    images = _images(side=16)
    out = add_frequency(images, torch.tensor([[3.0, 5.0, 50.0]]), 8)
    d = dct_matrix(8)
    basis = torch.outer(d[3], d[5]) * 50 / 255
    expected = images.double() + basis.repeat(2, 2)
    assert torch.allclose(out.double(), expected, atol=1e-6)


def test_the_frequency_trigger_on_colour_images_leaves_the_luma_and_stays_in_range() -> None:
    import kornia.color

    images = _images(channels=3, side=32)
    out = add_frequency(images, torch.tensor([[15.0, 15.0, 50.0], [31.0, 31.0, 50.0]]), 32)
    assert out.min() >= 0 and out.max() <= 1 and (out - images).abs().max() > 0.01
    luma = kornia.color.rgb_to_ycbcr(out.double())[:, 0] - kornia.color.rgb_to_ycbcr(images.double())[:, 0]
    assert luma.abs().max() < 1e-6


def test_a_patch_is_pasted_where_its_locations_say() -> None:
    images, patch = _images(n=5), torch.ones(1, 3, 3)
    locations = random_locations(5, tuple(images.shape), tuple(patch.shape), torch.Generator().manual_seed(0))
    assert ((locations >= 0) & (locations <= 13)).all()
    out = paste_patch(images, patch, locations)
    for i, (r, c) in enumerate(locations.tolist()):
        assert (out[i, :, r:r + 3, c:c + 3] == 1).all()
    assert (out != images).sum() <= 5 * 9


def test_a_blended_patch_keeps_the_image_under_it_and_a_test_region_fixes_its_place() -> None:
    images, patch = _images(n=3), torch.ones(1, 4, 4)
    locations = random_locations(3, tuple(images.shape), tuple(patch.shape), torch.Generator().manual_seed(0), (0.45, 0.55))
    assert (locations == 7).all()  # [0.45 · 16, 0.55 · 16 − 4] is empty: Noisy Alignment's code takes the low end
    out = paste_patch(images, patch, locations, opacity=0.8)
    assert torch.allclose(out[:, :, 7:11, 7:11], 0.2 * images[:, :, 7:11, 7:11] + 0.8)
    assert torch.equal(out[:, :, :7], images[:, :, :7])


def test_a_blended_patch_on_an_injected_canvas_must_be_a_blend_over_some_image() -> None:
    images, patch = _images(), torch.ones(1, 4, 4)
    canvases = torch.cat([_images(n=2, seed=3), _images(n=2, seed=4)], dim=3)
    locations = torch.tensor([[7, 7], [7, 23]])
    poison = BackdoorPoison(images=paste_patch(canvases, patch, locations, 0.8), indices=None, target_class=3, patch=patch,
                            patch_locations=locations, patch_opacity=torch.tensor(0.8),
                            patch_test_region=torch.tensor([0.45, 0.55]))
    validate_backdoor(poison, budget=2, images=images, target_class=3)
    poison.images[1, :, 7:11, 23:27] = 0.1  # darker than 0.8 × a white patch can leave
    with pytest.raises(ThreatModelViolation, match="do not carry the patch"):
        validate_backdoor(poison, budget=2, images=images, target_class=3)


# ------------------------------------------------------------------------------------------ threat model
def _patch_poison(images: torch.Tensor, indices: torch.Tensor, target: int = 3) -> BackdoorPoison:
    patch = torch.ones(1, 4, 4)
    locations = random_locations(len(indices), tuple(images.shape), tuple(patch.shape), torch.Generator().manual_seed(2))
    return BackdoorPoison(images=paste_patch(images[indices], patch, locations), indices=indices, target_class=target,
                          patch=patch, patch_locations=locations)


def test_a_poison_that_carries_its_trigger_passes_and_every_violation_is_named() -> None:
    images = _images()
    indices = torch.arange(5)
    validate_backdoor(_patch_poison(images, indices), budget=5, images=images, target_class=3)
    with pytest.raises(ThreatModelViolation, match="exceed the budget"):
        validate_backdoor(_patch_poison(images, indices), budget=4, images=images, target_class=3)
    with pytest.raises(ThreatModelViolation, match="this cell's target class is 4"):
        validate_backdoor(_patch_poison(images, indices), budget=5, images=images, target_class=4)
    poison = _patch_poison(images, indices)
    poison.images[2] = images[2]  # one poison without its trigger
    with pytest.raises(ThreatModelViolation, match="do not carry the patch"):
        validate_backdoor(poison, budget=5, images=images, target_class=3)
    twice = _patch_poison(images, torch.tensor([1, 1, 2, 3, 4]))
    with pytest.raises(ThreatModelViolation, match="replaced twice"):
        validate_backdoor(twice, budget=5, images=images, target_class=3)


def test_a_frequency_poison_must_be_its_base_image_with_the_declared_trigger() -> None:
    images = _images(side=16)
    indices = torch.tensor([0, 4, 7])
    coefficients = torch.tensor([[7.0, 7.0, 50.0], [15.0, 15.0, 50.0]], dtype=torch.float64)

    def poison(magnitude: float) -> BackdoorPoison:
        used = coefficients.clone()
        used[:, 2] = magnitude
        return BackdoorPoison(images=add_frequency(images[indices], used, 16), indices=indices, target_class=0,
                              frequency=coefficients, frequency_window=torch.tensor(16),
                              frequency_test_scale=torch.tensor(2.0))

    validate_backdoor(poison(50.0), budget=3, images=images, target_class=0)
    with pytest.raises(ThreatModelViolation, match="not their base image with the declared trigger"):
        validate_backdoor(poison(60.0), budget=3, images=images, target_class=0)
    both = BackdoorPoison(**{**poison(50.0).__dict__, "patch": torch.ones(1, 2, 2)})
    with pytest.raises(ThreatModelViolation, match="exactly one of patch"):
        validate_backdoor(both, budget=3, images=images, target_class=0)


# ------------------------------------------------------------------------------------------ attacks
@pytest.mark.parametrize("attack_id", ["sslbkd", "ctrl", "corruptencoder", "noisy_alignment"])
def test_the_attacks_poison_target_class_images_within_budget_and_validate(attack_id: str) -> None:
    from benchmark.api import BackdoorAttackContext, DirectoryCheckpoints
    from benchmark.plugin_base import ATTACKS
    from benchmark.plugins import load_plugins
    from benchmark.pretrain import SSLRecipe

    load_plugins()
    images, labels = _images(n=200), torch.arange(200) % 10
    ctx = BackdoorAttackContext(images=images, labels=labels, num_classes=10, epsilon=1.0, poison_fraction=0.05,
                                budget=10, ssl=SSLRecipe(method="simclr", backbone="cnn_micro"),
                                generator=torch.Generator().manual_seed(0), device=torch.device("cpu"),
                                checkpoints=DirectoryCheckpoints("/nonexistent"), cached=None, target_class=3)
    cls = ATTACKS.get(attack_id)
    poison = cls(cls.Config(**({} if attack_id == "sslbkd" else {"poison_ratio": 0.05}))).craft_backdoor(ctx)
    assert 0 < len(poison.images) <= 10
    if poison.indices is None:  # injected canvases: twice as wide, the trigger in them
        assert poison.images.shape[1:] == (1, 16, 32)
    else:  # replaced images of the target class
        assert (labels[poison.indices] == 3).all()
    validate_backdoor(poison, budget=10, images=images, target_class=3)
    control = cls(cls.Config(mode="trigger_only")).craft_backdoor(ctx)
    assert len(control.images) == 0
    validate_backdoor(control, budget=10, images=images, target_class=3)


def test_the_method_settings_axis_gives_one_cell_per_entry_and_its_encoders_use_it() -> None:
    """full-quick's CTRL cells at SimCLR temperatures 0.2 and 0.5: two cells, two encoders, two board labels."""
    from benchmark.suite import expand_cells, load_suite
    from benchmark.tracks.pretrain_backdoor.track import with_method_settings

    cells = [c for c in expand_cells(load_suite("full-quick"))[0]
             if c.track == "pretrain-backdoor" and c.attack.name == "ctrl" and c.defense.id == "none"]
    assert sorted(c.variant("method_settings")["temperature"] for c in cells) == [0.2, 0.5]
    assert sorted(with_method_settings(c).encoder.method_settings["temperature"] for c in cells) == [0.2, 0.5]
    assert len({c.id for c in cells}) == 2


def test_a_sanitiser_sees_an_injected_canvas_through_its_centre_crop_and_its_poisons_after_the_images() -> None:
    from benchmark.tracks.pretrain_backdoor.track import poison_rows, sanitiser_view

    canvases = torch.cat([_images(n=2, seed=3), _images(n=2, seed=4)], dim=3)  # 16 × 32: the shorter side fits already
    assert torch.equal(sanitiser_view(canvases, 16), canvases[..., 8:24])
    tall = torch.rand(1, 1, 32, 24)
    assert sanitiser_view(tall, 16).shape == (1, 1, 16, 16)
    injected = BackdoorPoison(images=canvases, indices=None, target_class=0, patch=torch.ones(1, 2, 2),
                              patch_locations=torch.zeros(2, 2, dtype=torch.int64))
    assert poison_rows(injected, 40).tolist() == [40, 41]
    assert poison_rows(_patch_poison(_images(), torch.tensor([3, 5])), 40).tolist() == [3, 5]


# ------------------------------------------------------------------------------------------ target classes
def test_target_classes_are_checked_and_every_seed_of_the_cpu_tier_aims_at_the_same_ones() -> None:
    from benchmark.suite import expand_cells, load_suite
    from benchmark.tracks.pretrain_backdoor.track import BackdoorTrackSpec

    def problems(classes: object) -> list[str]:
        return BackdoorTrackSpec(budgets=[0.1], attacks=["none"], target_classes=classes).problems()  # type: ignore[arg-type]

    assert problems([4, 1]) == []
    assert "names a class twice" in " ".join(problems([4, 4]))
    for bad in ([], [-1], [True], ["4"]):
        assert "expected a non-empty list of class indices" in " ".join(problems(bad))
    cells = [c for c in expand_cells(load_suite("cpu"))[0] if c.track == "pretrain-backdoor"]
    assert {c.seed for c in cells} == {0, 1, 2}
    assert all(c.variant("target_classes") == [4, 1] for c in cells)
    smoke = [c for c in expand_cells(load_suite("smoke"))[0] if c.track == "pretrain-backdoor"]
    assert all(c.variant("target_classes") is None for c in smoke)  # one class drawn per seed; cell ids unchanged


def test_a_target_class_outside_the_data_sets_classes_is_a_clear_error() -> None:
    from types import SimpleNamespace

    from benchmark.tracks.pretrain_backdoor.track import target_classes

    setting = SimpleNamespace(num_classes=10, seed=0, scenario=SimpleNamespace(downstream="mnist5k"))
    cell = SimpleNamespace(variant=lambda key: [4, 12])
    with pytest.raises(ValueError, match=r"target_classes: \[12\] outside the 10 classes of mnist5k"):
        target_classes(setting, cell)  # type: ignore[arg-type]
    assert target_classes(setting, SimpleNamespace(variant=lambda key: [4, 1])) == [4, 1]  # type: ignore[arg-type]


def test_the_estimate_prices_one_poisoned_victim_per_target_class() -> None:
    from benchmark.suite import expand_cells, load_suite
    from benchmark.tracks.base import get_track
    from benchmark.work import WorkList, cell_sizes

    cells = [c for c in expand_cells(load_suite("cpu"))[0] if c.track == "pretrain-backdoor" and c.seed == 0
             and c.attack.name == "sslbkd" and c.defense.id == "none"]
    assert len(cells) == 1
    work = WorkList()
    get_track("pretrain-backdoor").add_work(work, cells[0], cell_sizes(cells[0]))
    victims = [w for w in work.items.values() if w.kind == "victim encoder"]
    assert len(victims) == 2


@pytest.mark.slow
def test_a_cell_with_two_target_classes_records_the_mean_of_its_two_victims(tmp_path) -> None:
    import json

    from benchmark.__main__ import main

    code = main(["run", "--suite", "smoke", "--set", "tracks.pretrain-backdoor.target_classes=[4, 1]",
                 "--only", "track=pretrain-backdoor", "--only", "method=simclr", "--only", "attack=sslbkd",
                 "--only", "defense=none", "--results-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"),
                 "--no-leaderboard", "--device", "cpu"])
    assert code == 0
    (path,) = (tmp_path / "r" / "smoke").glob("*__sslbkd__none__*.json")
    record = json.loads(path.read_text())
    per_target = record["details"]["per_target_class"]
    assert record["details"]["target_class"] == [4, 1] and sorted(per_target) == ["1", "4"]
    for name in ("attack_success_rate", "asr_gain", "poisoned_accuracy"):
        mean = sum(per_target[c]["metrics"][name] for c in per_target) / 2
        assert record["metrics"][name] == pytest.approx(mean)
    assert [per_target[c]["target_class"] for c in ("4", "1")] == [4, 1]
    shown = record["details"]["attack_diagnostics"]["target_images"]  # the board's diagnostics: their means
    assert shown == pytest.approx(sum(per_target[c]["attack_diagnostics"]["target_images"] for c in per_target) / 2)
