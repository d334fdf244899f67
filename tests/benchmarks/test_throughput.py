"""Throughput benchmarks (pytest-benchmark), side by side in one run, with their ratios printed:

* one SimCLR epoch of the project's pipeline (the whole image tensor on the device, kornia views drawn per
  batch, bf16 + channels_last on CUDA) against the per-sample pipeline of lightly's and the CP authors'
  scripts (a ``DataLoader`` whose workers apply PIL/torchvision transforms to each image) on the same
  backbone, batch size, data and loss;
* Contrastive Poisoning generation, images per second (one CP-C round is model + noise batches);
* matrix completion (ME-Net), images per second.

``make bench`` runs them (``pytest tests/benchmarks --benchmark-enable``). On a CPU the backbone is
``cnn_micro`` at 32 px; on CUDA, ResNet-18 with the CIFAR stem (the ``full`` suites'), so the GPU run gives
seconds per CIFAR-10-sized SimCLR epoch. ``extra_info`` records images/s, the 50k-image epoch time and the
achieved TFLOP/s (the SSL step's FLOPs counted by ``torch.utils.flop_counter``), with the fraction of the
GPU's dense bf16 peak where the GPU is in ``benchmark.estimate.BF16_DENSE_PEAK_TFLOPS``.
"""

from __future__ import annotations

import functools
import os
import time

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from attacks.cp import ContrastivePoisoning
from benchmark.api import DirectoryCheckpoints, PretrainAttackContext
from benchmark.estimate import bf16_peak_tflops, device_name, ssl_step_flops, utilisation_text
from benchmark.pretrain import SSLRecipe, train_ssl
from benchmark.utils import resolve_device
from defenses.matrix_completion import MatrixCompletion

pytestmark = pytest.mark.slow
DEVICE = resolve_device("auto")
CUDA = DEVICE.type == "cuda"
DEVICE_NAME = device_name(DEVICE)
BACKBONE = {"backbone": "resnet18", "cifar_stem": True} if CUDA else {"backbone": "cnn_micro"}
N_IMAGES = 8192 if CUDA else 1024
BATCH = 512 if CUDA else 256
AUGMENT = {"crop_scale_min": 0.2, "flip": True, "jitter_strength": 0.4, "jitter_prob": 0.8, "grayscale_prob": 0.2}
SECONDS: dict[str, float] = {}


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """CIFAR-shaped data (3 × 32 × 32 in [0, 1]): smooth random images, identical for both pipelines."""
    g = torch.Generator().manual_seed(0)
    low = torch.rand(N_IMAGES, 3, 8, 8, generator=g)
    return torch.nn.functional.interpolate(low, size=32, mode="bilinear", align_corners=False).clamp(0, 1)


def recipe() -> SSLRecipe:
    return SSLRecipe(method="simclr", epochs=1, batch_size=BATCH, optimizer="sgd", lr=0.5, momentum=0.9,
                     weight_decay=1e-4, augment=AUGMENT, method_settings={"temperature": 0.5}, **BACKBONE)


class PILViews(Dataset):
    """The per-sample pipeline: each item is converted to PIL and transformed twice (two views)."""

    def __init__(self, data: torch.Tensor) -> None:
        self.images = [transforms.functional.to_pil_image(x) for x in data]
        self.transform = transforms.Compose([
            transforms.RandomResizedCrop(32, scale=(0.2, 1.0)), transforms.RandomHorizontalFlip(),
            transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            transforms.RandomGrayscale(p=0.2), transforms.ToTensor()])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image: Image.Image = self.images[i]
        return self.transform(image), self.transform(image)


def per_sample_epoch(data: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = recipe().build_model(3).to(DEVICE).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-4)
    workers = min(8, os.cpu_count() or 1)
    loader = DataLoader(PILViews(data), batch_size=BATCH, shuffle=True, drop_last=True, num_workers=workers,
                        pin_memory=CUDA, persistent_workers=False)
    for v1, v2 in loader:
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=CUDA):
            loss = model.loss(v1.to(DEVICE, non_blocking=True), v2.to(DEVICE, non_blocking=True))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    _sync()


def _sync() -> None:
    if CUDA:
        torch.cuda.synchronize(DEVICE)


