"""What a suite costs before it runs: ``python -m benchmark plan --suite S --estimate``.

The estimate counts the *work* a suite does, once per distinct artifact (cells that share a clean
encoder, a poison, a victim or a repaired encoder share its cost, exactly as the artifact cache shares
it), and prices it with a :class:`DeviceProfile`: measured seconds per image per SSL epoch of each
method on a reference backbone and image size, and seconds per matrix-completion SVD. The work is
counted in three units:

* **SSL image-epochs** of a method (one image, two augmented views, forward + backward, plus the
  momentum branch of MoCo v2 / BYOL): pre-training, Contrastive Poisoning's model and noise steps.
* **passes**: one forward + backward of one image through the backbone (a supervised step, one PGD step
  through the encoder, a fine-tuning step); a forward alone counts 1/3 pass. A pass is priced at half a
  SimCLR image-epoch (SimCLR's image-epoch is two passes).
* **SVDs**: one masked-image reconstruction of matrix completion (one SVD per image, channel and mask).

Other backbones and image sizes are priced by the ratio of their forward FLOPs to the profile's reference
(``torch.utils.flop_counter``), which is exact for the arithmetic and optimistic for tiny networks that do
not fill a GPU: calibrate (``--calibrate``) on the machine at hand for the backbones a suite uses.
Linear probes, L-BFGS heads and feature-space optimisation (GradPC, feature-space GC, the TGDA follower)
are not counted: they cost seconds where the counted work costs hours. Iterative attacks are counted at
their maximum number of rounds (UE's early stop can only make them cheaper).

Each track counts its cells' work (:meth:`benchmark.tracks.base.Track.add_work`, with :mod:`benchmark.work`).
Every plugin declares its own cost model as a class attribute ``cost`` (:mod:`benchmark.cost_models` explains
the form: arithmetic over its config fields and the cell's sizes, read from the module's source without importing
it), each mirroring the method's own loops; the engine keeps no table of them. A plugin without one is listed as
*not estimated* rather than guessed, with the attribute to declare.
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from benchmark.backbones import create_backbone
from benchmark.pretrain import train_ssl
from benchmark.suite import PROFILES_FILE, Suite, expand_cells, profile_names
from benchmark.tracks.base import Cell, load_tracks
from benchmark.utils import resolve_device
from benchmark.work import Work, WorkList, backbone_id, cell_sizes, image_size


def suite_work(suite: Suite, cells: Iterable[Cell] | None = None) -> WorkList:
    work = WorkList()
    tracks = load_tracks()
    for cell in cells if cells is not None else expand_cells(suite)[0]:
        work.cells_per_track[cell.track] += 1
        tracks[cell.track].add_work(work, cell, cell_sizes(cell))
    return work


# ------------------------------------------------------------------------------------------------ pricing
@dataclass(frozen=True)
class DeviceProfile:
    """Measured costs on one device: at each "backbone@size", seconds per image per SSL epoch of each
    method and (``pass``, optional) per forward + backward of one image; and seconds per matrix-completion
    SVD of one ``svd_size`` × ``svd_size`` matrix."""

    name: str
    source: str
    ssl_image_epoch: Mapping[str, Mapping[str, float]]  # "backbone@size" → method → seconds
    svd_seconds: float
    svd_size: int = 32
    measured: bool = True

    def reference(self, backbone: str, size: int) -> tuple[Mapping[str, float], float]:
        """The measured entry used for (backbone, size) and the FLOP ratio that scales it."""
        exact = f"{backbone}@{size}"
        if exact in self.ssl_image_epoch:
            return self.ssl_image_epoch[exact], 1.0
        ref = next(iter(self.ssl_image_epoch))
        ref_backbone, ref_size = ref.rsplit("@", 1)
        return self.ssl_image_epoch[ref], forward_flops(backbone, size) / forward_flops(ref_backbone, int(ref_size))

    def seconds(self, item: Work) -> float:
        measured, scale = self.reference(item.backbone, item.image_size)
        simclr = measured.get("simclr") or min(v for k, v in measured.items() if k != "pass")
        one_pass = measured.get("pass", simclr / 2)  # unmeasured: half a SimCLR image-epoch
        ssl = sum(measured.get(m, simclr) * n for m, n in item.ssl_epochs.items())
        svd = self.svd_seconds * (item.image_size / self.svd_size) ** 3 * item.svds * item.channels
        return scale * (ssl + one_pass * item.passes) + svd


@cache
def forward_flops(backbone: str, size: int) -> float:
    """FLOPs of one forward of one 3-channel ``size`` image through ``backbone`` (``name[+cifar_stem]``)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    name, _, stem = backbone.partition("+")
    model = create_backbone(name, in_chans=3, cifar_stem=bool(stem)).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    return float(max(counter.get_total_flops(), 1))


