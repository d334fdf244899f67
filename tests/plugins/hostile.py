"""Misbehaving attacks and defenses, one rule broken each (issue: harness integrity). The harness must end
each one's cell as ``invalid``, ``error`` or ``timeout``, keep it off the board, and leave every other
cell's numbers exactly as in a run without it. They run only in plugin processes."""

from __future__ import annotations

import gc
import multiprocessing
import os
import random
import time
from dataclasses import dataclass
from typing import Any

import torch

import benchmark.pretrain
import benchmark.probe
from benchmark.api import (
    AvailabilityPoison,
    Defense,
    DefenseContext,
    DownstreamAttack,
    DownstreamPoison,
    MethodConfig,
    PretrainAvailabilityAttack,
    PretrainTargetedAttack,
    TargetedPoison,
    register_attack,
    register_defense,
)

N_TEST = 1000  # mnist5k's test split: a tensor with this many images would be test data

if multiprocessing.parent_process() is not None:  # patch the engine at import, as a hostile module would
    benchmark.probe.fit_linear_head = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("patched"))  # type: ignore[assignment]
    benchmark.pretrain.train_ssl = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("patched"))  # type: ignore[assignment]


@dataclass(frozen=True, kw_only=True)
class NoConfig(MethodConfig):
    pass


ALL_TRACKS = ("downstream", "pretrain-availability", "pretrain-targeted")


class Hostile(DownstreamAttack, PretrainAvailabilityAttack, PretrainTargetedAttack):
    """Every track's craft method calls :meth:`misbehave` with the track's context."""

    Config = NoConfig

    def misbehave(self, ctx: Any) -> Any:
        raise NotImplementedError

    def craft_downstream(self, ctx: Any) -> DownstreamPoison:
        return self.misbehave(ctx)

    def craft_availability(self, ctx: Any) -> AvailabilityPoison:
        return self.misbehave(ctx)

    def craft_targeted(self, ctx: Any) -> TargetedPoison:
        return self.misbehave(ctx)


def honest(ctx: Any) -> Any:
    """A valid poison for the context's track (label flips / tiny noise / one stitched image)."""
    if hasattr(ctx, "train_labels"):
        n = max(1, ctx.budget)
        return DownstreamPoison(images=ctx.train_images[:n].clone(), labels=(ctx.train_labels[:n] + 1) % ctx.num_classes,
                                base_indices=torch.arange(n))
    if ctx.epsilon < 1:
        idx = torch.arange(ctx.budget)
        return AvailabilityPoison(images=ctx.images[idx].clone(), indices=idx)
    return TargetedPoison(images=ctx.images[:1].clone(), target_images=ctx.images[1:3].clone(), target_class=0)


@register_attack
class TestDataReader(Hostile):
    """Looks for test data and cache paths through everything it was handed and everything in memory."""

    id = "hostile_test_reader"

    def misbehave(self, ctx: Any) -> Any:
        found = sorted({tuple(o.shape) for o in gc.get_objects() if isinstance(o, torch.Tensor) and o.dim() == 4
                        and o.shape[0] == N_TEST})
        paths = sorted({str(v) for v in _reachable(ctx) if isinstance(v, (str, os.PathLike))
                        and ("poisonbench-cache" in str(v) or "pytest-of" in str(v))})
        raise RuntimeError(f"test tensors found: {found}; cache paths found: {paths}")


def _reachable(root: Any, limit: int = 200000) -> list[Any]:
    """Everything reachable from ``root`` that the harness handed over: the walk does not enter modules
    (their globals are what any process importing them has: ``sys.path``, the environment, the import
    system's directory listings, which name the working directory's files) nor a FileFinder. Entering
    them made the walk reach the whole interpreter, cut at its limit in an order that varies between
    runs (sets order by address): the test then failed now and then on what no harness handed over."""
    import importlib.machinery
    import sys
    import types

    module_dicts = {id(vars(m)) for m in list(sys.modules.values()) if m is not None}
    seen, stack, out = set(), [root], []
    while stack and len(out) < limit:
        obj = stack.pop()
        if (id(obj) in seen or id(obj) in module_dicts or isinstance(obj, (types.ModuleType, importlib.machinery.FileFinder))):
            continue
        seen.add(id(obj))
        out.append(obj)
        stack += [r for r in gc.get_referents(obj) if not isinstance(r, type)]
    return out