@functools.cache
def _step_flops_per_image() -> float:
    return ssl_step_flops(recipe(), 32)


def _record(benchmark, key: str, images_per_epoch: int) -> None:
    seconds = benchmark.stats.stats.median
    SECONDS[key] = seconds
    flops = _step_flops_per_image() * images_per_epoch / seconds
    benchmark.extra_info["images_per_second"] = images_per_epoch / seconds
    benchmark.extra_info["seconds_per_50k_epoch"] = seconds * 50_000 / images_per_epoch
    benchmark.extra_info["tflops"] = flops / 1e12
    peak = bf16_peak_tflops(DEVICE_NAME)
    if peak is not None:
        benchmark.extra_info["bf16_peak_fraction"] = flops / (peak * 1e12)
    print(f"\nSimCLR epoch, {key} pipeline ({BACKBONE['backbone']}, {DEVICE_NAME}): "
          f"{benchmark.extra_info['seconds_per_50k_epoch']:.2f} s per 50k images, {utilisation_text(flops, DEVICE_NAME)}")


def test_simclr_epoch_project_pipeline(benchmark, images) -> None:
    train_ssl(recipe(), images[:BATCH], seed=0, device=DEVICE, desc="warm-up")

    def epoch() -> None:
        train_ssl(recipe(), images, seed=0, device=DEVICE, desc="SimCLR epoch (project)")
        _sync()

    benchmark.pedantic(epoch, rounds=3, iterations=1)
    _record(benchmark, "project", len(images))


def test_simclr_epoch_per_sample_pipeline(benchmark, images) -> None:
    benchmark.pedantic(lambda: per_sample_epoch(images), rounds=2, iterations=1)
    _record(benchmark, "per_sample", len(images) // BATCH * BATCH)
    if "project" in SECONDS:
        ratio = SECONDS["per_sample"] / SECONDS["project"]
        benchmark.extra_info["per_sample_over_project"] = ratio
        print(f"\nSimCLR epoch ({BACKBONE['backbone']}, {DEVICE}): project {SECONDS['project']:.2f} s, "
              f"per-sample DataLoader + PIL {SECONDS['per_sample']:.2f} s: {ratio:.1f}x")


def test_cp_generation_images_per_second(benchmark, images, tmp_path) -> None:
    data = images[:2 * BATCH]
    labels = torch.arange(len(data)) % 10
    config = ContrastivePoisoning.Config(mode="classwise", rounds=2, model_steps=2, noise_batches=2, pgd_steps=1)

    def generate() -> None:
        ctx = PretrainAttackContext(images=data, labels=labels, num_classes=10, epsilon=8 / 255, poison_fraction=1.0,
                                    budget=len(data), ssl=recipe(), generator=torch.Generator().manual_seed(0),
                                    device=DEVICE, checkpoints=DirectoryCheckpoints(tmp_path / f"ckpt{time.time_ns()}"),
                                    cached=lambda kind, config, build: build())
        ContrastivePoisoning(config).craft_availability(ctx)
        _sync()

    benchmark.pedantic(generate, rounds=2, iterations=1)
    # every round: model_steps + noise_batches × pgd_steps batches of BATCH images (two views each)
    processed = config.rounds * (config.model_steps + config.noise_batches * config.pgd_steps) * min(BATCH, len(data))
    benchmark.extra_info["images_per_second"] = processed / benchmark.stats.stats.median
    print(f"\nCP-C generation: {processed / benchmark.stats.stats.median:,.0f} images/s")


def test_matrix_completion_images_per_second(benchmark, images) -> None:
    defense = MatrixCompletion(MatrixCompletion.Config())  # ME-Net's settings: 10 masks, keep 0.8
    data = images[:1024].to(DEVICE)

    def reconstruct() -> None:
        defense.reconstruct(data, torch.Generator().manual_seed(0))
        _sync()

    benchmark.pedantic(reconstruct, rounds=3, iterations=1)
    rate = len(data) / benchmark.stats.stats.median
    benchmark.extra_info["images_per_second"] = rate
    print(f"\nmatrix completion (ME-Net, {defense.config.n_masks} masks): {rate:,.0f} images/s")
