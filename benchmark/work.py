"""The work a suite's cells do, for ``plan --estimate`` (:mod:`benchmark.estimate` prices it).

A track counts its cells' work in :meth:`benchmark.tracks.base.Track.add_work` with the pieces here: a
:class:`WorkList` of distinct artifacts (cells that share a clean encoder, a poison, a victim share its cost,
exactly as the artifact cache shares it), the sizes of a cell's data (:func:`cell_sizes`), and the cost models of
its attacks and defenses (``cost``, declared on the plugin's class: :mod:`benchmark.cost_models`).
"""

from __future__ import annotations

import copy
import os
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from benchmark.cost_models import CostModelError, check_defense_keys, evaluate, names_for
from benchmark.cost_models import work as declared_work
from benchmark.data import load_dataset
from benchmark.plugins import EXTRA_PLUGINS_ENV, catalogue, resolved_config
from benchmark.pretrain import SSLRecipe
from benchmark.tracks.base import Cell
from benchmark.utils import canonical_json, config_hash

FORWARD_PASS = 1.0 / 3.0  # a forward alone, in passes

# Images per split and channels of the torchvision datasets (train, test, channels); the embedded and
# file-based sources are counted by loading them (they are small and local).
TORCHVISION_SHAPES: dict[str, tuple[int, int, int]] = {
    "cifar10": (50_000, 10_000, 3), "cifar100": (50_000, 10_000, 3), "svhn": (73_257, 26_032, 3),
    "stl10": (5_000, 8_000, 3),
}


# ------------------------------------------------------------------------------------------------ work
@dataclass(frozen=True)
class Work:
    """One distinct piece of compute: ``key`` identifies it (two cells needing the same key share it)."""

    track: str
    kind: str  # "clean encoder" | "victim encoder" | "poison" | "supervised victim" | "defense" | "features"
    key: str
    backbone: str
    image_size: int
    channels: int
    ssl_epochs: Mapping[str, float] = field(default_factory=dict)  # SSL method → image-epochs
    passes: float = 0.0
    svds: float = 0.0  # matrix-completion reconstructions (image × mask), at image_size; priced per channel


@dataclass(frozen=True)
class Sizes:
    pretrain: int
    train: int
    test: int
    channels: int  # of the pre-training images (the encoder's input)


@cache
def dataset_shape(name: str) -> tuple[int, int, int]:
    """(train images, test images, channels) of a dataset, without loading the torchvision ones."""
    if name in TORCHVISION_SHAPES:
        return TORCHVISION_SHAPES[name]

    train = load_dataset(name, "train")
    return len(train), len(load_dataset(name, "test")), int(train.images.shape[1])


def cell_sizes(cell: Cell) -> Sizes:
    data, scenario = cell.data, cell.scenario
    pre, down = dataset_shape(scenario.pretrain), dataset_shape(scenario.downstream)

    def subset(n: int, count: int | None) -> int:
        return n if count is None else min(count, n)

    return Sizes(pretrain=subset(pre[0], data.pretrain_subset), train=subset(down[0], data.downstream_subset),
                 test=down[1], channels=pre[2])


def image_size(cell: Cell) -> int:
    """The side of the cell's images (a dataset's native size when the suite sets none, taken as 32)."""
    return cell.data.image_size or 32


# ------------------------------------------------------------------------------------------------ cost models
@dataclass(frozen=True)
class Context:
    """What a cost model may read about the cell it prices."""

    cell: Cell
    sizes: Sizes
    config: Mapping[str, Any]  # the method's resolved config
    n_poison: int = 0  # poisons added (downstream), images perturbed (availability) or injected (targeted)

    @property
    def ssl_batch(self) -> int:
        return self.cell.encoder.batch_size




# ------------------------------------------------------------------------------------------------ per cell
class WorkList:
    """The distinct work of a suite, built cell by cell."""

    def __init__(self) -> None:
        self.items: dict[str, Work] = {}
        self.unmodelled: set[str] = set()
        self.cells_per_track: dict[str, int] = defaultdict(int)

    def add(self, cell: Cell, sizes: Sizes, kind: str, identity: Any, **amounts: Any) -> None:
        key = config_hash({"kind": kind, "identity": identity})
        if key in self.items:
            return
        self.items[key] = Work(track=cell.track, kind=kind, key=key, backbone=backbone_id(cell.encoder),
                               image_size=image_size(cell), channels=sizes.channels, **amounts)


def backbone_id(encoder: SSLRecipe) -> str:
    return f"{encoder.backbone}{'+cifar_stem' if encoder.cifar_stem else ''}"


_RESOLVED: dict[tuple[str, str, str, str], dict[str, Any]] = {}


def resolved(kind: str, entry: Any) -> dict[str, Any]:
    """The entry's resolved config (a copy: a cost model may not change what the next cell reads)."""
    key = (_plugin_set(), kind, entry.id, canonical_json(entry.settings))
    if key not in _RESOLVED:
        _RESOLVED[key] = dict(resolved_config(kind, entry.id, entry.settings).config or {})
    return copy.deepcopy(_RESOLVED[key])


def _plugin_set() -> str:
    """What the plugins described in this process depend on that can change while it runs (the extra
    modules): the key of the lookups here, asked for once per cell and plugin (thousands in the full tier)."""
    return os.environ.get(EXTRA_PLUGINS_ENV, "")


