"""Defenses: each does what its paper says at toy scale, and bad settings are rejected before compute."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from benchmark.api import DefenseContext, FeatureExtractorView, HeadSpec
from benchmark.backbones import create_backbone
from benchmark.data import load_dataset
from benchmark.pretrain import SSLRecipe, make_extractor, train_ssl
from benchmark.probe import fit_linear_head, head_accuracy
from benchmark.suite import SuiteError, expand_cells, load_suite
from defenses.adversarial_training import AdversarialTraining, AdversarialTrainingConfig, pgd
from defenses.dp_sgd import DPSGD, DPSGDConfig
from defenses.finetune import Finetune, FinetuneConfig
from defenses.matrix_completion import (
    MatrixCompletion,
    MatrixCompletionConfig,
    ReconstructionBank,
    me_net,
    reconstruction_bank,
    reconstruction_report,
)

CPU = torch.device("cpu")


def _ctx(seed: int = 0, track: str = "downstream") -> DefenseContext:
    return DefenseContext(track=track, num_classes=10, seed=seed, generator=torch.Generator().manual_seed(seed), device=CPU)


@pytest.fixture(scope="module")
def mnist():
    train = load_dataset("mnist5k", "train", image_size=16, subset=600)
    test = load_dataset("mnist5k", "test", image_size=16)
    torch.manual_seed(0)
    extractor = make_extractor(create_backbone("cnn_micro", in_chans=1), train.images, CPU)
    return train, test, extractor


def _view(extractor) -> FeatureExtractorView:
    return FeatureExtractorView(extractor, extractor.feature_dim, CPU)


# ------------------------------------------------------------------------------------ adversarial training
def test_adversarial_training_head_is_more_robust_to_pgd(mnist) -> None:
    train, test, extractor = mnist
    view = _view(extractor)
    eps = 0.1
    at = AdversarialTraining(AdversarialTrainingConfig(epsilon=eps, step_size=eps / 4, steps=5, epochs=4))
    robust_head = at.fit_head(view, train.images, train.labels, HeadSpec(10, 1e-3), _ctx())
    plain_head = fit_linear_head(view.features(train.images), train.labels, 10, l2=1e-3)
    x, y = test.images[:400], test.labels[:400]

    def pgd_accuracy(head) -> float:
        adv = pgd(lambda z: F.cross_entropy(head.logits(extractor(z)), y), x, epsilon=eps, step_size=eps / 4,
                  steps=10, generator=torch.Generator().manual_seed(1))
        assert (adv - x).abs().max() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
        return head_accuracy(head, view.features(adv), y)

    assert pgd_accuracy(robust_head) > pgd_accuracy(plain_head) + 0.1


def test_adversarial_contrastive_loss_runs_and_is_higher_than_clean() -> None:
    images = load_dataset("mnist5k", "train", image_size=16, subset=128).images
    recipe = SSLRecipe(method="simclr", backbone="cnn_micro", epochs=1, batch_size=64,
                       method_settings={"proj_hidden": 32, "proj_dim": 16})
    hooks = AdversarialTraining().ssl_hooks(recipe, _ctx(track="pretrain-availability"))
    model = train_ssl(recipe, images, seed=0, device=CPU, hooks=hooks)
    v = images[:32]
    clean = model.loss(v, v).item()
    assert hooks.loss_fn(model, v, v, v).item() > clean  # ½(clean + adversarial) with adversarial ≥ clean


# ------------------------------------------------------------------------------------ matrix completion
def _low_rank_images(n: int = 4, size: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, size, 1, generator=g) * 2 - 1
    v = torch.rand(n, 1, 3 * size, generator=g) * 2 - 1
    return (0.5 + 0.5 * u @ v).reshape(n, size, 3, size).permute(0, 2, 1, 3).contiguous()


def test_matrix_completion_reconstructs_low_rank_image_from_masked_pixels() -> None:
    x = _low_rank_images()
    r = me_net(x, keep_prob=0.8, n_masks=10, generator=torch.Generator().manual_seed(0))
    assert r.shape == x.shape and r.min() >= 0 and r.max() <= 1
    assert ((r - x).norm() / (x - 0.5).norm()).item() < 0.2
    full = me_net(x, keep_prob=1.0, n_masks=1, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(full, x, atol=1e-4)  # every pixel observed, rank kept: identity


def test_matrix_completion_removes_more_perturbation_than_image() -> None:
    x = _low_rank_images(seed=1)
    delta = torch.sign(torch.randn(x.shape, generator=torch.Generator().manual_seed(2))) * 8 / 255
    xd = (x + delta).clamp(0, 1)
    # a low rank fraction: the projection then drops most of a full-rank perturbation, little of a rank-1 image
    rec = lambda z: me_net(z, keep_prob=0.8, n_masks=10, rank_fraction=0.25, generator=torch.Generator().manual_seed(3))
    r, rd = rec(x), rec(xd)
    perturbation_kept = ((rd - r).norm() / (xd - x).norm()).item()
    image_lost = ((r - x).norm() / (x - 0.5).norm()).item()
    assert 1 - perturbation_kept > image_lost


def test_matrix_completion_keeps_real_digits() -> None:
    """ME-Net's rank fraction keeps ⌊0.8·16⌋ = 12 singular values of a 16 × 16 digit and the digit with it;
    the σ̂-scaled noise threshold it replaced kept rank 1 to 2 and erased the digit (relative error ≈ 0.75)."""
    x = load_dataset("mnist5k", "train", image_size=16, subset=300).images
    defense = MatrixCompletion()  # defaults: keep_prob 0.8, rank fraction 0.8, 10 masks
    r = defense.transform_images(x, _ctx())
    report = reconstruction_report(x, r, rank_fraction=defense.config.rank_fraction)
    assert report["kept_rank"] == 12 and report["relative_error"] < 0.3

    masked = (x * 2 - 1) * (torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) < 0.5)
    s = torch.linalg.svdvals(masked[:, 0])
    rms = masked[:, 0].pow(2).mean(dim=(-2, -1)).div(0.5).sqrt()
    threshold_rank = (s >= (2.01 * math.sqrt(16 * 0.5) * rms)[:, None]).sum(1).float()
    assert threshold_rank.mean() < 3  # the old rule: what this test guards against


def test_matrix_completion_ssl_hook_transforms_batches() -> None:
    mc = MatrixCompletion(MatrixCompletionConfig(n_masks=2))
    hooks = mc.ssl_hooks(None, _ctx(track="pretrain-availability"))
    x = _low_rank_images(8)
    y = hooks.batch_transform(x)
    assert y.shape == x.shape and not torch.equal(x, y)
    assert mc.transform_images(x, _ctx()).shape == x.shape


def _bank(images: torch.Tensor, seed: int = 0, **settings) -> ReconstructionBank:
    hooks = MatrixCompletion(MatrixCompletionConfig(**settings)).ssl_hooks(None, _ctx(seed, "pretrain-availability"))
    assert hooks.batch_transform is None and hooks.prepare is not None
    return hooks.prepare(images)


def _bank_entry_of(row: torch.Tensor, bank: torch.Tensor, i: int) -> int | None:
    """Which of image ``i``'s bank entries ``row`` is (None: none of them)."""
    return next((j for j in range(len(bank)) if torch.equal(row, bank[j, i])), None)


