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

A plugin declares its own cost model as a class attribute ``cost`` (:mod:`benchmark.cost_models`
explains the form: arithmetic over its config fields and the cell's sizes, read from the module's source
without importing it); the built-in methods' models are the functions below, each mirroring one
method's loops (see the module it names). A plugin with neither is listed as *not estimated* rather
than guessed, with the attribute to declare.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from benchmark.api import poison_count
from benchmark.backbones import create_backbone
from benchmark.cost_models import CostModelError, check_defense_track, declared_cost, evaluate, names_for
from benchmark.cost_models import work as declared_work
from benchmark.data import load_dataset
from benchmark.plugins import catalogue, resolved_config
from benchmark.pretrain import SSLRecipe, train_ssl
from benchmark.suite import NO_DEFENSE, PROFILES_FILE, Cell, Suite, expand_cells, profile_names
from benchmark.utils import config_hash, resolve_device

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


def cell_sizes(spec: Mapping[str, Any]) -> Sizes:
    data, scenario = spec["data"], spec["scenario"]
    pre, down = dataset_shape(scenario["pretrain"]), dataset_shape(scenario["downstream"])

    def subset(n: int, key: str) -> int:
        return n if data.get(key) is None else min(int(data[key]), n)

    return Sizes(pretrain=subset(pre[0], "pretrain_subset"), train=subset(down[0], "downstream_subset"),
                 test=down[1], channels=pre[2])


# ------------------------------------------------------------------------------------------------ cost models
@dataclass(frozen=True)
class Context:
    """What a cost model may read about the cell it prices."""

    cell: Cell
    sizes: Sizes
    config: Mapping[str, Any]  # the method's resolved config
    n_poison: int = 0  # poisons added (downstream), images perturbed (availability) or injected (targeted)

    @property
    def spec(self) -> Mapping[str, Any]:
        return self.cell.spec

    @property
    def ssl_batch(self) -> int:
        return int(self.spec["encoder"].get("batch_size", 256))


CostModel = Callable[[Context], dict[str, float]]  # → {"passes": …, "svds": …, "ssl_epochs": …}


def _gc(ctx: Context) -> dict[str, float]:  # attacks/gc.py: every step one pass over the poison set
    return {"passes": ctx.config["steps"] * ctx.n_poison}


def _tgda(ctx: Context) -> dict[str, float]:  # attacks/tgda.py: each leader step a total gradient (double backward)
    return {"passes": 2 * ctx.config["epochs"] * ctx.n_poison}


def _ue_downstream(ctx: Context) -> dict[str, float]:  # attacks/ue.py: PGD through the frozen encoder each round
    return {"passes": ctx.config["max_rounds"] * ctx.config["pgd_steps"] * ctx.n_poison}


def _ue_availability(ctx: Context) -> dict[str, float]:
    """attacks/ue.py: each round, surrogate steps and PGD over the perturbed images (the surrogate is the
    recipe's backbone; one poison for every SSL method of that backbone: its ``recipe_fields``)."""
    cfg = ctx.config
    return {"passes": cfg["max_rounds"] * (cfg["model_steps"] * cfg["batch_size"] + cfg["pgd_steps"] * ctx.n_poison)}


def _ft_decoder(ctx: Context) -> dict[str, float]:  # attacks/ft_decoder.py: a decoder trained on the clean features
    return {"passes": ctx.config["decoder_epochs"] * ctx.sizes.train * 0.5}  # a decoder ≈ half a backbone pass


def _ft_matching(ctx: Context) -> dict[str, float]:  # attacks/ft_feature_matching.py: pixels matched to ζ
    return {"passes": ctx.config["match_steps"] * ctx.n_poison}


def _cp_round(cfg: Mapping[str, Any], n: int, n_poison: int, batch: int) -> float:
    """SSL image-epochs of one CP round (attacks/cp.py): model batches over every image + noise batches ×
    PGD steps over the perturbed ones; a count of 0 batches is one whole epoch (the samplewise schedule)."""
    model = n if cfg["model_steps"] == 0 else cfg["model_steps"] * batch
    noise = n_poison if cfg["noise_batches"] == 0 else cfg["noise_batches"] * batch
    return float(model + noise * cfg["pgd_steps"])