@cache
def _declared_cost(plugin_set: str, kind: str, plugin_id: str) -> Mapping[str, Any]:
    return catalogue().get(kind, plugin_id).cost  # the class's ``cost`` (inherited), described by its process


def encoder_identity(cell: Cell) -> dict[str, Any]:
    return {k: cell.spec[k] for k in ("encoder", "data", "seed")} | {"pretrain": cell.scenario.pretrain}


def amounts(cost: Mapping[str, float], method: str) -> dict[str, Any]:
    out: dict[str, Any] = {"passes": float(cost.get("passes", 0.0)), "svds": float(cost.get("svds", 0.0))}
    if cost.get("ssl_epochs"):
        out["ssl_epochs"] = {method: float(cost["ssl_epochs"])}
    return out


def add_clean_encoder(work: WorkList, cell: Cell, sizes: Sizes) -> dict[str, Any]:
    identity = encoder_identity(cell)
    work.add(cell, sizes, "clean encoder", identity, ssl_epochs={cell.encoder.method: cell.encoder.epochs * sizes.pretrain})
    work.add(cell, sizes, "features", {"encoder": identity, "downstream": cell.scenario.downstream},
             passes=FORWARD_PASS * (sizes.train + sizes.test + sizes.pretrain))
    return identity


def _declared(kind: str, plugin_id: str, track: str) -> tuple[bool, Any]:
    """(whether the plugin declares a cost model, its entry for ``track``; None where the track is absent)."""

    declared = _declared_cost(_plugin_set(), kind, plugin_id)
    return bool(declared), copy.deepcopy(declared.get(track))


def names(ctx: Context, n: float = 0.0) -> dict[str, Any]:

    return names_for(ctx.config, n_poison=ctx.n_poison, n=n, train=ctx.sizes.train, test=ctx.sizes.test,
                     pretrain=ctx.sizes.pretrain, ssl_batch=ctx.ssl_batch, encoder_epochs=ctx.cell.encoder.epochs)


def not_estimated(kind: str, plugin_id: str, track: str, why: str = "") -> str:
    return (f"{kind} {plugin_id} ({track}): {why or 'no cost model'}; declare `cost` on its class "
            "(benchmark/cost_models.py shows the form)")


def attack_cost(work: WorkList, cell: Cell, ctx: Context) -> dict[str, float]:
    """The attack's cost model for the cell's track (its class's ``cost``); {} and the attack listed as not
    estimated without one."""

    try:
        has, declared = _declared("attack", cell.attack.id, cell.track)
        if declared is not None:
            return declared_work(declared, names(ctx), f"attack {cell.attack.id} cost for {cell.track}")
    except CostModelError as exc:
        work.unmodelled.add(not_estimated("attack", cell.attack.id, cell.track, str(exc)))
        return {}
    work.unmodelled.add(not_estimated("attack", cell.attack.id, cell.track,
                                       "its `cost` names no entry for this track" if has else ""))
    return {}


@dataclass(frozen=True)
class DefenseCost:
    """What one defense adds, by stage: in downstream cells a head trained on n images (``head``), a
    transform of n images (``data``), a post-hoc repair (``repair``); in pre-training cells a factor on the
    victim's SSL training and on the supervised victim's, SVDs over the pre-training images, a repair."""

    head: Callable[[Context, float], dict[str, float]] | None = None
    data: Callable[[Context, float], dict[str, float]] | None = None
    repair: Callable[[Context, float], dict[str, float]] | None = None
    ssl_factor: Callable[[Context], float] = lambda ctx: 1.0
    supervised_factor: Callable[[Context], float] = lambda ctx: 1.0
    svds: Callable[[Context, int, int], float] = lambda ctx, epochs, n: 0.0
    supervised_svds: Callable[[Context, int], float] = lambda ctx, n: 0.0


def declared_stage(declared: Mapping[str, Any], name: str, where: str) -> Callable[[Context, float], dict[str, float]] | None:
    """A defense's declared work for stage ``name`` on n images, or None where it declares none."""
    if name not in declared:
        return None
    return lambda ctx, n: declared_work(declared[name], names(ctx, n), f"{where}, {name}")


def declared_factor(declared: Mapping[str, Any], name: str) -> Callable[[Context], float]:
    """A defense's declared factor on a victim's training (1 where it declares none)."""
    return lambda ctx: evaluate(declared.get(name, 1), names(ctx))


@dataclass(frozen=True)
class DefenseCosts:
    """How a track prices a defense: the keys its ``cost`` entry for the track may have, and the model built
    from that entry."""

    keys: tuple[str, ...]
    declared: Callable[[str, Mapping[str, Any], str], DefenseCost]


def defense_cost(work: WorkList, cell: Cell, costs: DefenseCosts) -> DefenseCost | None:
    """The defense's cost model for the cell's track (its class's ``cost``); None (and the cell's defense listed as
    not estimated) without one."""

    did = cell.defense.id
    try:
        has, declared = _declared("defense", did, cell.track)
        if declared is not None:
            where = f"defense {did} cost for {cell.track}"
            check_defense_keys(declared, costs.keys, cell.track, where)
            return costs.declared(did, declared, where)
    except CostModelError as exc:
        work.unmodelled.add(not_estimated("defense", did, cell.track, str(exc)))
        return None
    work.unmodelled.add(not_estimated("defense", did, cell.track, "its `cost` names no entry for this track" if has else ""))
    return None


def sum_costs(*costs: Mapping[str, float]) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for cost in costs:
        for k, v in cost.items():
            out[k] += v
    return dict(out)