def test_matrix_completion_bank_mode_is_opt_in_and_validated() -> None:
    assert MatrixCompletionConfig().ssl_bank == 0  # default: fresh masks every batch (cpu/smoke numbers unchanged)
    assert MatrixCompletion().ssl_hooks(None, _ctx()).batch_transform is not None
    assert any("ssl_bank" in p for p in MatrixCompletionConfig(ssl_bank=-1).problems())
    assert not MatrixCompletionConfig(ssl_bank=4, ssl_prob=0.5).problems()


def test_matrix_completion_bank_entries_are_me_net_reconstructions() -> None:
    x = load_dataset("mnist5k", "train", image_size=16, subset=64).images
    bank = _bank(x, ssl_bank=3).bank
    assert bank.shape == (3, *x.shape) and bank.dtype == x.dtype and bank.min() >= 0 and bank.max() <= 1
    fresh = reconstruction_report(x, me_net(x, keep_prob=0.8, n_masks=10, generator=torch.Generator().manual_seed(5)),
                                  rank_fraction=0.8)
    for entry in bank:  # the same reconstruction statistics as a fresh ME-Net reconstruction
        report = reconstruction_report(x, entry, rank_fraction=0.8)
        assert report["kept_rank"] == fresh["kept_rank"] == 12
        assert abs(report["relative_error"] - fresh["relative_error"]) < 0.02 and report["relative_error"] < 0.3
    # one copy in one chunk is exactly me_net with the same masks; small chunks change only the mask order
    g = lambda: torch.Generator().manual_seed(7)
    one = reconstruction_bank(x, copies=1, keep_prob=0.8, n_masks=4, generator=g())
    assert torch.equal(one[0], me_net(x, keep_prob=0.8, n_masks=4, generator=g()))
    chunked = reconstruction_bank(x, copies=2, keep_prob=0.8, n_masks=4, generator=g(), chunk=40)  # 10 images a chunk
    assert chunked.shape == (2, *x.shape)
    assert abs(reconstruction_report(x, chunked[1], rank_fraction=0.8)["relative_error"]
               - reconstruction_report(x, one[0], rank_fraction=0.8)["relative_error"]) < 0.02