def _cp(ctx: Context) -> dict[str, float]:
    """CP-S starts from a CP-C poison of ``init_rounds`` rounds on the same schedule (cached apart)."""
    cfg, n = ctx.config, ctx.sizes.pretrain
    batch = min(cfg.get("batch_size") or ctx.ssl_batch, n)
    epochs = cfg["rounds"] * _cp_round(cfg, n, ctx.n_poison, batch)
    if cfg["mode"] == "samplewise" and cfg.get("init_from") == "classwise":
        epochs += (cfg.get("init_rounds") or cfg["rounds"]) * _cp_round(cfg, n, ctx.n_poison, batch)
    return {"ssl_epochs": epochs}


def _zero(ctx: Context) -> dict[str, float]:
    return {}


ATTACK_COSTS: dict[tuple[str, str], CostModel] = {
    ("downstream", "label_flip"): _zero, ("downstream", "random_noise"): _zero,
    ("downstream", "gc"): _gc, ("downstream", "gc_unclipped"): _gc, ("downstream", "tgda"): _tgda,
    ("downstream", "ue"): _ue_downstream, ("downstream", "ft_feature_space"): _zero,
    ("downstream", "ft_decoder"): _ft_decoder, ("downstream", "ft_feature_matching"): _ft_matching,
    ("pretrain-availability", "random_noise"): _zero, ("pretrain-availability", "ue"): _ue_availability,
    ("pretrain-availability", "cp"): _cp, ("pretrain-targeted", "poisoned_encoder"): _zero,
}


# Defenses, by the work they add: DEFENSE_HEAD_COSTS a downstream head trained on n images (clean +
# poisons), DEFENSE_DATA_COSTS a transform of n images, DEFENSE_REPAIR_COSTS a post-hoc repair of an
# encoder; in the pre-training tracks ssl_factor / supervised_factor scale the victims' training.
def _adv_head(ctx: Context, n: int) -> dict[str, float]:
    """defenses/adversarial_training.py: every epoch PGD through the encoder (``steps`` passes) and a
    forward of the adversarial batch; its same-schedule reference (ε = 0) is the forward alone."""
    cfg = ctx.config
    return {"passes": cfg["epochs"] * n * (cfg["steps"] + 2 * FORWARD_PASS)}


def _mc_data(ctx: Context, n: int) -> dict[str, float]:  # defenses/matrix_completion.py: one SVD per image and mask
    return {"svds": ctx.config["n_masks"] * n}


def _mc_pretrain(cfg: Mapping[str, Any], epochs: int, n: int) -> dict[str, float]:
    """defenses/matrix_completion.py in pre-training: fresh masks for every batch image every epoch (with
    ``ssl_prob`` < 1 the unpicked reconstructions are discarded: no data-dependent subset, no host sync), or
    (``ssl_bank`` k ≥ 1) k reconstructions of every image, once before training; none when ``ssl_prob`` is 0."""
    if cfg.get("ssl_prob", 1.0) <= 0:
        return {"svds": 0.0}
    bank = int(cfg.get("ssl_bank", 0))
    return {"svds": cfg["n_masks"] * (bank * n if bank > 0 else epochs * n)}


def _finetune_repair(ctx: Context, n: int) -> dict[str, float]:
    cfg = ctx.config
    return {"passes": cfg["epochs"] * min(cfg["clean_size"], ctx.sizes.train)}


DEFENSE_HEAD_COSTS: dict[str, Callable[[Context, int], dict[str, float]]] = {
    "adversarial_training": _adv_head, "dp_sgd": lambda ctx, n: {}, "matrix_completion": lambda ctx, n: {},
    "finetune": lambda ctx, n: {},
}
DEFENSE_DATA_COSTS: dict[str, Callable[[Context, int], dict[str, float]]] = {"matrix_completion": _mc_data}
DEFENSE_REPAIR_COSTS: dict[str, Callable[[Context, int], dict[str, float]]] = {"finetune": _finetune_repair}


def ssl_factor(defense_id: str, cfg: Mapping[str, Any]) -> float:
    """How many times an undefended pre-training a defended one costs (its SVDs are counted apart)."""
    if defense_id == "adversarial_training":
        return 1.0 + cfg["ssl_steps"]  # ACL: every PGD step a forward + backward of both views
    if defense_id == "dp_sgd":
        return 2.0  # per-sample gradients (Opacus hooks) ≈ twice a plain step
    return 1.0


