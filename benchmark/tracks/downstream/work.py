"""What a downstream cell costs, for ``plan --estimate`` (:mod:`benchmark.work`): the clean encoder and its
features, the poison and its features, and a defended head (with its same-schedule reference), data transform
or repaired encoder, each counted once per distinct artifact."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from benchmark.cost_models import DOWNSTREAM_STAGES, CostModelError
from benchmark.plugin_base import poison_count
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
    declared_stage,
    defense_cost,
    not_estimated,
    resolved,
    sum_costs,
)


def add_downstream(work: WorkList, cell: Cell, sizes: Sizes) -> None:
    encoder = add_clean_encoder(work, cell, sizes)
    method = cell.encoder.method
    n_poison = poison_count(cell.budget, sizes.train) if cell.attack.id != NO_ATTACK else 0
    poison_identity = None
    if cell.attack.id != NO_ATTACK:
        poison_identity = {"encoder": encoder, "attack": [cell.attack.id, cell.attack.settings], "budget": cell.budget,
                           "epsilon": cell.input_epsilon, "scenario": cell.spec["scenario"], "seed": cell.seed}
        ctx = Context(cell, sizes, resolved("attack", cell.attack), n_poison)
        work.add(cell, sizes, "poison", poison_identity, **amounts(attack_cost(work, cell, ctx), method))
        work.add(cell, sizes, "features", {"poison": poison_identity}, passes=FORWARD_PASS * n_poison)
    if cell.defense.id == NO_DEFENSE:
        return
    dctx = Context(cell, sizes, resolved("defense", cell.defense), n_poison)
    model = defense_cost(work, cell, DEFENSE_COSTS)
    if model is None:
        return

    try:
        _defended_downstream(work, cell, sizes, dctx, model, encoder, poison_identity, method)
    except CostModelError as exc:
        work.unmodelled.add(not_estimated("defense", cell.defense.id, cell.track, str(exc)))


def _defended_downstream(work: WorkList, cell: Cell, sizes: Sizes, dctx: Context, model: DefenseCost, encoder: Any,
                         poison_identity: Any, method: str) -> None:
    n_poison = dctx.n_poison
    head = model.head or (lambda ctx, n: {})
    defense = [cell.defense.id, cell.defense.settings]
    clean_identity = {"encoder": encoder, "scenario": cell.spec["scenario"], "defense": defense}
    # the defended clean head (with its same-schedule reference, for training-stage defenses) once per defense
    work.add(cell, sizes, "defense", clean_identity, **amounts(head(dctx, sizes.train), method))
    if model.data is not None:
        work.add(cell, sizes, "defense", {"data": clean_identity},
                 **amounts(model.data(dctx, sizes.train + sizes.test), method),)
        work.add(cell, sizes, "features", {"data": clean_identity}, passes=FORWARD_PASS * (sizes.train + sizes.test))
    if model.repair is not None:
        work.add(cell, sizes, "defense", {"repair": clean_identity}, **amounts(model.repair(dctx, 0), method))
        work.add(cell, sizes, "features", {"repair": clean_identity}, passes=FORWARD_PASS * (sizes.train + sizes.test))
    if poison_identity is not None:
        n = sizes.train + n_poison
        extra = dict(head(dctx, n))
        if model.data is not None:
            extra = sum_costs(extra, model.data(dctx, n_poison), {"passes": FORWARD_PASS * n_poison})
        if model.repair is not None:
            extra = sum_costs(extra, {"passes": FORWARD_PASS * n_poison})
        work.add(cell, sizes, "defense", {"poison": poison_identity, "defense": defense}, **amounts(extra, method))


def _declared_defense(did: str, declared: Mapping[str, Any], where: str) -> DefenseCost:
    return DefenseCost(head=declared_stage(declared, "head", where) or (lambda ctx, n: {}),
                       data=declared_stage(declared, "data", where), repair=declared_stage(declared, "repair", where))


DEFENSE_COSTS = DefenseCosts(keys=DOWNSTREAM_STAGES, declared=_declared_defense)