def test_matrix_completion_bank_is_seeded_and_its_copies_differ() -> None:
    x = _low_rank_images(6)
    a, b, other = _bank(x, ssl_bank=3, n_masks=2), _bank(x, ssl_bank=3, n_masks=2), _bank(x, seed=1, ssl_bank=3, n_masks=2)
    assert torch.equal(a.bank, b.bank) and not torch.equal(a.bank, other.bank)
    idx = torch.tensor([4, 0, 5, 5, 2])
    assert torch.equal(a(x[idx], idx), b(x[idx], idx)) and torch.equal(a(x[idx], idx), b(x[idx], idx))
    for i in range(len(x)):  # the k reconstructions of an image differ (their own masks)
        entries = a.bank[:, i]
        assert all(not torch.equal(entries[j], entries[k]) for j in range(3) for k in range(j + 1, 3))


def test_matrix_completion_bank_batches_use_only_their_own_images_entries() -> None:
    x = _low_rank_images(10)
    bank = _bank(x, ssl_bank=3, n_masks=2)
    used: set[int] = set()
    for _ in range(5):
        idx = torch.randperm(10)[:6]
        out = bank(x[idx], idx)
        assert out.shape == (6, *x.shape[1:])
        entries = [_bank_entry_of(out[r], bank.bank, int(i)) for r, i in enumerate(idx)]
        assert None not in entries
        used.update(entries)
    assert used == {0, 1, 2}  # a random entry per image and batch
    # ssl_prob < 1: the images not picked stay clean, the picked ones take one of their own entries
    half = _bank(x, ssl_bank=2, n_masks=2, ssl_prob=0.5)
    idx = torch.arange(10).repeat(4)
    out = half(x[idx], idx)
    clean = torch.tensor([torch.equal(out[r], x[i]) for r, i in enumerate(idx)])
    banked = torch.tensor([_bank_entry_of(out[r], half.bank, int(i)) is not None for r, i in enumerate(idx)])
    assert bool((clean ^ banked).all()) and 0 < int(clean.sum()) < len(idx)
    never = _bank(x, ssl_bank=2, ssl_prob=0.0)  # nothing reconstructed: no bank is built
    assert torch.equal(never(x[:3], torch.arange(3)), x[:3])


def test_matrix_completion_fresh_mask_hook_keeps_its_cpu_stream_and_picks_without_a_subset() -> None:
    x = load_dataset("mnist5k", "train", image_size=8, subset=12).images
    cfg = {"n_masks": 2, "ssl_bank": 0}
    always = MatrixCompletion(MatrixCompletionConfig(**cfg)).ssl_hooks(None, _ctx(3, "pretrain-availability"))
    assert always.prepare is None and always.batch_transform is not None
    # on a CPU the masks are the stream this hook always drew: a CPU generator seeded with the cell's seed
    expected = me_net(x, keep_prob=0.8, n_masks=2, generator=torch.Generator().manual_seed(3))
    assert torch.equal(always.batch_transform(x), expected)
    # ssl_prob < 1: every image is reconstructed and the picked ones kept (no data-dependent subset)
    half = MatrixCompletion(MatrixCompletionConfig(**cfg, ssl_prob=0.5)).ssl_hooks(None, _ctx(3, "pretrain-availability"))
    out = half.batch_transform(x)
    gen = torch.Generator().manual_seed(3)
    pick = torch.rand(len(x), generator=gen) < 0.5
    reconstructed = me_net(x, keep_prob=0.8, n_masks=2, generator=gen)
    assert 0 < int(pick.sum()) < len(x)
    assert torch.equal(out[pick], reconstructed[pick]) and torch.equal(out[~pick], x[~pick])
    never = MatrixCompletion(MatrixCompletionConfig(**cfg, ssl_prob=0.0)).ssl_hooks(None, _ctx(3, "pretrain-availability"))
    assert never.batch_transform is None and never.prepare is None  # nothing is ever reconstructed