def supervised_factor(defense_id: str, cfg: Mapping[str, Any]) -> float:
    if defense_id == "adversarial_training":
        return 1.0 + cfg["steps"]
    if defense_id == "dp_sgd":
        return 2.0
    return 1.0


# ------------------------------------------------------------------------------------------------ per cell
class WorkList:
    """The distinct work of a suite, built cell by cell."""

    def __init__(self) -> None:
        self.items: dict[str, Work] = {}
        self.unmodelled: set[str] = set()
        self.cells_per_track: dict[str, int] = defaultdict(int)

    def add(self, cell: Cell, sizes: Sizes, kind: str, identity: Any, **amounts: Any) -> None:
        spec = cell.spec
        key = config_hash({"kind": kind, "identity": identity})
        if key in self.items:
            return
        self.items[key] = Work(track=cell.track, kind=kind, key=key, backbone=_backbone_id(spec["encoder"]),
                               image_size=int(spec["data"]["image_size"] or 32), channels=sizes.channels, **amounts)


def _backbone_id(encoder: Mapping[str, Any]) -> str:
    return f"{encoder['backbone']}{'+cifar_stem' if encoder.get('cifar_stem') else ''}"


def _resolved(kind: str, entry: Any) -> dict[str, Any]:

    return dict(resolved_config(kind, entry.id, entry.settings).config or {})


def _encoder_identity(spec: Mapping[str, Any]) -> dict[str, Any]:
    return {k: spec[k] for k in ("encoder", "data", "seed")} | {"pretrain": spec["scenario"]["pretrain"]}


def _amounts(cost: Mapping[str, float], method: str) -> dict[str, Any]:
    out: dict[str, Any] = {"passes": float(cost.get("passes", 0.0)), "svds": float(cost.get("svds", 0.0))}
    if cost.get("ssl_epochs"):
        out["ssl_epochs"] = {method: float(cost["ssl_epochs"])}
    return out


def add_clean_encoder(work: WorkList, cell: Cell, sizes: Sizes) -> dict[str, Any]:
    spec, identity = cell.spec, _encoder_identity(cell.spec)
    method = spec["encoder"]["method"]
    work.add(cell, sizes, "clean encoder", identity, ssl_epochs={method: spec["encoder"]["epochs"] * sizes.pretrain})
    work.add(cell, sizes, "features", {"encoder": identity, "downstream": spec["scenario"]["downstream"]},
             passes=FORWARD_PASS * (sizes.train + sizes.test + sizes.pretrain))
    return identity


def _declared(kind: str, plugin_id: str, track: str) -> tuple[bool, Any]:
    """(whether the plugin declares a cost model, its entry for ``track``; None where the track is absent)."""

    declared = declared_cost(catalogue().get(kind, plugin_id).source, plugin_id)
    return declared is not None, (declared or {}).get(track)


def _names(ctx: Context, n: float = 0.0) -> dict[str, Any]:

    return names_for(ctx.config, n_poison=ctx.n_poison, n=n, train=ctx.sizes.train, test=ctx.sizes.test,
                     pretrain=ctx.sizes.pretrain, ssl_batch=ctx.ssl_batch, epochs=int(ctx.spec["encoder"]["epochs"]))


def _not_estimated(kind: str, plugin_id: str, track: str, why: str = "") -> str:
    return (f"{kind} {plugin_id} ({track}): {why or 'no cost model'}; declare `cost` on its class "
            "(benchmark/cost_models.py shows the form)")


def attack_cost(work: WorkList, cell: Cell, ctx: Context) -> dict[str, float]:
    """The attack's declared cost model for the cell's track, else its built-in one (:data:`ATTACK_COSTS`)."""

    try:
        has, declared = _declared("attack", cell.attack.id, cell.track)
        if declared is not None:
            return declared_work(declared, _names(ctx), f"attack {cell.attack.id} cost for {cell.track}")
    except CostModelError as exc:
        work.unmodelled.add(_not_estimated("attack", cell.attack.id, cell.track, str(exc)))
        return {}
    model = ATTACK_COSTS.get((cell.track, cell.attack.id))
    if model is None:
        work.unmodelled.add(_not_estimated("attack", cell.attack.id, cell.track,
                                           "its `cost` names no entry for this track" if has else ""))
        return {}
    return model(ctx)


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


