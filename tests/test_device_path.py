"""The device path: augmentation parameters, PGD starts, ME-Net bank draws and fresh masks come from
generators on the compute device, CP's batches reach it once per round and pre-training with injected
images gets its split batches once per epoch (no per-step host copy or sync), and on a CPU every number is
what it was before."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import kornia.augmentation as K
import pytest
import torch
import torch.nn.functional as F

import attacks.cp as cp_module
from benchmark.api import DefenseContext, DirectoryCheckpoints, PretrainAttackContext
from benchmark.augment import AugmentConfig, build_augmentation, place_augmentation
from benchmark.pretrain import SSLRecipe, SSLTrainingHooks, _split_batches, train_ssl
from benchmark.training import shuffled_batches
from defenses.adversarial_training import _attack_generator, device_generator, pgd
from defenses.matrix_completion import MatrixCompletion, MatrixCompletionConfig

CPU = torch.device("cpu")
CONFIGS = [AugmentConfig(), AugmentConfig(rotation_degrees=10, flip=False)]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _ops(module: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in module.modules() if isinstance(m, K.base._BasicAugmentationBase)]


def _view(module: torch.nn.Module, images: torch.Tensor, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    return module(images)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("channels", [1, 3])
def test_placed_augmentation_draws_the_same_views_on_cpu(config: AugmentConfig, channels: int) -> None:
    images = torch.rand(16, channels, 20, 20, generator=torch.Generator().manual_seed(0))
    build = lambda: build_augmentation(config, image_size=16, channels=channels)
    placed = place_augmentation(build(), CPU)
    assert all(op.device == CPU and op.dtype == torch.float32 for op in _ops(placed))  # the rng stays on the CPU
    for before in (build(), build().to(CPU)):  # what the call sites did before: nothing, or .to(device)
        assert torch.equal(_view(placed, images, 3), _view(before, images, 3))
    x = images.clone().requires_grad_(True)  # still differentiable (CP's gradients reach δ through it)
    (grad,) = torch.autograd.grad(_view(placed, x, 4).sum(), x)
    assert grad.abs().sum() > 0


def test_pgd_start_comes_from_a_generator_on_the_data_device_with_the_cpu_stream_unchanged() -> None:
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    eps = 0.1
    start = pgd(lambda z: z.sum(), x, epsilon=eps, step_size=0.02, steps=0, generator=device_generator(CPU, 5))
    old_noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(5)) * 2 - 1  # the CPU-drawn start
    assert torch.equal(start, x + ((x + old_noise * eps).clamp(0, 1) - x))
    ctx = DefenseContext(track="downstream", num_classes=10, seed=3, generator=torch.Generator().manual_seed(3), device=CPU)
    assert _attack_generator(ctx).device == CPU
    assert torch.equal(torch.rand(4, generator=_attack_generator(ctx)),
                       torch.rand(4, generator=torch.Generator().manual_seed(3 ^ 0x5EED)))
    batches = shuffled_batches(10, 4, torch.Generator().manual_seed(1), device=CPU)  # adversarial training's batches
    assert torch.equal(torch.cat(batches), torch.randperm(10, generator=torch.Generator().manual_seed(1)))


def _cp_batches_one_by_one(pool: torch.Tensor, count: int, batch: int, generator: torch.Generator) -> list[torch.Tensor]:
    """CP's batches as its generation drew them before they were stacked (one host copy per step)."""
    if count == 0:
        order = pool[torch.randperm(len(pool), generator=generator)]
        return [order[i * batch : (i + 1) * batch] for i in range(max(1, len(pool) // batch))]
    return [pool[torch.randperm(len(pool), generator=generator)[:batch]] for _ in range(count)]


@pytest.mark.parametrize(("n", "count", "batch"), [(100, 0, 32), (100, 3, 32), (20, 0, 32), (20, 2, 32)])
def test_cp_stacks_the_batches_it_always_drew(n: int, count: int, batch: int) -> None:
    pool = torch.randperm(200, generator=torch.Generator().manual_seed(1))[:n]
    stacked = cp_module._batches(pool, count, batch, torch.Generator().manual_seed(5))
    before = _cp_batches_one_by_one(pool, count, batch, torch.Generator().manual_seed(5))
    assert stacked.dim() == 2 and len(stacked) == len(before)
    assert all(torch.equal(row, b) for row, b in zip(stacked, before))


def test_a_cp_round_hands_each_loop_one_tensor_of_batches_on_the_device(tmp_path: Path) -> None:
    images = torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    recipe = SSLRecipe(method="simclr", backbone="cnn_micro", epochs=1, batch_size=16,
                       method_settings={"proj_hidden": 32, "proj_dim": 16})
    ctx = PretrainAttackContext(images=images, labels=torch.arange(40) % 4, num_classes=4, epsilon=8 / 255,
                                poison_fraction=0.5, budget=20, ssl=recipe, generator=torch.Generator().manual_seed(0),
                                device=CPU, checkpoints=DirectoryCheckpoints(tmp_path), cached=lambda k, c, build: build())
    config = cp_module.CPConfig(mode="classwise", rounds=1, model_steps=2, noise_batches=3, pgd_steps=1)
    run = cp_module._Generation(ctx, config, torch.arange(0, 40, 2), base_seed=7)
    state = run.new_state(None)
    seen: dict[str, torch.Tensor] = {}
    for loop in ("_model_steps", "_noise_steps"):
        real = getattr(run, loop)

        def spy(state_: cp_module._State, batches: torch.Tensor, _loop: str = loop, _real=real) -> None:
            seen[_loop] = batches
            _real(state_, batches)

        setattr(run, loop, spy)
    run.run_round(state)
    assert seen["_model_steps"].shape == (2, 16) and seen["_noise_steps"].shape == (3, 16)
    assert all(b.device == run.device for b in seen.values())
    assert set(seen["_noise_steps"].flatten().tolist()) <= set(range(0, 40, 2))  # noise steps: poisoned images only


@pytest.mark.parametrize(("n", "m", "batch"), [(10, 5, 4), (30, 2, 8), (3, 20, 5), (12, 0, 4), (0, 9, 3)])
def test_pretraining_with_injected_images_splits_each_step_as_it_always_did(n: int, m: int, batch: int) -> None:
    """The epoch's batches split on the host (main-set rows, then injected rows offset by −N) are the
    per-step device split the loop did before: same rows, same order, including empty pieces."""
    order = torch.randperm(n + m, generator=torch.Generator().manual_seed(n * 31 + m))
    steps = max(1, (n + m) // batch)
    split = _split_batches(order, n, batch, steps, CPU)
    assert len(split) == steps
    for b, (main, extra) in enumerate(split):
        idx = order[b * batch : (b + 1) * batch]
        assert torch.equal(main, idx[idx < n]) and torch.equal(extra, idx[idx >= n] - n)


# ------------------------------------------------------------------------------------ on a GPU
@pytest.mark.gpu
@cuda
def test_placed_augmentation_draws_its_parameters_on_the_gpu() -> None:
    device = torch.device("cuda")
    placed = place_augmentation(build_augmentation(AugmentConfig(), image_size=16, channels=3), device)
    assert all(op.device.type == "cuda" for op in _ops(placed))
    out = _view(placed, torch.rand(8, 3, 20, 20, device=device), 0)
    assert out.device.type == "cuda"
    assert _ops(placed)[0]._params["src"].device.type == "cuda"  # the crop boxes were drawn on the GPU


@pytest.mark.gpu
@cuda
def test_pgd_and_the_me_net_bank_run_without_host_syncs_on_the_gpu() -> None:
    device = torch.device("cuda")
    x = torch.rand(16, 3, 8, 8, device=device)
    w, y = torch.randn(192, 10, device=device), torch.randint(0, 10, (16,), device=device)
    mc = MatrixCompletion(MatrixCompletionConfig(ssl_bank=2, n_masks=2, ssl_prob=0.5))
    ctx = DefenseContext(track="pretrain-availability", num_classes=10, seed=0, generator=torch.Generator(), device=device)
    bank = mc.ssl_hooks(None, ctx).prepare(x)  # built once (its masks come from the CPU: not per step)
    idx = torch.arange(8, device=device)
    generator = device_generator(device, 0)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        adv = pgd(lambda z: F.cross_entropy(z.flatten(1) @ w, y), x, epsilon=0.03, step_size=0.01, steps=3,
                  generator=generator)
        out = bank(x[idx], idx)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert adv.device.type == "cuda" and out.device.type == "cuda"


@pytest.mark.gpu
@cuda
def test_me_net_fresh_masks_are_drawn_and_picked_without_host_syncs_on_the_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import defenses.matrix_completion as mc_module

    # the hook's own work only: the batched SVD is cuSOLVER's (stubbed: mask, rescale, clip, average)
    monkeypatch.setattr(mc_module, "usvt", lambda observed, p_hat, rank_fraction: observed / p_hat[:, None, None])
    device = torch.device("cuda")
    x = torch.rand(16, 3, 8, 8, device=device)
    ctx = DefenseContext(track="pretrain-availability", num_classes=10, seed=0, generator=torch.Generator(), device=device)
    hooks = [MatrixCompletion(MatrixCompletionConfig(n_masks=2, ssl_prob=p)).ssl_hooks(None, ctx) for p in (1.0, 0.5)]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        outs = [h.batch_transform(x) for h in hooks]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(o.device.type == "cuda" and o.shape == x.shape for o in outs)


@pytest.mark.gpu
@cuda
def test_pretraining_with_injected_images_steps_without_host_syncs_on_the_gpu() -> None:
    """From the first step on (model and data placed), two epochs over main and injected images of another
    size run with CUDA's sync debugger set to raise."""
    device = torch.device("cuda")
    recipe = SSLRecipe(method="simclr", backbone="cnn_micro", epochs=2, batch_size=8,
                       method_settings={"proj_hidden": 32, "proj_dim": 16})
    images = torch.rand(24, 1, 16, 16, device=device)
    extra = torch.rand(6, 1, 16, 32, device=device)
    steps = []

    def loss_fn(model, x, v1, v2):
        if not steps:
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
        steps.append(len(v1))
        return model.loss(v1, v2)

    try:
        train_ssl(recipe, images, seed=0, device=device, hooks=SSLTrainingHooks(loss_fn=loss_fn), extra_images=extra)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert steps == [8] * 6


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_gpu_check_refuses_to_run_without_a_gpu(tmp_path: Path) -> None:
    """`make gpu-check` says why it stops, before it writes anything, where there is no GPU."""
    script = Path(__file__).resolve().parents[1] / ".ci" / "gpu-check"
    out = subprocess.run([str(script), str(tmp_path / "out")], capture_output=True, text=True,
                         env={**os.environ, "PY": sys.executable}, check=False)
    assert out.returncode == 2 and "no CUDA device" in out.stderr
    assert not (tmp_path / "out").exists()
