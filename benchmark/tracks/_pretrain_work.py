"""What a pre-training cell costs, for ``plan --estimate`` (:mod:`benchmark.work`): both pre-training tracks
count the poison, the (defended) victim encoder and its features, and the supervised cross-evaluation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from benchmark.cost_models import PRETRAIN_KEYS, CostModelError, evaluate
from benchmark.plugin_base import poison_count
from benchmark.plugins import catalogue
from benchmark.tracks.base import NO_ATTACK, NO_DEFENSE, Cell
from benchmark.work import (
    FORWARD_PASS,
    Context,
    DefenseCost,
    DefenseCosts,
    Sizes,
    WorkList,
    add_clean_encoder,
    amounts,
    attack_cost,
    declared_factor,
    declared_stage,
    defense_cost,
    names,
    not_estimated,
    resolved,
)


def add_pretrain_work(work: WorkList, cell: Cell, sizes: Sizes, *, injected: bool, recipe_keyed: bool,
                      aim: Any = None) -> None:
    """A pre-training cell: the poison, the (defended) victim, its features, the supervised victim. ``injected``:
    the poisons are extra images (else perturbed ones, and a supervised victim is cross-evaluated when the
    victim asks); ``recipe_keyed``: a poison is keyed on the recipe fields its attack declares it reads; ``aim``:
    what else tells a poison apart (a backdoor cell's target class: one poison and victim each)."""
    encoder = add_clean_encoder(work, cell, sizes)
    method, epochs = cell.encoder.method, cell.encoder.epochs
    n_attacked = poison_count(cell.budget, sizes.pretrain) if cell.attack.id != NO_ATTACK else 0  # perturbed or injected
    n_extra = n_attacked if injected else 0
    poison = None
    if cell.attack.id != NO_ATTACK:
        attacker = _attacker_encoder(cell, encoder) if recipe_keyed else encoder
        poison = {"encoder": attacker, "attack": [cell.attack.id, cell.attack.settings],
                  "budget": cell.budget, "epsilon": cell.variant("epsilon"), "scenario": cell.spec["scenario"]}
        if aim is not None:
            poison["aim"] = aim
        ctx = Context(cell, sizes, resolved("attack", cell.attack), n_attacked)
        work.add(cell, sizes, "poison", poison, **amounts(attack_cost(work, cell, ctx), method))
    did = cell.defense.id
    n_pre = sizes.pretrain + n_extra
    features = FORWARD_PASS * (sizes.train + sizes.test + sizes.pretrain)
    victim = {"encoder": encoder, "poison": poison}
    if poison is not None:
        work.add(cell, sizes, "victim encoder", victim, ssl_epochs={method: epochs * n_pre})
        work.add(cell, sizes, "features", {"victim": victim}, passes=features)
    dctx = Context(cell, sizes, resolved("defense", cell.defense), n_extra) if did != NO_DEFENSE else None
    model = defense_cost(work, cell, DEFENSE_COSTS) if dctx is not None else None

    try:
        if dctx is not None and model is not None:
            stage_cost = _defended_victim(dctx, model, epochs, n_pre)
            work.add(cell, sizes, "victim encoder" if model.repair is None else "defense",
                     {**victim, "defense": [did, cell.defense.settings]}, **amounts(stage_cost, method))
            work.add(cell, sizes, "features", {**victim, "defense": [did, cell.defense.settings]}, passes=features)
        if not injected and cell.victim.supervised_eval:
            _supervised_victims(work, cell, sizes, poison, dctx, model)
    except CostModelError as exc:
        work.unmodelled.add(not_estimated("defense", did, cell.track, str(exc)))


def _supervised_victims(work: WorkList, cell: Cell, sizes: Sizes, poison: Any, dctx: Context | None,
                        model: DefenseCost | None) -> None:
    """The cross-evaluation's supervised victims: the clean one, and the poisoned and/or defended one."""
    did, sup_epochs = cell.defense.id, cell.victim.supervised_epochs
    work.add(cell, sizes, "supervised victim", {"scenario": cell.spec["scenario"], "data": cell.spec["data"],
                                                "seed": cell.seed, "backbone": cell.encoder.backbone},
             passes=sup_epochs * sizes.pretrain)
    if poison is None and dctx is None:
        return
    factor = model.supervised_factor(dctx) if dctx is not None and model is not None else 1.0
    svds = model.supervised_svds(dctx, sizes.pretrain) if dctx is not None and model is not None else 0.0
    work.add(cell, sizes, "supervised victim", {"poison": poison, "defense": [did, cell.defense.settings],
                                         "seed": cell.seed, "backbone": cell.encoder.backbone},
             passes=factor * sup_epochs * sizes.pretrain, svds=svds)


def _attacker_encoder(cell: Cell, encoder: Any) -> Any:
    """What an availability poison is keyed on besides its own settings: the clean encoder's identity, or
    only the recipe fields the attack declares it reads (``Attack.recipe_fields``), as the track caches it."""

    fields = catalogue().get("attack", cell.attack.id).recipe_fields
    if fields is None:
        return encoder
    encoder = cell.spec["encoder"]
    return {"recipe": {k: encoder[k] for k in fields if k in encoder}, "data": cell.spec["data"], "seed": cell.seed}


def _defended_victim(dctx: Context, model: DefenseCost, epochs: int, n_pre: int) -> dict[str, float]:
    """The cost of a defended victim beyond the undefended one it replaces (or repairs)."""
    if model.repair is not None:  # post-hoc: the undefended victim (counted) repaired
        return model.repair(dctx, 0)
    cost: dict[str, float] = {"ssl_epochs": model.ssl_factor(dctx) * epochs * n_pre}
    svds = model.svds(dctx, epochs, n_pre)
    return cost | ({"svds": svds} if svds else {})


def _declared_defense(did: str, declared: Mapping[str, Any], where: str) -> DefenseCost:
    return DefenseCost(repair=declared_stage(declared, "repair", where), ssl_factor=declared_factor(declared, "ssl_factor"),
                       supervised_factor=declared_factor(declared, "supervised_factor"),
                       svds=lambda ctx, epochs, n: evaluate(declared.get("svds", 0), {**names(ctx, n), "encoder_epochs": epochs}),
                       supervised_svds=lambda ctx, n: evaluate(declared.get("supervised_svds", 0), names(ctx, n)))


DEFENSE_COSTS = DefenseCosts(keys=PRETRAIN_KEYS, declared=_declared_defense)
