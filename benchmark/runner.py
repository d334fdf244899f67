"""The runner: executes a suite's cells, skipping those with a final result, writing one JSON per cell.

Cells run in the order :func:`benchmark.suite.expand_cells` gives (cells sharing an encoder are
adjacent). Shared artifacts come from the content-addressed cache, so a killed run resumes: finished
cells are skipped, finished artifacts are reused, and half-written files never exist (atomic writes).

Executors: ``local`` (default, one process) and ``ray`` (one task per group of cells sharing an encoder,
each asking for its GPU share; needs ``pip install 'poisonbench[ray]'``).
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark.cache import ArtifactCache
from benchmark.data import DatasetNotFoundError, load_dataset
from benchmark.plugins import catalogue, resolved_config
from benchmark.provenance import changed_during, dependencies, recorded_hash, recorded_hashes, relative, snapshot, staleness
from benchmark.results import code_version, device_info, package_versions, read_record, result_path, write_record
from benchmark.suite import Suite, SuiteError, expand_cells
from benchmark.tracks.base import Cell, load_tracks
from benchmark.tracks.common import RunEnv, build_clean_encoder, clean_encoder_id
from benchmark.utils import config_hash, progress_bar, resolve_device, seed_everything
from benchmark.workers import PluginError, PluginTimeout, sandboxed
from leaderboard.schema import FINAL_STATUSES, SCHEMA_VERSION, Record


@dataclass
class RunSummary:
    computed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    by_status: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def pending_cells(cells: list[Cell], suite: Suite, results_dir: Path, *, stale: bool = False) -> tuple[list[Cell], list[Cell]]:
    """(cells to compute, cells with a final record). With ``stale``, a final record whose source hashes no
    longer match the tree (:func:`benchmark.provenance.staleness`) is computed again."""

    done = []
    for cell in cells:
        record = read_record(result_path(results_dir, suite.name, cell.id))
        if record is not None and record.get("status") in FINAL_STATUSES and not (stale and staleness(record)):
            done.append(cell)
    done_ids = {c.id for c in done}
    return [c for c in cells if c.id not in done_ids], done


def select_cells(cells: list[Cell], only: list[str]) -> list[Cell]:
    """The cells matching every ``KEY=VALUE`` filter (``attack``, ``defense``: an id or a suite name;
    ``track``, ``scenario``, ``method``, ``seed``), e.g. ``attack=my_attack``."""
    def value(cell: Cell, key: str) -> set[str]:
        return {"attack": {cell.attack.id, cell.attack.name}, "defense": {cell.defense.id, cell.defense.name},
                "track": {cell.track}, "scenario": {cell.scenario.name}, "method": {cell.encoder.method},
                "seed": {str(cell.seed)}}[key]

    filters = []
    for item in only:
        key, sep, wanted = item.partition("=")
        if not sep or key not in ONLY_KEYS:
            raise SuiteError("--only", [f"--only {item!r}: expected KEY=VALUE with KEY one of {', '.join(ONLY_KEYS)}"])
        filters.append((key, wanted))
    chosen = [c for c in cells if all(wanted in value(c, key) for key, wanted in filters)]
    if not chosen:
        raise SuiteError("--only", [f"--only {' '.join(only)} matches no cell of this suite"])
    return chosen


ONLY_KEYS = ("attack", "defense", "track", "scenario", "method", "seed")


def check_data_available(cells: list[Cell]) -> None:
    """Load both splits of every data set the pending cells use once, so that a missing or corrupted one
    fails before any compute; the error names every such data set (each message names the directory it
    looked in), not only the first."""

    seen, problems = set(), []
    for cell in cells:
        data = cell.data
        for name in (cell.scenario.pretrain, cell.scenario.downstream):
            key = (name, data.root, data.download)
            if key in seen:
                continue
            seen.add(key)
            for split in ("train", "test"):
                try:
                    load_dataset(name, split, root=data.root, download=data.download)
                except DatasetNotFoundError as err:
                    problems.append(str(err))
                    break
    if problems:
        raise DatasetNotFoundError("\n".join(problems) if len(problems) == 1 else
                                   f"{len(problems)} data sets are missing or corrupted:\n- " + "\n- ".join(problems))


def run_cell(cell: Cell, env: Any) -> Record:
    """Compute one cell and return its complete record (status ok / invalid / timeout / error).

    Plugin code runs in plugin processes (:mod:`benchmark.workers`): an exception there, of any kind, is
    this cell's ``error``; a call past the time limit is its ``timeout``. After the cell, everything it
    shared with other cells is checked against its fingerprint (:meth:`RunEnv.verify`): a change makes the
    cell ``invalid`` and the changed objects are rebuilt for the next cell."""

    runners = load_tracks()  # imported once per process (Python caches modules)
    sources: dict[str, Any] = {}
    configs: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    plugins, plugin_sources = catalogue(), []
    for kind, entry in (("attack", cell.attack), ("defense", cell.defense)):
        if entry.id in plugins.of(kind):
            info = plugins.get(kind, entry.id)
            metadata[kind] = info.record_metadata()
            sources[kind] = {"module": info.module, "sha256": recorded_hash(relative(info.source))}
            plugin_sources.append(info.source)
            configs[f"{kind}_config"] = resolved_config(kind, entry.id, entry.settings).config
    files = dependencies(cell.track, plugin_sources)
    sources["files"] = recorded_hashes(files)
    before = snapshot(files)
    start = time.perf_counter()
    seed_everything(cell.seed)
    spec_before = config_hash(cell.spec, 64)
    env.begin_cell()
    try:
        outcome = runners[cell.track].run(cell, env)
        status, message, metrics, details = outcome.status, outcome.message, outcome.metrics, outcome.details
    except PluginTimeout as exc:
        status, message, metrics, details = "timeout", str(exc), {}, {}
    except PluginError as exc:
        status, message, metrics, details = "error", f"plugin error: {exc}", {}, {"traceback": exc.details}
    except Exception as exc:  # recorded, never silently dropped; error cells are retried on the next run
        status, message, metrics, details = "error", f"{type(exc).__name__}: {exc}", {}, {"traceback": traceback.format_exc()}
    changed = env.verify() + (["the cell spec"] if config_hash(cell.spec, 64) != spec_before else [])
    if changed:
        status, metrics = "invalid", {}
        message = f"shared state changed during this cell ({', '.join(changed)}); it is rebuilt for the next cell"
    edited = changed_during(before)
    if edited:
        status, metrics = "invalid", {}
        message = f"source files changed during this cell or since this process imported them: {', '.join(edited)}"
    return Record(
        schema_version=SCHEMA_VERSION, cell_id=cell.id, suite=cell.spec["suite"], tier=cell.spec["tier"],
        track=cell.track, status=status, message=message, cell=cell.spec, metrics=metrics, details=details,
        provenance={"code": code_version(), "packages": package_versions(), "device": device_info(env.device),
                    "sandbox": sandboxed(), "sources": sources, **configs,
                    "wall_seconds": round(time.perf_counter() - start, 3)},
        plugins=metadata,
    )


def run_suite(suite: Suite, *, results_dir: Path, cache_dir: Path, device: str = "auto",
              executor: str = "local", tracks: list[str] | None = None, only: list[str] | None = None,
              stale: bool = False, ray_address: str | None = None) -> RunSummary:
    """Compute every unfinished cell of ``suite`` (only those matching ``only``; with ``stale``, also those
    whose record no longer matches the code) and write one record per cell."""

    start = time.perf_counter()
    _check_output_dirs(results_dir, cache_dir)
    cells, _ = expand_cells(suite)
    if tracks is not None:
        unknown = sorted(set(tracks) - {c.track for c in cells})
        if unknown:
            raise SuiteError(suite.source, [f"--tracks: {', '.join(unknown)} not in this suite; it has "
                                            f"{', '.join(sorted({c.track for c in cells}))}"])
        cells = [c for c in cells if c.track in tracks]
    if only:
        cells = select_cells(cells, only)
    todo, done = pending_cells(cells, suite, results_dir, stale=stale)
    check_data_available(todo)
    load_tracks()  # before compute: a broken track module fails the run at once
    summary = RunSummary(skipped=[c.id for c in done])
    cache = ArtifactCache(cache_dir)
    cache.clean_temporaries()
    if executor == "ray":
        records = _run_with_ray(todo, cache_dir, device, suite.plugin_seconds, ray_address)
    else:
        env = RunEnv(cache=cache, device=resolve_device(device), plugin_seconds=suite.plugin_seconds)
        records = _run_locally(todo, env, f"suite {suite.name}")
    for record in records:
        write_record(result_path(results_dir, suite.name, record["cell_id"]), record)
        summary.computed.append(record["cell_id"])
        summary.by_status[record["status"]] = summary.by_status.get(record["status"], 0) + 1
    summary.seconds = time.perf_counter() - start
    return summary


def _run_locally(cells: list[Cell], env: Any, desc: str) -> Any:
    """Run ``cells`` in this process; the progress bar names the cell being computed (the pre-training
    bars below it name the stage)."""
    bar = progress_bar(cells, desc=desc, total=len(cells), leave=True)
    for cell in bar:
        bar.set_postfix_str(f"{cell.track} {cell.encoder.method} {cell.scenario.name} {cell.attack.name} × "
                            f"{cell.defense.name} b{cell.budget:g} s{cell.seed}", refresh=True)
        yield run_cell(cell, env)


def _check_output_dirs(results_dir: Path, cache_dir: Path) -> None:
    for what, path in (("--results-dir", Path(results_dir)), ("--cache-dir", Path(cache_dir))):
        for p in (path, *path.parents):
            if p.exists() and not p.is_dir():
                raise SuiteError(str(path), [f"{what} {path}: {p} exists and is not a directory"])


def encoder_groups(cells: list[Cell]) -> list[list[Cell]]:
    """Cells grouped by the encoder they share (one Ray task each, so an encoder is trained once)."""

    groups: dict[str, list[Cell]] = {}
    for cell in cells:
        key = config_hash([cell.track, cell.spec["encoder"], cell.scenario.pretrain, cell.seed])
        groups.setdefault(key, []).append(cell)
    return list(groups.values())


def _run_with_ray(cells: list[Cell], cache_dir: Path, device: str, plugin_seconds: float,
                  address: str | None = None) -> Any:
    """Cells on a Ray cluster (``address``: an existing one; None: a local one). Each clean encoder is
    built once by its own task, which every group of cells sharing it depends on, across groups and tracks;
    a group (the cells of one track sharing that encoder, run in order so that they share their poisons and
    victims through the cache) is a streaming task, so records come back as each cell finishes. The cache
    directory must be visible to every node (a shared file system)."""
    try:
        import ray
    except ImportError as exc:
        raise RuntimeError("--executor ray needs Ray: pip install 'poisonbench[ray]'") from exc
    import torch

    ray.init(address=address, ignore_reinit_error=True)
    gpus = 1 if torch.cuda.is_available() and device in ("auto", "cuda") else 0

    def environment() -> Any:

        return RunEnv(cache=ArtifactCache(cache_dir), device=resolve_device(device), plugin_seconds=plugin_seconds)

    @ray.remote(num_gpus=gpus)
    def prepare(cell: Cell) -> str:

        return build_clean_encoder(cell, environment())

    @ray.remote(num_gpus=gpus, num_returns="streaming")
    def run_group(group: list[Cell], encoder_ready: str) -> Any:
        env = environment()
        for cell in group:
            yield run_cell(cell, env)

    encoders: dict[str, Any] = {}
    streams = []
    for group in encoder_groups(cells):
        key = clean_encoder_id(group[0])
        if key not in encoders:
            encoders[key] = prepare.remote(group[0])
        streams.append(run_group.remote(group, encoders[key]))
    while streams:
        ready, _ = ray.wait(streams, num_returns=1)
        try:
            ref = next(ready[0])
        except StopIteration:
            streams.remove(ready[0])
            continue
        yield ray.get(ref)