def ssl_step_flops(recipe: Any, image_size: int, channels: int = 3, batch: int = 4) -> float:
    """FLOPs of one SSL training step per image (two views, forward + backward, and the momentum branch of
    MoCo v2 / BYOL), counted by ``torch.utils.flop_counter`` on a CPU batch of ``batch`` images: what a
    device must compute per image-epoch, against which its measured throughput is a fraction of peak."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.random.fork_rng(devices=[]):  # the caller's random stream is left as it was
        torch.manual_seed(0)
        model = recipe.build_model(channels).train()
    views = torch.rand(2, batch, channels, image_size, image_size, generator=torch.Generator().manual_seed(0))
    counter = FlopCounterMode(display=False)
    with counter:
        model.loss(views[0], views[1]).backward()
    return counter.get_total_flops() / batch


# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) from the vendors' data sheets, by a substring of
# ``torch.cuda.get_device_name``; the first match wins, so the longer names come first.
BF16_DENSE_PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4), ("GH200", 989.4), ("H200", 989.4),
    ("B200", 2250.0), ("A100", 312.0), ("A6000", 154.8), ("L40S", 362.1), ("L40", 181.0), ("L4", 121.0),
    ("A10", 125.0), ("RTX 4090", 165.2), ("RTX 3090", 71.0), ("V100", 125.0),  # V100: fp16 (no bf16 units)
)


def bf16_peak_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of a GPU named ``device_name`` (None where it is not in the table)."""
    return next((peak for key, peak in BF16_DENSE_PEAK_TFLOPS if key in device_name), None)


def device_name(device: Any) -> str:
    """The name the peak table is keyed by: CUDA's name for a GPU, "cpu (N threads)" for a CPU."""
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"


def utilisation_text(flops_per_second: float, device_name: str) -> str:
    """"123 TFLOP/s (12.4 % of the 989 TFLOP/s bf16 dense peak)" for a GPU of the table, else the rate alone."""
    text = f"{flops_per_second / 1e12:,.3g} TFLOP/s"
    peak = bf16_peak_tflops(device_name)
    if peak is not None:
        text += f" ({100 * flops_per_second / (peak * 1e12):.1f} % of the {peak:,.0f} TFLOP/s bf16 dense peak)"
    return text


def load_profiles(path: Path = PROFILES_FILE) -> dict[str, DeviceProfile]:
    raw = yaml.safe_load(path.read_text())
    return {name: DeviceProfile(name=name, source=p["source"], ssl_image_epoch=p["ssl_image_epoch"],
                                svd_seconds=float(p["svd_seconds"]), svd_size=int(p.get("svd_size", 32)),
                                measured=bool(p.get("measured", True)))
            for name, p in raw["profiles"].items()}


def calibrate(suite: Suite, device: str = "auto", *, images: int = 512) -> DeviceProfile:
    """Measure the profile on this machine for every (backbone, size, method) the suite pre-trains: the
    per-epoch time of ``train_ssl`` on ``images`` random images (a 3-epoch run minus a 1-epoch run, after
    a warm-up), a forward + backward of the backbone, and batched 32 × 32 SVDs. Seconds, not minutes."""
    import torch

    dev = resolve_device(device)
    name = device_name(dev)
    table: dict[str, dict[str, float]] = {}
    achieved: list[str] = []
    for cell in expand_cells(suite)[0]:
        enc, size = cell.encoder, image_size(cell)
        entry = table.setdefault(f"{backbone_id(enc)}@{size}", {})
        if enc.method in entry:
            continue
        recipe = dataclasses.replace(enc, epochs=3, warmup_epochs=0)
        x = torch.rand(max(images, 2 * recipe.batch_size), 3, size, size, generator=torch.Generator().manual_seed(0))
        model = train_ssl(recipe, x[: recipe.batch_size], seed=0, device=dev, epochs=1, desc="calibrate (warm-up)")
        # the difference of a 3- and a 1-epoch run: the per-epoch cost without the loop's set-up
        seconds = [_timed(lambda e=e: train_ssl(recipe, x, seed=0, device=dev, model=model, epochs=e,  # noqa: B023 (timed now)
                                               desc=f"calibrate {enc.method}"), dev) for e in (1, 3)]  # noqa: B023
        entry[enc.method] = max(seconds[1] - seconds[0], 1e-12) / (2 * len(x))
        rate = ssl_step_flops(recipe, size) / entry[enc.method]
        achieved.append(f"{enc.method} {backbone_id(enc)}@{size}: {utilisation_text(rate, name)}")
        if "pass" not in entry:
            entry["pass"] = _time_pass(model, x, dev)
    mats = torch.rand(1024, 32, 32, device=dev)
    torch.linalg.svd(mats[:64])
    svd = _timed(lambda: torch.linalg.svd(mats), dev) / len(mats)
    return DeviceProfile(name=f"calibrated: {name}", source=f"measured now on {name}; achieved " + "; ".join(achieved),
                         ssl_image_epoch=table, svd_seconds=svd)