def _builtin_defense(did: str, track: str) -> DefenseCost | None:
    if track == "downstream":
        if did not in DEFENSE_HEAD_COSTS:
            return None
        return DefenseCost(head=DEFENSE_HEAD_COSTS[did], data=DEFENSE_DATA_COSTS.get(did), repair=DEFENSE_REPAIR_COSTS.get(did))
    if did not in ("adversarial_training", "matrix_completion", "dp_sgd", *DEFENSE_REPAIR_COSTS):
        return None
    return DefenseCost(repair=DEFENSE_REPAIR_COSTS.get(did), ssl_factor=lambda ctx: ssl_factor(did, ctx.config),
                       supervised_factor=lambda ctx: supervised_factor(did, ctx.config),
                       svds=lambda ctx, epochs, n: _mc_pretrain(ctx.config, epochs, n)["svds"] if did == "matrix_completion" else 0.0,
                       supervised_svds=lambda ctx, n: ctx.config["n_masks"] * n if did == "matrix_completion" else 0.0)


def _declared_defense(did: str, track: str, declared: Mapping[str, Any]) -> DefenseCost:

    where = f"defense {did} cost for {track}"
    check_defense_track(declared, track, where)

    def stage(name: str) -> Callable[[Context, float], dict[str, float]] | None:
        if name not in declared:
            return None
        return lambda ctx, n: declared_work(declared[name], _names(ctx, n), f"{where}, {name}")

    def factor(name: str) -> Callable[[Context], float]:
        return lambda ctx: evaluate(declared.get(name, 1), _names(ctx))

    if track == "downstream":
        return DefenseCost(head=stage("head") or (lambda ctx, n: {}), data=stage("data"), repair=stage("repair"))
    return DefenseCost(repair=stage("repair"), ssl_factor=factor("ssl_factor"), supervised_factor=factor("supervised_factor"),
                       svds=lambda ctx, epochs, n: evaluate(declared.get("svds", 0), {**_names(ctx, n), "epochs": epochs}),
                       supervised_svds=lambda ctx, n: evaluate(declared.get("supervised_svds", 0), _names(ctx, n)))


def defense_cost(work: WorkList, cell: Cell) -> DefenseCost | None:
    """The defense's declared cost model for the cell's track, else its built-in one; None (and the cell's
    defense listed as not estimated) without either."""

    did = cell.defense.id
    try:
        has, declared = _declared("defense", did, cell.track)
        if declared is not None:
            return _declared_defense(did, cell.track, declared)
    except CostModelError as exc:
        work.unmodelled.add(_not_estimated("defense", did, cell.track, str(exc)))
        return None
    model = _builtin_defense(did, cell.track)
    if model is None:
        work.unmodelled.add(_not_estimated("defense", did, cell.track, "its `cost` names no entry for this track" if has else ""))
    return model


def add_downstream(work: WorkList, cell: Cell, sizes: Sizes) -> None:
    spec = cell.spec
    encoder = add_clean_encoder(work, cell, sizes)
    method = spec["encoder"]["method"]
    n_poison = poison_count(spec["budget"], sizes.train) if cell.attack.id != "none" else 0
    poison_identity = None
    if cell.attack.id != "none":
        poison_identity = {"encoder": encoder, "attack": [cell.attack.id, cell.attack.settings], "budget": spec["budget"],
                           "epsilon": spec.get("input_epsilon"), "scenario": spec["scenario"], "seed": spec["seed"]}
        ctx = Context(cell, sizes, _resolved("attack", cell.attack), n_poison)
        work.add(cell, sizes, "poison", poison_identity, **_amounts(attack_cost(work, cell, ctx), method))
        work.add(cell, sizes, "features", {"poison": poison_identity}, passes=FORWARD_PASS * n_poison)
    if cell.defense.id == NO_DEFENSE:
        return
    dctx = Context(cell, sizes, _resolved("defense", cell.defense), n_poison)
    model = defense_cost(work, cell)
    if model is None:
        return

    try:
        _defended_downstream(work, cell, sizes, dctx, model, encoder, poison_identity, method)
    except CostModelError as exc:
        work.unmodelled.add(_not_estimated("defense", cell.defense.id, cell.track, str(exc)))


