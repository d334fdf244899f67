"""Downstream-track attacks (GradPC target, GC, TGDA, UE, feature-targeted FT): each does its job on a tiny
setting (600 MNIST digits at 16 px, a frozen random-init ``cnn_micro`` extractor, l2 = 1e-2, budget 15 %),
and every attack honours the output contract."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from attacks._gradpc import gradpc_target
from benchmark.api import (
    ATTACKS,
    DirectoryCheckpoints,
    DownstreamAttackContext,
    DownstreamPoison,
    FeatureExtractorView,
    HeadSpec,
    PretrainAttackContext,
)
from benchmark.backbones import create_backbone
from benchmark.data import load_dataset
from benchmark.plugins import load_plugins
from benchmark.pretrain import make_extractor
from benchmark.probe import fit_linear_head, head_accuracy

L2 = 1e-2
BUDGET_FRACTION = 0.15
EPS = 8 / 255
DOWNSTREAM_IDS = ("gc", "tgda", "ue", "ft_feature_space", "ft_decoder", "ft_feature_matching")
FAST: dict[str, dict[str, Any]] = {  # reduced settings for the contract tests only
    "gc": {"steps": 20, "gradpc_steps": 20},
    "tgda": {"epochs": 3, "follower_steps": 5, "cg_iters": 4},
    "ue": {"max_rounds": 2, "pgd_steps": 3},
    "ft_feature_space": {"gc_steps": 50, "gradpc_steps": 20},
    "ft_decoder": {"gc_steps": 50, "gradpc_steps": 20, "decoder_epochs": 2},
    "ft_feature_matching": {"gc_steps": 50, "gradpc_steps": 20, "match_steps": 10},
}


@dataclass
class Setting:
    view: FeatureExtractorView
    images: torch.Tensor
    labels: torch.Tensor
    features: torch.Tensor
    test_features: torch.Tensor
    test_labels: torch.Tensor
    store: dict
    builds: list

    def cached(self, kind: str, config: Mapping[str, Any], build: Callable[[], dict[str, torch.Tensor]]
               ) -> dict[str, torch.Tensor]:
        key = (kind, repr(sorted(config.items())))
        if key not in self.store:
            self.builds.append(kind)
            self.store[key] = build()
        return self.store[key]

    def ctx(self, seed: int, *, epsilon: float | None = None, fraction: float = BUDGET_FRACTION,
            l2: float = L2) -> DownstreamAttackContext:
        return DownstreamAttackContext(
            extractor=self.view, train_images=self.images, train_labels=self.labels, train_features=self.features,
            num_classes=10, budget=int(fraction * len(self.labels)), input_epsilon=epsilon, head=HeadSpec(10, l2),
            generator=torch.Generator().manual_seed(seed), device=torch.device("cpu"), cached=self.cached)

    def victim_accuracy(self, poison: DownstreamPoison, l2: float = L2) -> float:
        """The victim: head fitted on clean + poison features, tested on held-out clean data."""
        pf = poison.features if poison.features is not None else self.view.features(poison.images)
        head = fit_linear_head(torch.cat([self.features, pf.float()]), torch.cat([self.labels, poison.labels]), 10,
                               l2=l2)
        return head_accuracy(head, self.test_features, self.test_labels)


@pytest.fixture(scope="module")
def setting() -> Setting:
    torch.set_num_threads(1)
    load_plugins()
    train = load_dataset("mnist5k", "train", image_size=16, subset=600)
    test = load_dataset("mnist5k", "test", image_size=16, subset=300)
    device = torch.device("cpu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        extractor = make_extractor(create_backbone("cnn_micro", in_chans=1), train.images, device)
    view = FeatureExtractorView(extractor, extractor.feature_dim, device)
    return Setting(view, train.images, train.labels, view.features(train.images), view.features(test.images),
                   test.labels, {}, [])


def craft(attack_id: str, ctx: DownstreamAttackContext, **settings: Any) -> DownstreamPoison:
    cls = ATTACKS.get(attack_id)
    config = cls.Config(**settings)
    assert config.problems() == []
    return cls(config).craft_downstream(ctx)


# ------------------------------------------------------------------------------------------ GradPC
def test_gradpc_target_is_worse_and_within_its_bound(setting: Setting) -> None:
    clean = fit_linear_head(setting.features, setting.labels, 10, l2=L2)
    target = gradpc_target(setting.features, setting.labels, clean, epsilon_w=0.5, steps=100, lr=0.05)
    theta_c = torch.cat([clean.weight.flatten(), clean.bias])
    theta_t = torch.cat([target.weight.flatten(), target.bias])
    assert (theta_t - theta_c).norm() <= 0.5 * theta_c.norm() * (1 + 1e-5)
    assert head_accuracy(target, setting.features, setting.labels) < head_accuracy(clean, setting.features,
                                                                                   setting.labels) - 0.2


# ------------------------------------------------------------------------------------------ GC
@pytest.mark.parametrize("epsilon", [None, EPS])
def test_gc_cancels_the_gradient_at_the_target(setting: Setting, epsilon: float | None) -> None:
    poison = craft("gc", setting.ctx(0, epsilon=epsilon), steps=100)
    d = poison.diagnostics
    assert d["gc_residual_end"] < d["gc_residual_start"] * (0.97 if epsilon else 0.9)
    assert d["target_train_acc"] < d["clean_train_acc"]


@pytest.mark.heavy
def test_feature_space_bound_and_gc_beat_random_noise(setting: Setting) -> None:
    ctx = lambda: setting.ctx(0)  # a fresh generator per attack
    clean_acc = head_accuracy(fit_linear_head(setting.features, setting.labels, 10, l2=L2), setting.test_features,
                              setting.test_labels)
    noise = setting.victim_accuracy(craft("random_noise", ctx()))
    # a fixed far target (ε_w = 0.5·‖θ‖, not the attainable-target sweep): the solvers' strength on it
    upper = setting.victim_accuracy(craft("ft_feature_space", ctx(), zeta_constraint="none", epsilon_w=0.5))
    boxed = setting.victim_accuracy(craft("ft_feature_space", ctx(), epsilon_w=0.5))  # ζ in the clean-feature box
    gc = setting.victim_accuracy(craft("gc", ctx(), epsilon_w=0.5))
    # measured over extractor seeds 0-2 x attack seeds 0-2: clean 0.85-0.90, random noise 0.82-0.89,
    # unconstrained feature-space bound 0.43-0.55, GC 0.76-0.82 (GC below random noise by >= 0.037 in every
    # case); boxed bound (extractor seed 0, attack seeds 0-2) 0.72-0.76 vs random noise 0.85
    assert noise > clean_acc - 0.08
    assert upper < noise - 0.15
    assert boxed < noise - 0.05
    assert gc < noise - 0.02
    assert upper < gc  # the unconstrained feature-space bound is stronger than the input-space attack


# ------------------------------------------------------------------------------------------ attainable targets
def test_the_sweep_keeps_an_attained_target_and_gc_reaches_it(setting: Setting) -> None:
    """Issue #25: with ``target_choice: strongest_attained`` ε_w is chosen per cell among the grid, only from
    targets whose feature-space GC residual fell to ``attained_ratio`` of its start on the attacker's split;
    the cell's own GC then attains it, and the cosine schedule has levelled off (< 5 % of the residual's
    fall in the last quarter)."""
    d = craft("ft_feature_space", setting.ctx(0), gc_steps=300, target_choice="strongest_attained").diagnostics
    assert d["epsilon_w"] in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
    assert d["sweep_attained"] == 1.0 and d["sweep_residual_ratio"] <= 0.2
    assert d["target_rel_distance"] == pytest.approx(d["epsilon_w"], rel=1e-3)
    assert d["gc_residual_ratio"] <= 0.2 and d["target_attained"] == 1.0
    assert d["gc_last_quarter_share"] < 0.05
    assert {"sweep_val_acc", "sweep_clean_val_acc", "target_distance_ratio", "poisoned_train_acc"} <= set(d)


def test_an_unattainable_grid_is_recorded_as_such(setting: Setting) -> None:
    """A grid of far targets only: the closest-to-attained one is kept and the cell says it was not attained."""
    d = craft("ft_feature_space", setting.ctx(0), gc_steps=100, epsilon_w_grid=(5.0, 10.0), attained_ratio=0.01,
              target_choice="strongest_attained").diagnostics
    assert d["sweep_attained"] == 0.0 and d["target_attained"] == 0.0
    assert d["epsilon_w"] in (5.0, 10.0)


def test_the_strongest_choice_is_at_least_as_strong_on_the_attackers_split(setting: Setting) -> None:
    """``strongest`` keeps the candidate whose GC-poisoned head is worst on the attacker's validation split,
    attained or not: never better for the victim there than the best attained candidate (same split, same
    candidates: the split's seed is the generator's first draw)."""
    grid = {"gc_steps": 50, "gradpc_steps": 20, "sweep_gc_steps": 100}
    strongest = craft("ft_feature_space", setting.ctx(1), **grid).diagnostics
    attained = craft("ft_feature_space", setting.ctx(1), target_choice="strongest_attained", **grid).diagnostics
    assert strongest["sweep_clean_val_acc"] == attained["sweep_clean_val_acc"]
    assert strongest["sweep_val_acc"] <= attained["sweep_val_acc"]


@pytest.mark.parametrize("attack", ["gc", "ft_feature_space"])
def test_gc_poisons_carry_label_flippings_labels_unless_told_otherwise(setting: Setting, attack: str) -> None:
    """GC starts from label flipping's poisons (every label another class), or keeps the base points' own
    labels with ``poison_labels: clean``; the labels never change while GC runs."""
    fast = {**FAST[attack], "epsilon_w": 0.1}
    flipped = craft(attack, setting.ctx(2), **fast)
    own = craft(attack, setting.ctx(2), poison_labels="clean", **fast)
    assert torch.equal(flipped.base_indices, own.base_indices)
    assert torch.equal(own.labels, setting.labels[own.base_indices])
    assert (flipped.labels != setting.labels[flipped.base_indices]).all()


def test_a_bad_target_choice_or_label_rule_is_reported_before_compute() -> None:
    problems = ATTACKS.get("gc").Config(target_choice="closest", poison_labels="random").problems()
    assert any("target_choice" in p and "strongest_attained" in p for p in problems)
    assert any("poison_labels" in p and "flipped" in p for p in problems)


def test_a_fixed_epsilon_w_skips_the_sweep(setting: Setting) -> None:
    d = craft("gc", setting.ctx(0), steps=20, epsilon_w=0.3).diagnostics
    assert d["epsilon_w"] == 0.3 and "sweep_val_acc" not in d
    assert d["target_rel_distance"] == pytest.approx(0.3, rel=1e-3)


def test_the_sweep_reads_only_the_training_set(setting: Setting) -> None:
    """The target choice is a function of the attacker's training data and seed: the same for any test set."""
    first = craft("ft_feature_space", setting.ctx(3), gc_steps=50).diagnostics
    second = craft("ft_feature_space", setting.ctx(3), gc_steps=50).diagnostics
    assert first["epsilon_w"] == second["epsilon_w"] and first["sweep_val_acc"] == second["sweep_val_acc"]


