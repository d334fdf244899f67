"""Schema of a result record (one JSON file per cell, ``<suite>/<cell_id>.json``), checked without torch: the
:class:`Record` below is the schema, the runner builds it and the board reads it."""

import typing
from pathlib import Path
from typing import Any, NotRequired, TypedDict

from benchmark.tracks.info import track_info, track_names
from benchmark.utils import cell_id

SCHEMA_VERSION = 1
FINAL_STATUSES = ("ok", "invalid", "timeout")  # error cells are retried by the next run
STATUSES = ("ok", "invalid", "timeout", "error")


class Record(TypedDict):
    """One cell's result."""

    schema_version: int
    cell_id: str
    suite: str
    tier: str  # smoke | cpu | full | custom
    track: str
    status: str  # one of STATUSES
    message: str
    cell: dict[str, Any]  # the resolved cell spec: encoder, scenario, data, budget, attack, defense, victim, seed, ...
    metrics: dict[str, float]  # ok records: the track's required metrics (clean_accuracy, accuracy_drop, ...) and more
    details: dict[str, Any]  # diagnostics (attack residuals, the chosen head L2, ...)
    # code, packages, device, sandbox, the hashes of the files on the cell's path ("sources"), the attack's and
    # defense's resolved configs ("attack_config", "defense_config"), wall_seconds
    provenance: dict[str, Any]
    # per "attack" / "defense" (absent for none): the plugin's metadata (PluginInfo.record_metadata: id, module,
    # citation, summary, paper_url; attacks: space, expected_null, control_settings; defenses: stage)
    plugins: NotRequired[dict[str, dict[str, Any]]]


def _required_types() -> dict[str, type]:
    hints = typing.get_type_hints(Record, include_extras=True)
    return {key: typing.get_origin(hint) or hint for key, hint in hints.items()
            if typing.get_origin(hint) is not NotRequired}


REQUIRED = _required_types()


def record_problems(record: Any) -> list[str]:
    """Every schema problem of one record (empty when valid)."""
    if not isinstance(record, dict):
        return ["the record is not a JSON object"]
    problems = [f"{key}: missing or not {typ.__name__}" for key, typ in REQUIRED.items()
                if not isinstance(record.get(key), typ)]
    if problems:
        return problems
    if record["schema_version"] != SCHEMA_VERSION:
        problems.append(f"schema_version: {record['schema_version']} is not {SCHEMA_VERSION}")
    if record["status"] not in STATUSES:
        problems.append(f"status: {record['status']!r} is not one of {', '.join(STATUSES)}")
    info = track_info(record["track"])
    if info is None:
        problems.append(f"track: unknown track {record['track']!r}; declared: {', '.join(track_names())}")
    elif record["status"] == "ok":
        for metric in info.required_metrics:
            if not isinstance(record["metrics"].get(metric), (int, float)):
                problems.append(f"metrics.{metric}: missing")
    plugins = record.get("plugins", {})
    if not isinstance(plugins, dict) or not all(k in ("attack", "defense") and isinstance(v, dict) for k, v in plugins.items()):
        problems.append("plugins: expected a mapping of 'attack' / 'defense' to the plugin's metadata")
    for key in ("encoder", "scenario", "attack", "defense", "budget", "seed"):
        if key not in record["cell"]:
            problems.append(f"cell.{key}: missing")
    return problems


def location_problems(record: dict[str, Any], path: Path) -> list[str]:
    """Whether a valid record sits where its content says: ``<suite>/<cell_id>.json``, and its ``cell_id`` is
    the id of the cell spec it holds (a record copied to another cell's file, or edited, fails here)."""

    problems = []
    if path.name != f"{record['cell_id']}.json":
        problems.append(f"file name {path.name} is not its cell_id {record['cell_id']}.json")
    if path.parent.name != record["suite"]:
        problems.append(f"it lies in folder {path.parent.name}/, not in its suite's folder {record['suite']}/")
    try:
        expected = cell_id(record["track"], record["cell"])
    except (KeyError, TypeError, ValueError) as exc:
        return problems + [f"its cell spec does not give a cell id ({exc})"]
    if record["cell_id"] != expected:
        problems.append(f"its cell_id is not the id of its cell spec ({expected})")
    if record["cell"].get("suite") not in (None, record["suite"]) or record["cell"].get("tier") not in (None, record["tier"]):
        problems.append("its suite or tier differs from its cell spec's")
    return problems