def _defended_downstream(work: WorkList, cell: Cell, sizes: Sizes, dctx: Context, model: DefenseCost, encoder: Any,
                         poison_identity: Any, method: str) -> None:
    spec, n_poison = cell.spec, dctx.n_poison
    head = model.head or (lambda ctx, n: {})
    defense = [cell.defense.id, cell.defense.settings]
    clean_identity = {"encoder": encoder, "scenario": spec["scenario"], "defense": defense}
    # the defended clean head (with its same-schedule reference, for training-stage defenses) once per defense
    work.add(cell, sizes, "defense", clean_identity, **_amounts(head(dctx, sizes.train), method))
    if model.data is not None:
        work.add(cell, sizes, "defense", {"data": clean_identity},
                 **_amounts(model.data(dctx, sizes.train + sizes.test), method),)
        work.add(cell, sizes, "features", {"data": clean_identity}, passes=FORWARD_PASS * (sizes.train + sizes.test))
    if model.repair is not None:
        work.add(cell, sizes, "defense", {"repair": clean_identity}, **_amounts(model.repair(dctx, 0), method))
        work.add(cell, sizes, "features", {"repair": clean_identity}, passes=FORWARD_PASS * (sizes.train + sizes.test))
    if poison_identity is not None:
        n = sizes.train + n_poison
        extra = dict(head(dctx, n))
        if model.data is not None:
            extra = _sum(extra, model.data(dctx, n_poison), {"passes": FORWARD_PASS * n_poison})
        if model.repair is not None:
            extra = _sum(extra, {"passes": FORWARD_PASS * n_poison})
        work.add(cell, sizes, "defense", {"poison": poison_identity, "defense": defense}, **_amounts(extra, method))


def _sum(*costs: Mapping[str, float]) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for cost in costs:
        for k, v in cost.items():
            out[k] += v
    return dict(out)


def add_pretrain(work: WorkList, cell: Cell, sizes: Sizes) -> None:
    """Both pre-training tracks: the poison, the (defended) victim, its features, the supervised victim."""
    spec = cell.spec
    encoder = add_clean_encoder(work, cell, sizes)
    method, epochs = spec["encoder"]["method"], int(spec["encoder"]["epochs"])
    targeted = cell.track == "pretrain-targeted"
    n_attacked = poison_count(spec["budget"], sizes.pretrain) if cell.attack.id != "none" else 0  # perturbed or injected
    n_extra = n_attacked if targeted else 0
    poison = None
    if cell.attack.id != "none":
        poison = {"encoder": _attacker_encoder(cell, encoder), "attack": [cell.attack.id, cell.attack.settings],
                  "budget": spec["budget"], "epsilon": spec.get("epsilon"), "scenario": spec["scenario"]}
        ctx = Context(cell, sizes, _resolved("attack", cell.attack), n_attacked)
        work.add(cell, sizes, "poison", poison, **_amounts(attack_cost(work, cell, ctx), method))
    did = cell.defense.id
    n_pre = sizes.pretrain + n_extra
    features = FORWARD_PASS * (sizes.train + sizes.test + sizes.pretrain)
    victim = {"encoder": encoder, "poison": poison}
    if poison is not None:
        work.add(cell, sizes, "victim encoder", victim, ssl_epochs={method: epochs * n_pre})
        work.add(cell, sizes, "features", {"victim": victim}, passes=features)
    dctx = Context(cell, sizes, _resolved("defense", cell.defense), n_extra) if did != NO_DEFENSE else None
    model = defense_cost(work, cell) if dctx is not None else None

    try:
        if dctx is not None and model is not None:
            stage_cost = _defended_victim(dctx, model, epochs, n_pre)
            work.add(cell, sizes, "victim encoder" if model.repair is None else "defense",
                     {**victim, "defense": [did, cell.defense.settings]}, **_amounts(stage_cost, method))
            work.add(cell, sizes, "features", {**victim, "defense": [did, cell.defense.settings]}, passes=features)
        if not targeted and spec["victim"].get("supervised_eval"):
            _supervised_victims(work, cell, sizes, poison, dctx, model)
    except CostModelError as exc:
        work.unmodelled.add(_not_estimated("defense", did, cell.track, str(exc)))