# ------------------------------------------------------------------------------------------ TGDA
def test_tgda_leader_raises_validation_loss(setting: Setting) -> None:
    poison = craft("tgda", setting.ctx(0), epochs=30, leader_lr=0.01)
    d = poison.diagnostics
    assert d["leader_loss_end"] > d["leader_loss_start"] + 0.05
    assert d["val_ce_refit"] > d["leader_loss_start"]


def test_tgda_total_gradient_matches_finite_differences(setting: Setting) -> None:
    """The leader's total gradient equals d(−L_val(w*(G)))/dG, w* the follower's optimum (checked on the
    output bias, the coordinate with a gradient well above finite-difference noise)."""
    from attacks.tgda import TGDAConfig, _Game

    order = torch.randperm(600, generator=torch.Generator().manual_seed(0))[:300]
    feats, labels, images = setting.features[order], setting.labels[order], setting.images[order]
    ctx = setting.ctx(0, l2=0.1)
    game = _Game(ctx, TGDAConfig(cg_iters=100, cg_damping=1e-6), feats[:200], labels[:200], feats[200:],
                 labels[200:], images[:60].clone(), labels[:60].clone())
    param = game.generator.out.bias
    with torch.no_grad():
        for p in game.generator.out.parameters():
            p.normal_(0.0, 0.01, generator=torch.Generator().manual_seed(1))

    def optimum() -> torch.Tensor:
        with torch.no_grad():
            poison_f = setting.view(game.poisons())
        head = fit_linear_head(torch.cat([game.train_f, poison_f]), game.all_y, 10, l2=0.1, max_iter=2000)
        return torch.cat([head.weight.flatten(), head.bias])

    game.w = optimum()
    index = next(i for i, p in enumerate(game.generator.parameters()) if p is param)
    analytic = game.hypergradient()[index][0].item()
    values = []
    for sign in (1.0, -1.0):
        with torch.no_grad():
            param[0] += sign * 3e-3
        values.append(-game.val_loss(optimum()).item())
        with torch.no_grad():
            param[0] -= sign * 3e-3
    numeric = (values[0] - values[1]) / 6e-3
    # measured for init seeds 1-4: analytic 0.224/0.279/0.220/0.093 vs numeric 0.222/0.243/0.213/0.087
    # (finite differences through ReLU/max-pool and an L-BFGS optimum are noisy: ~15 %)
    assert abs(analytic - numeric) < 0.3 * abs(numeric) and abs(numeric) > 1e-2