def _time_pass(model: Any, images: Any, device: Any, batch: int = 256) -> float:
    """Seconds per image of a forward + backward of the SSL model's backbone (supervised-style step)."""

    backbone = getattr(model, "backbone", model).to(device).train()
    x = images[:batch].to(device)

    def step() -> None:
        backbone(x).float().pow(2).mean().backward()

    step()  # warm-up
    return _timed(lambda: [step() for _ in range(3)], device) / (3 * len(x))


def _timed(run: Callable[[], Any], device: Any) -> float:
    _sync(device)
    start = time.perf_counter()
    run()
    _sync(device)
    return time.perf_counter() - start


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------------------------ report
@dataclass(frozen=True)
class Estimate:
    profile: DeviceProfile
    hours: Mapping[tuple[str, str], float]  # (track, kind) → device-hours
    counts: Mapping[tuple[str, str], int]
    longest_hours: float  # the most expensive single artifact (a lower bound on the wall time on any N)
    unmodelled: tuple[str, ...]
    cells: Mapping[str, int]

    @property
    def total(self) -> float:
        return sum(self.hours.values())

    def wall_hours(self, gpus: int) -> float:
        """Wall time on ``gpus`` devices with perfect packing, never below the longest artifact."""
        return max(self.total / max(1, gpus), self.longest_hours)


def estimate(suite: Suite, profile: DeviceProfile, cells: Iterable[Cell] | None = None) -> Estimate:
    work = suite_work(suite, cells)
    hours: dict[tuple[str, str], float] = defaultdict(float)
    counts: dict[tuple[str, str], int] = defaultdict(int)
    longest = 0.0
    for item in work.items.values():
        h = profile.seconds(item) / 3600
        hours[(item.track, item.kind)] += h
        counts[(item.track, item.kind)] += 1
        longest = max(longest, h)
    return Estimate(profile, dict(hours), dict(counts), longest, tuple(sorted(work.unmodelled)),
                    dict(work.cells_per_track))


def render(est: Estimate, suite: Suite, gpus: Iterable[int] = (1, 8)) -> str:
    from tabulate import tabulate

    p = est.profile
    lines = [f"estimate for suite {suite.name} (tier {suite.tier}) on {p.name}"
             f"{'' if p.measured else ' (PROJECTED, not measured)'}", f"  source: {p.source}"]
    rows = [[track, kind, est.counts[(track, kind)], f"{h:,.3g}" if h < 100 else f"{h:,.0f}"]
            for (track, kind), h in sorted(est.hours.items(), key=lambda kv: (kv[0][0], -kv[1]))]
    lines.append(tabulate(rows, headers=["track", "work", "distinct", "device-hours"], tablefmt="github"))
    per_track = defaultdict(float)
    for (track, _), h in est.hours.items():
        per_track[track] += h
    lines.append("")
    for track, h in sorted(per_track.items()):
        lines.append(f"  {track}: {est.cells.get(track, 0)} cells, {hours_text(h)}")
    lines.append(f"  total: {hours_text(est.total)} of device time; " + ", ".join(
        f"{n} device{'s' if n > 1 else ''}: {hours_text(est.wall_hours(n))} wall" for n in gpus)
        + f" (the longest single artifact takes {hours_text(est.longest_hours)})")
    if est.unmodelled:
        lines.append("  not estimated: " + "; ".join(est.unmodelled))
    return "\n".join(lines)


def compute_problems(est: Estimate, limit_hours: float | None) -> list[str]:
    if limit_hours is None or est.total <= limit_hours:
        return []
    return [f"the estimate ({est.total:,.1f} device-hours on {est.profile.name}) exceeds the suite's compute limit "
            f"({limit_hours:,.1f} h)"]


def hours_text(hours: float) -> str:
    return f"{hours * 60:.1f} min" if hours < 1 else f"{hours:,.1f} h"


__all__ = ["DeviceProfile", "Estimate", "Work", "bf16_peak_tflops", "calibrate", "device_name", "estimate",
           "load_profiles", "profile_names", "render", "ssl_step_flops", "suite_work", "utilisation_text"]