@register_attack
class Mutator(Hostile):
    """Edits its inputs in place: the training images, the extractor's standardisation buffers."""

    id = "hostile_mutator"

    def misbehave(self, ctx: Any) -> Any:
        if hasattr(ctx, "extractor"):
            ctx.extractor.module.mean.mul_(3.0)
            ctx.train_images[:5] = 0.0
            ctx.train_labels[:5] = 0
        else:
            ctx.images[:5] = 0.0
        return honest(ctx)


@register_attack
class SubclassedPoison(Hostile):
    """Shows the validator one thing and the victim another (a poison subclass with a changing field)."""

    id = "hostile_subclass"

    def misbehave(self, ctx: Any) -> Any:
        poison = honest(ctx)

        class Sneaky(type(poison)):  # type: ignore[misc]
            reads = 0

            def __getattribute__(self, name: str) -> Any:
                value = super().__getattribute__(name)
                if name in ("labels", "images"):
                    type(self).reads += 1
                    if type(self).reads > 2 and isinstance(value, torch.Tensor):
                        return torch.cat([value] * 10)
                return value

        return Sneaky(**{k: getattr(poison, k) for k in poison.__dataclass_fields__})


@register_attack
class Sleeper(Hostile):
    id = "hostile_sleeper"

    def misbehave(self, ctx: Any) -> Any:
        time.sleep(600)
        return honest(ctx)


@register_attack
class Exiter(Hostile):
    id = "hostile_exit"

    def misbehave(self, ctx: Any) -> Any:
        raise SystemExit(0)


@register_attack
class Killer(Hostile):
    """Ends its own process without a word."""

    id = "hostile_os_exit"

    def misbehave(self, ctx: Any) -> Any:
        os._exit(0)


@register_attack
class Interrupter(Hostile):
    id = "hostile_interrupt"

    def misbehave(self, ctx: Any) -> Any:
        raise KeyboardInterrupt


@register_attack
class RandomStateChanger(Hostile):
    """Reseeds every global generator, then returns a poison over its budget."""

    id = "hostile_rng"

    def misbehave(self, ctx: Any) -> Any:
        torch.manual_seed(1234)
        random.seed(1234)
        poison = honest(ctx)
        if isinstance(poison, TargetedPoison):
            return TargetedPoison(images=ctx.images[: ctx.budget + 1].clone(), target_images=poison.target_images, target_class=0)
        if isinstance(poison, AvailabilityPoison):
            return AvailabilityPoison(images=(poison.images + 0.5).clamp(0, 1), indices=poison.indices)
        n = ctx.budget + 1
        return DownstreamPoison(images=ctx.train_images[:n].clone(), labels=ctx.train_labels[:n].clone())


@register_attack
class EnginePatcher(Hostile):
    """Its module patched ``fit_linear_head`` and ``train_ssl`` at import; it reports whether that took."""

    id = "hostile_patcher"

    def misbehave(self, ctx: Any) -> Any:
        raise RuntimeError(f"engine patched in the plugin process: {benchmark.probe.fit_linear_head.__name__}")


@register_attack
class TrivialTargets(PretrainTargetedAttack):
    """Targets the clean victim already puts in the target class, and injects nothing."""

    id = "hostile_trivial_targets"
    Config = NoConfig

    def craft_targeted(self, ctx: Any) -> TargetedPoison:
        targets = ctx.target_pool_images[ctx.target_pool_labels == 1][:20].clone()
        return TargetedPoison(images=ctx.images[:0].clone(), target_images=targets, target_class=1)


@register_defense
class DefenseExiter(Defense):
    id = "hostile_defense_exit"
    stage = "training"
    tracks = ("downstream",)
    Config = NoConfig

    def fit_head(self, extractor: Any, images: torch.Tensor, labels: torch.Tensor, head: Any, ctx: DefenseContext) -> Any:
        raise SystemExit(3)


@register_defense
class DefenseSleeper(Defense):
    id = "hostile_defense_sleep"
    stage = "data"
    tracks = ALL_TRACKS
    Config = NoConfig

    def transform_images(self, images: torch.Tensor, ctx: DefenseContext) -> torch.Tensor:
        time.sleep(600)
        return images


@register_defense
class DefenseWrongType(Defense):
    id = "hostile_defense_wrong"
    stage = "posthoc"
    tracks = ALL_TRACKS
    Config = NoConfig

    def repair_encoder(self, extractor: Any, images: torch.Tensor, labels: torch.Tensor, ctx: DefenseContext) -> Any:
        return "not an encoder"