def test_conjugate_gradient_solves_a_spd_system() -> None:
    from attacks.tgda import conjugate_gradient

    a = torch.randn(6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    h = a @ a.T + 0.5 * torch.eye(6, dtype=torch.float64)
    b = torch.arange(6, dtype=torch.float64)
    assert torch.allclose(conjugate_gradient(lambda v: h @ v, b, 16), torch.linalg.solve(h, b), atol=1e-8)


# ------------------------------------------------------------------------------------------ UE
@pytest.mark.parametrize("mode", ["samplewise", "classwise"])
def test_ue_minimises_the_poisoned_training_error(setting: Setting, mode: str) -> None:
    poison = craft("ue", setting.ctx(0), mode=mode, stop_error=0.05, max_rounds=30)
    d = poison.diagnostics
    assert d["final_train_error"] < 0.05 and d["rounds"] < 30
    assert d["final_train_error"] <= d["base_train_error"]
    delta = poison.images - setting.images[poison.base_indices]
    assert delta.abs().max() <= EPS + 1e-6
    if mode == "classwise":  # one δ per class: two images of a class agree wherever neither was clipped
        base = setting.images[poison.base_indices]
        interior = (base >= EPS) & (base <= 1 - EPS)
        compared = 0
        for c in poison.labels.unique():
            rows = torch.nonzero(poison.labels == c).flatten()
            for r in rows[1:]:
                both = interior[rows[0]] & interior[r]
                compared += int(both.sum())
                assert torch.allclose(delta[r][both], delta[rows[0]][both], atol=1e-6)
        assert compared > 0


def test_ue_pretrain_availability_contract(setting: Setting, tmp_path: Path) -> None:
    images, labels = setting.images[:200].clone(), setting.labels[:200].clone()
    ctx = PretrainAttackContext(images=images, labels=labels, num_classes=10, epsilon=EPS, poison_fraction=0.5,
                                budget=100, ssl=None, generator=torch.Generator().manual_seed(0),
                                device=torch.device("cpu"), checkpoints=DirectoryCheckpoints(tmp_path / "ckpt"), cached=setting.cached)
    cls = ATTACKS.get("ue")
    poison = cls(cls.Config(max_rounds=3, pgd_steps=5, batch_size=100)).craft_availability(ctx)
    assert torch.equal(images, setting.images[:200]) and torch.equal(labels, setting.labels[:200])
    assert poison.images.shape == (100, 1, 16, 16) and poison.images.dtype == torch.float32
    assert len(poison.indices.unique()) == 100 and poison.indices.dtype == torch.int64
    assert (poison.images - images[poison.indices]).abs().max() <= EPS + 1e-6
    assert 0 <= poison.images.min() and poison.images.max() <= 1
    assert 0 <= poison.diagnostics["final_train_error"] <= 1


@pytest.mark.slow
def test_ue_pretrain_min_min_makes_poisons_learnable(setting: Setting, tmp_path: Path) -> None:
    images, labels = setting.images[:300], setting.labels[:300]
    ctx = PretrainAttackContext(images=images, labels=labels, num_classes=10, epsilon=EPS, poison_fraction=1.0,
                                budget=300, ssl=None, generator=torch.Generator().manual_seed(0),
                                device=torch.device("cpu"), checkpoints=DirectoryCheckpoints(tmp_path / "ckpt"), cached=setting.cached)
    cls = ATTACKS.get("ue")
    poison = cls(cls.Config(mode="classwise", stop_error=0.05, max_rounds=40)).craft_availability(ctx)
    assert poison.diagnostics["final_train_error"] < 0.05


# ------------------------------------------------------------------------------------------ FT
@pytest.mark.slow  # 25 s; the fast run keeps the gate's own test (tests/test_ft_attacks.py)
def test_ft_decoder_reconstructs_better_than_constant_and_is_cached(setting: Setting) -> None:
    before = setting.builds.count("ft_decoder")
    first = craft("ft_decoder", setting.ctx(0), gc_steps=200)
    second = craft("ft_decoder", setting.ctx(1), gc_steps=200)
    assert setting.builds.count("ft_decoder") == before + 1
    assert first.diagnostics["decoder_mse"] < 0.8 * first.diagnostics["constant_mse"]
    assert second.diagnostics["decoder_mse"] == first.diagnostics["decoder_mse"]
    assert first.diagnostics["feature_match_error"] >= 0


def test_ft_feature_matching_moves_features_toward_zeta(setting: Setting) -> None:
    poison = craft("ft_feature_matching", setting.ctx(0), gc_steps=300, match_steps=100)
    d = poison.diagnostics
    assert d["feature_match_error"] < d["feature_match_error_start"] - 0.03


# ------------------------------------------------------------------------------------------ contract
@pytest.mark.parametrize("epsilon", [None, EPS])
@pytest.mark.parametrize("attack_id", DOWNSTREAM_IDS)
def test_downstream_output_contract(setting: Setting, attack_id: str, epsilon: float | None) -> None:
    images, labels, features = setting.images.clone(), setting.labels.clone(), setting.features.clone()
    ctx = setting.ctx(3, epsilon=epsilon)
    poison = craft(attack_id, ctx, **FAST[attack_id])
    assert torch.equal(images, setting.images) and torch.equal(labels, setting.labels)
    assert torch.equal(features, setting.features)
    assert poison.labels.dtype == torch.int64 and len(poison.labels) <= ctx.budget
    assert ((0 <= poison.labels) & (poison.labels < 10)).all()
    assert all(isinstance(v, float) for v in poison.diagnostics.values())
    if ATTACKS.get(attack_id).space == "feature":
        assert poison.images is None and poison.features.shape == (len(poison.labels), setting.view.feature_dim)
        return
    x = poison.images
    assert x.dtype == torch.float32 and x.shape == (len(poison.labels), 1, 16, 16)
    assert torch.isfinite(x).all() and x.min() >= 0 and x.max() <= 1
    assert poison.base_indices is not None and len(poison.base_indices.unique()) == len(poison.labels)
    if attack_id in ("tgda", "ue"):  # they keep the base points' labels; GC and the FT attacks flip them
        assert torch.equal(poison.labels, setting.labels[poison.base_indices])
    if epsilon is not None:
        assert (x - setting.images[poison.base_indices]).abs().max() <= epsilon + 1e-6


@pytest.mark.parametrize("attack_id", DOWNSTREAM_IDS)
def test_downstream_attacks_are_deterministic_given_the_generator(setting: Setting, attack_id: str) -> None:
    first = craft(attack_id, setting.ctx(5, epsilon=EPS), **FAST[attack_id])
    second = craft(attack_id, setting.ctx(5, epsilon=EPS), **FAST[attack_id])
    out = "features" if ATTACKS.get(attack_id).space == "feature" else "images"
    assert torch.equal(getattr(first, out), getattr(second, out)) and torch.equal(first.labels, second.labels)


@pytest.mark.parametrize("attack_id", DOWNSTREAM_IDS)
def test_configs_check_their_ranges(attack_id: str) -> None:
    load_plugins()
    cls = ATTACKS.get(attack_id)
    assert cls.Config().problems() == []
    assert cls.Config().to_dict()
    field = {"gc": "steps", "tgda": "epochs", "ue": "max_rounds", "ft_feature_space": "gc_steps",
             "ft_decoder": "decoder_epochs", "ft_feature_matching": "match_steps"}[attack_id]
    assert any(p.startswith(field) for p in cls.Config(**{field: -1}).problems())
    second = {"tgda": "val_fraction", "ue": "epsilon"}.get(attack_id, "epsilon_w")
    assert any(p.startswith(second) for p in cls.Config(**{second: -1.0}).problems())
    if attack_id == "ue":
        assert any(p.startswith("mode") for p in cls.Config(mode="pixelwise").problems())


def test_ue_pretrain_surrogate_follows_the_victim_recipe(setting: Setting, tmp_path: Path) -> None:
    from benchmark.pretrain import SSLRecipe

    images, labels = setting.images[:20], setting.labels[:20]

    def surrogate(recipe: Any, **settings: Any) -> torch.nn.Module:
        ctx = PretrainAttackContext(images=images, labels=labels, num_classes=10, epsilon=EPS, poison_fraction=1.0,
                                    budget=20, ssl=recipe, generator=torch.Generator().manual_seed(0),
                                    device=torch.device("cpu"), checkpoints=DirectoryCheckpoints(tmp_path / "c"),
                                    cached=setting.cached)
        cls = ATTACKS.get("ue")
        return cls(cls.Config(**settings))._surrogate(ctx)

    def size(model: torch.nn.Module) -> int:
        return sum(p.numel() for p in model.parameters())

    resnet = SSLRecipe(method="simclr", backbone="resnet18", cifar_stem=True)
    micro = SSLRecipe(method="simclr", backbone="cnn_micro")
    assert size(surrogate(resnet)) > 10_000_000  # ResNet-18, as in the paper's CIFAR experiments
    same = [torch.equal(a, b) for a, b in zip(surrogate(micro).state_dict().values(), surrogate(None).state_dict().values())]
    assert all(same)  # the cnn_micro recipe keeps the surrogate it always had (same seeded weights)
    assert size(surrogate(resnet, surrogate_backbone="cnn_micro")) == size(surrogate(micro))