def test_matrix_completion_bank_hook_pretrains_with_and_without_canvases() -> None:
    images = load_dataset("mnist5k", "train", image_size=16, subset=48).images
    canvases = torch.cat([images[:8], images[8:16]], dim=3)  # injected images of another shape
    recipe = SSLRecipe(method="simclr", backbone="cnn_micro", epochs=1, batch_size=16,
                       method_settings={"proj_hidden": 32, "proj_dim": 16})
    mc = MatrixCompletion(MatrixCompletionConfig(ssl_bank=2, n_masks=2, ssl_prob=0.5))
    for extra in (None, canvases):
        a = train_ssl(recipe, images, seed=0, device=CPU, hooks=mc.ssl_hooks(recipe, _ctx(track="pretrain-availability")),
                      extra_images=extra).backbone.state_dict()
        b = train_ssl(recipe, images, seed=0, device=CPU, hooks=mc.ssl_hooks(recipe, _ctx(track="pretrain-availability")),
                      extra_images=extra).backbone.state_dict()
        assert all(torch.equal(a[k], b[k]) and torch.isfinite(a[k].float()).all() for k in a)


# ------------------------------------------------------------------------------------ fine-tuning
def test_finetune_changes_weights_and_improves_probe(mnist) -> None:
    train, test, extractor = mnist
    ft = Finetune(FinetuneConfig(clean_size=600, epochs=10, lr=0.05))
    repaired = ft.repair_encoder(extractor, train.images, train.labels, _ctx())
    before = torch.cat([p.flatten() for p in extractor.backbone.parameters()])
    after = torch.cat([p.flatten() for p in repaired.backbone.parameters()])
    assert not torch.allclose(before, after)
    assert all(not p.requires_grad for p in repaired.parameters())
    assert torch.equal(before, torch.cat([p.flatten() for p in extractor.backbone.parameters()]))  # not mutated

    def probe(ext) -> float:
        tr, te = ext(train.images), ext(test.images)
        return head_accuracy(fit_linear_head(tr, train.labels, 10, l2=1e-3), te, test.labels)

    assert probe(repaired) > probe(extractor) + 0.02