def _supervised_victims(work: WorkList, cell: Cell, sizes: Sizes, poison: Any, dctx: Context | None,
                        model: DefenseCost | None) -> None:
    """The cross-evaluation's supervised victims: the clean one, and the poisoned and/or defended one."""
    spec, did = cell.spec, cell.defense.id
    sup_epochs = int(spec["victim"].get("supervised_epochs", 5))
    work.add(cell, sizes, "supervised victim", {"scenario": spec["scenario"], "data": spec["data"], "seed": spec["seed"],
                                         "backbone": spec["encoder"]["backbone"]},
             passes=sup_epochs * sizes.pretrain)
    if poison is None and dctx is None:
        return
    factor = model.supervised_factor(dctx) if dctx is not None and model is not None else 1.0
    svds = model.supervised_svds(dctx, sizes.pretrain) if dctx is not None and model is not None else 0.0
    work.add(cell, sizes, "supervised victim", {"poison": poison, "defense": [did, cell.defense.settings],
                                         "seed": spec["seed"], "backbone": spec["encoder"]["backbone"]},
             passes=factor * sup_epochs * sizes.pretrain, svds=svds)


def _attacker_encoder(cell: Cell, encoder: Any) -> Any:
    """What an availability poison is keyed on besides its own settings: the clean encoder's identity, or
    only the recipe fields the attack declares it reads (``Attack.recipe_fields``), as the track caches it."""

    fields = catalogue().get("attack", cell.attack.id).recipe_fields
    if cell.track != "pretrain-availability" or fields is None:
        return encoder
    spec = cell.spec
    return {"recipe": {k: spec["encoder"][k] for k in fields if k in spec["encoder"]}, "data": spec["data"],
            "seed": spec["seed"]}


def _defended_victim(dctx: Context, model: DefenseCost, epochs: int, n_pre: int) -> dict[str, float]:
    """The cost of a defended victim beyond the undefended one it replaces (or repairs)."""
    if model.repair is not None:  # post-hoc: the undefended victim (counted) repaired
        return model.repair(dctx, 0)
    cost: dict[str, float] = {"ssl_epochs": model.ssl_factor(dctx) * epochs * n_pre}
    svds = model.svds(dctx, epochs, n_pre)
    return cost | ({"svds": svds} if svds else {})


TRACK_WORK: dict[str, Callable[[WorkList, Cell, Sizes], None]] = {
    "downstream": add_downstream, "pretrain-availability": add_pretrain, "pretrain-targeted": add_pretrain,
}


def suite_work(suite: Suite, cells: Iterable[Cell] | None = None) -> WorkList:
    work = WorkList()
    for cell in cells if cells is not None else expand_cells(suite)[0]:
        work.cells_per_track[cell.track] += 1
        TRACK_WORK[cell.track](work, cell, cell_sizes(cell.spec))
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
        enc = cell.spec["encoder"]
        size = int(cell.spec["data"]["image_size"] or 32)
        entry = table.setdefault(f"{_backbone_id(enc)}@{size}", {})
        if enc["method"] in entry:
            continue
        recipe = SSLRecipe(**{**enc, "epochs": 3, "warmup_epochs": 0})
        x = torch.rand(max(images, 2 * recipe.batch_size), 3, size, size, generator=torch.Generator().manual_seed(0))
        model = train_ssl(recipe, x[: recipe.batch_size], seed=0, device=dev, epochs=1, desc="calibrate (warm-up)")
        # the difference of a 3- and a 1-epoch run: the per-epoch cost without the loop's set-up
        seconds = [_timed(lambda e=e: train_ssl(recipe, x, seed=0, device=dev, model=model, epochs=e,  # noqa: B023 (timed now)
                                               desc=f"calibrate {enc['method']}"), dev) for e in (1, 3)]  # noqa: B023
        entry[enc["method"]] = max(seconds[1] - seconds[0], 1e-12) / (2 * len(x))
        rate = ssl_step_flops(recipe, size) / entry[enc["method"]]
        achieved.append(f"{enc['method']} {_backbone_id(enc)}@{size}: {utilisation_text(rate, name)}")
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
