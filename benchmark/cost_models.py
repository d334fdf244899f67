"""Cost models that plugins declare, for ``plan --estimate`` (:mod:`benchmark.estimate`).

A plugin states what its own loops cost as a class attribute ``cost``: per track, the work it adds in
three units, each an arithmetic expression in a string. The plugin's own process describes the attribute
(:class:`benchmark.plugins.PluginInfo`), and the scoring process evaluates the expressions with a small evaluator that
knows numbers, ``+ - * / // % **``, comparisons, ``and or not``, ``x if c else y``, ``min``, ``max`` and
the names below: nothing else runs. An attack::

    cost = {"downstream": {"passes": "steps * n_poison"}}          # every step one pass over the poisons

a defense (a stage it does not have is left out; ``{}`` for a track = no work beyond the harness')::

    cost = {"downstream": {"head": {"passes": "epochs * n * (steps + 1)"},   # the defended head on n images
                           "data": {"svds": "n_masks * n"},                  # a transform (or a sanitiser's look) at n images
                           "repair": {"passes": "epochs * clean_size"}},     # a post-hoc repair
            "pretrain-availability": {"ssl_factor": "1 + ssl_steps",        # × the victim's SSL training
                                      "supervised_factor": "1 + steps",     # × the supervised victim's
                                      "svds": "n_masks * encoder_epochs * n",  # its SVDs over pre-training
                                      "supervised_svds": "n_masks * n"}}     # and over the supervised victim's

Units: ``passes`` (a forward and backward of one image through the backbone; a forward alone is 1/3),
``svds`` (one masked-image reconstruction), ``ssl_epochs`` (SSL image-epochs of the cell's method).
Names: every field of the method's resolved config, and ``n_poison`` (poisons added, images perturbed or
injected), ``n`` (images the defense's stage handles), ``train``, ``test``, ``pretrain`` (set sizes),
``ssl_batch`` and ``encoder_epochs`` (the encoder's batch size and SSL epochs; a config field of the same name
as a size is shadowed by the size). A class without ``cost`` inherits its base class's.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Mapping
from typing import Any

UNITS = ("passes", "svds", "ssl_epochs")
DOWNSTREAM_STAGES = ("head", "data", "repair")
PRETRAIN_KEYS = ("ssl_factor", "supervised_factor", "svds", "supervised_svds", "repair")
HOW = "see benchmark/cost_models.py for the form"


class CostModelError(ValueError):
    """A declared cost model that cannot be read or evaluated."""


# ------------------------------------------------------------------------------------------------ evaluating
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
            ast.Gt: operator.gt, ast.GtE: operator.ge}
_FUNCTIONS = {"min": min, "max": max, "ceil": math.ceil}


def evaluate(expression: str | int | float, names: Mapping[str, Any]) -> float:
    """The value of one cost expression over ``names`` (a number is itself)."""
    if isinstance(expression, (int, float)) and not isinstance(expression, bool):
        return float(expression)
    if not isinstance(expression, str):
        raise CostModelError(f"a cost must be a number or an expression string, not {expression!r}; {HOW}")
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as exc:
        raise CostModelError(f"cost expression {expression!r} does not parse ({exc.msg}); {HOW}") from exc
    value = _eval(tree.body, names, expression)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CostModelError(f"cost expression {expression!r} gives {value!r}, not a number")
    return float(value)


def _eval(node: ast.expr, names: Mapping[str, Any], text: str) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool, type(None))):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in names:
            raise CostModelError(f"cost expression {text!r} names {node.id!r}, which is neither a config field nor "
                                 f"one of n_poison, n, train, test, pretrain, ssl_batch, encoder_epochs; {HOW}")
        return names[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _BINARY[type(node.op)](_eval(node.left, names, text), _eval(node.right, names, text))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd, ast.Not)):
        value = _eval(node.operand, names, text)
        return -value if isinstance(node.op, ast.USub) else (not value if isinstance(node.op, ast.Not) else value)
    if isinstance(node, ast.BoolOp):
        values = [_eval(v, names, text) for v in node.values]
        result = values[0]
        for value in values[1:]:
            result = (result and value) if isinstance(node.op, ast.And) else (result or value)
        return result
    if isinstance(node, ast.Compare) and all(type(op) in _COMPARE for op in node.ops):
        left = _eval(node.left, names, text)
        for op, comparator in zip(node.ops, node.comparators):
            right = _eval(comparator, names, text)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.IfExp):
        return _eval(node.body if _eval(node.test, names, text) else node.orelse, names, text)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS and not node.keywords:
        return _FUNCTIONS[node.func.id](*(_eval(a, names, text) for a in node.args))
    raise CostModelError(f"cost expression {text!r} uses {ast.dump(node)[:60]}, which a cost model may not; {HOW}")


def work(amounts: Mapping[str, Any], names: Mapping[str, Any], where: str) -> dict[str, float]:
    """``{"passes": …, "svds": …, "ssl_epochs": …}`` of one declared stage, evaluated."""
    if not isinstance(amounts, Mapping):
        raise CostModelError(f"{where}: expected a mapping of units ({', '.join(UNITS)}) to expressions; {HOW}")
    unknown = sorted(set(amounts) - set(UNITS))
    if unknown:
        raise CostModelError(f"{where}: unknown unit(s) {unknown}; the units are {', '.join(UNITS)}")
    return {unit: evaluate(expression, names) for unit, expression in amounts.items()}


def names_for(config: Mapping[str, Any], **sizes: float) -> dict[str, Any]:
    """The names a cost expression may use: the config's fields, then the cell's sizes (which win)."""
    return {**{k: v for k, v in config.items() if isinstance(k, str)}, **sizes}


def check_defense_keys(declared: Mapping[str, Any], allowed: tuple[str, ...], track: str, where: str) -> None:
    """A defense's declared cost entry for ``track`` names only the keys that track prices."""
    unknown = sorted(set(declared) - set(allowed))
    if unknown:
        raise CostModelError(f"{where}: unknown key(s) {unknown} for track {track}; allowed: {', '.join(allowed)}")