def _planted_encoder(train, targets: torch.Tensor, target_class: int, *, epochs: int = 8):
    """An encoder that maps the targets into the target class while staying accurate on clean data: the end
    state a successful PoisonedEncoder aims for, planted directly (a SimCLR encoder trained further with
    cross-entropy on clean batches that always contain the targets labeled ``target_class``). The attack
    itself does not get there at this scale; see tests/test_pretrain_tracks.py."""
    recipe = SSLRecipe(method="simclr", backbone="cnn_micro", epochs=10, batch_size=256, lr=0.002,
                       augment={"crop_scale_min": 0.3, "flip": False, "rotation_degrees": 10, "jitter_strength": 0.0},
                       method_settings={"proj_hidden": 128, "proj_dim": 64})
    backbone = train_ssl(recipe, train.images, seed=0, device=CPU).backbone.train()
    head = torch.nn.Linear(backbone.feature_dim, 10)
    optimizer = torch.optim.Adam([*backbone.parameters(), *head.parameters()], lr=2e-3)
    targets = targets.repeat(4, 1, 1, 1)  # weight the targets in every batch
    wrong = torch.full((len(targets),), target_class)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for idx in torch.randperm(len(train.images), generator=gen).split(128):
            x, y = torch.cat([train.images[idx], targets]), torch.cat([train.labels[idx], wrong])
            loss = F.cross_entropy(head(backbone(x)), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return make_extractor(backbone.eval(), train.images, CPU)


@pytest.mark.heavy
def test_finetune_lowers_a_poisoned_encoders_attack_success_rate() -> None:
    train = load_dataset("mnist5k", "train", image_size=16, subset=1000, subset_seed=0)
    test = load_dataset("mnist5k", "test", image_size=16)
    target_class, gen = 3, torch.Generator().manual_seed(0)
    others = torch.nonzero(test.labels != target_class).flatten()
    targets = test.images[others[torch.randperm(len(others), generator=gen)[:5]]]  # never in the head's data
    poisoned = _planted_encoder(train, targets, target_class)

    def asr(extractor) -> float:
        head = fit_linear_head(extractor(train.images), train.labels, 10, l2=1e-3)
        return float((head.predict(extractor(targets)) == target_class).float().mean())

    before = asr(poisoned)
    repaired = Finetune(FinetuneConfig(clean_size=1000, epochs=5)).repair_encoder(poisoned, train.images,
                                                                                  train.labels, _ctx())
    after = asr(repaired)  # measured: 5/5 targets in the target class before, 1/5 after
    assert before >= 0.6, before  # the planted encoder really is poisoned
    assert after <= before - 0.4, (before, after)


# ------------------------------------------------------------------------------------ DP-SGD
def test_dp_sgd_clips_per_sample_gradients(mnist) -> None:
    train, _, extractor = mnist
    lr, clip = 0.1, 1e-3
    dp = DPSGD(DPSGDConfig(noise_multiplier=0.0, max_grad_norm=clip, epochs=1, lr=lr, momentum=0.0, batch_size=600))
    feats = _view(extractor).features(train.images) * 100  # large features → large raw gradients
    head = dp.fit_head(_view(extractor), train.images, train.labels, HeadSpec(10, 0.0), _ctx(), features=feats)
    # one step (one Poisson batch of expected size N) from zero: ‖update‖ ≤ lr·C·|B|/E[|B|]
    update = torch.cat([head.weight.flatten(), head.bias])
    assert 0 < update.norm().item() <= lr * clip * 1.2
    raw = torch.autograd.functional.jacobian(
        lambda w: F.cross_entropy(feats @ w.T, train.labels), torch.zeros(10, feats.shape[1]))
    assert raw.norm().item() > 10 * clip  # without clipping the step would be far larger


def test_dp_sgd_noise_and_model_share_the_context_device(mnist) -> None:
    from defenses.dp_sgd import _noise_generator

    train, _, extractor = mnist
    ctx = _ctx()
    assert _noise_generator(ctx).device == ctx.device  # one code path for CPU and CUDA
    dp = DPSGD(DPSGDConfig(epochs=1, batch_size=200))
    head = dp.fit_head(_view(extractor), train.images, train.labels, HeadSpec(10, 1e-3), ctx)
    assert head.weight.device == ctx.device and head.bias.device == ctx.device


def test_dp_sgd_epsilon_matches_opacus_rdp_accountant(mnist) -> None:
    from opacus.accountants import RDPAccountant

    train, _, extractor = mnist
    dp = DPSGD(DPSGDConfig(noise_multiplier=1.1, max_grad_norm=1.0, epochs=3, batch_size=100))
    dp.fit_head(_view(extractor), train.images, train.labels, HeadSpec(10, 1e-3), _ctx())
    n = len(train)
    q, steps = 100 / n, 3 * math.ceil(n / 100)
    accountant = RDPAccountant()
    accountant.history = [(1.1, q, steps)]
    assert dp.last_steps == steps and dp.last_delta == pytest.approx(1 / n)
    assert dp.last_epsilon == pytest.approx(accountant.get_epsilon(delta=1 / n), rel=1e-9)


def test_dp_sgd_byol_group_norm_pretraining_records_epsilon() -> None:
    images = load_dataset("mnist5k", "train", image_size=16, subset=128).images
    recipe = SSLRecipe(method="byol", backbone="cnn_micro", norm="group", epochs=1, batch_size=64,
                       method_settings={"proj_hidden": 32, "proj_dim": 16})
    dp = DPSGD(DPSGDConfig(noise_multiplier=1.0, max_grad_norm=1.0))
    train_ssl(recipe, images, seed=0, device=CPU, hooks=dp.ssl_hooks(recipe, _ctx(track="pretrain-availability")))
    assert dp.last_steps == 2 and math.isfinite(dp.last_epsilon) and dp.last_epsilon > 0
    with pytest.raises(ValueError, match="group"):
        dp.ssl_hooks(SSLRecipe(method="byol", backbone="cnn_micro"), _ctx())
    assert "couples" in dp.unsupported(track="pretrain-availability", encoder={"method": "simclr"}, victim="convex")
    assert "queue" in dp.unsupported(track="pretrain-targeted", encoder={"method": "mocov2"}, victim="convex")
    assert dp.unsupported(track="downstream", encoder={"method": "simclr"}, victim="convex") is None


# ------------------------------------------------------------------------------------ validation
def test_bad_defense_settings_are_rejected_with_the_field_named(tiny_suite_dict, write_suite) -> None:
    raw = tiny_suite_dict
    raw["tracks"]["downstream"]["defenses"] = [
        {"id": "matrix_completion", "name": "mc0", "settings": {"keep_prob": 0.0}},
        {"id": "matrix_completion", "name": "mc2", "settings": {"keep_prob": 1.5}},
        {"id": "dp_sgd", "name": "dp-s", "settings": {"noise_multiplier": -1.0}},
        {"id": "dp_sgd", "name": "dp-c", "settings": {"max_grad_norm": -0.5}},
        {"id": "finetune", "settings": {"clean_size": 0}},
    ]
    with pytest.raises(SuiteError) as info:
        load_suite(str(write_suite(raw)))
    text = "\n".join(info.value.problems)
    assert text.count("keep_prob") == 2 and "noise_multiplier" in text and "max_grad_norm" in text
    assert "clean_size" in text


def test_defended_combinations_expand_and_unsupported_ones_are_skipped(tiny_suite_dict, write_suite) -> None:
    raw = tiny_suite_dict
    raw["encoders"]["methods"] = ["simclr", "byol"]
    raw["tracks"]["downstream"]["defenses"] = ["none", "adversarial_training", "matrix_completion", "finetune", "dp_sgd"]
    cells, skipped = expand_cells(load_suite(str(write_suite(raw))))
    assert {c.defense.id for c in cells} == {"none", "adversarial_training", "matrix_completion", "finetune", "dp_sgd"}
    assert not skipped
    assert DPSGD().unsupported(track="pretrain-availability", encoder={"method": "mocov2"}, victim="convex")


@pytest.mark.slow
def test_defended_downstream_cells_report_cost_and_epsilon(tiny_suite_dict, write_suite, tmp_path) -> None:
    import json

    from benchmark.runner import run_suite

    raw = copy.deepcopy(tiny_suite_dict)
    raw["scenarios"] = raw["scenarios"][:1]
    raw["tracks"]["downstream"]["attacks"] = ["none", "label_flip"]
    raw["tracks"]["downstream"]["defenses"] = [
        "none", {"id": "adversarial_training", "settings": {"epochs": 1, "steps": 2}},
        {"id": "matrix_completion", "settings": {"n_masks": 2}},
        {"id": "finetune", "settings": {"clean_size": 100, "epochs": 1}}, {"id": "dp_sgd", "settings": {"epochs": 2}}]
    suite = load_suite(str(write_suite(raw)))
    run_suite(suite, results_dir=tmp_path / "results", cache_dir=tmp_path / "cache", device="cpu")
    records = [json.loads(p.read_text()) for p in (tmp_path / "results").rglob("*.json")]
    assert len(records) == 10 and all(r["status"] == "ok" for r in records)
    for r in records:
        m = r["metrics"]
        if r["cell"]["defense"]["id"] != "none":
            assert m["defense_cost"] == pytest.approx(m["clean_accuracy"] - m["defended_clean_accuracy"])
            assert m["accuracy_drop"] == pytest.approx(m["clean_accuracy"] - m["poisoned_accuracy"])
        if r["cell"]["defense"]["id"] == "dp_sgd":
            assert math.isfinite(m["privacy_epsilon"]) and m["privacy_epsilon"] > 0
