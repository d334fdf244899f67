"""Which way imports run: methods use only the plugin API; the board needs no torch; ids are unique."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = ("benchmark.runner", "benchmark.cache", "benchmark.__main__", "benchmark.suite", "benchmark.tracks",
             "benchmark.results", "leaderboard")


# The allowed direction of imports between the engine's modules, lowest layer first: a module may import
# its own layer and the layers below it, never one above (an allow-list: a new module must be placed here). A
# ``*`` stands for any track package: every track's modules of one role sit in one layer.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("benchmark", "benchmark.utils", "benchmark.training", "benchmark.registry", "benchmark.codec", "leaderboard",
     "leaderboard.schema", "benchmark.tracks", "benchmark.tracks.info", "benchmark.tracks.*",
     "benchmark.tracks.*.info"),  # plain data: what the board and provenance know about a track (no torch)
    ("benchmark.plugin_base",),  # the track-independent half of the plugin API
    ("benchmark.data", "benchmark.augment", "benchmark.backbones", "benchmark.ssl", "benchmark.ssl.base",
     "benchmark.ssl.simclr", "benchmark.ssl.mocov2", "benchmark.ssl.byol", "benchmark.pretrain", "benchmark.probe",
     "benchmark.supervised", "benchmark.validation", "benchmark.cache", "benchmark.sandbox", "benchmark.provenance",
     "benchmark.results", "benchmark.tracks.specs"),  # compute and bookkeeping primitives, the specs cells carry
    ("benchmark.tracks._pretrain_interface", "benchmark.tracks.*.triggers", "benchmark.tracks.*.interface",
     "benchmark.tracks.*.validate"),
    ("benchmark.api",),  # the plugin API: plugin_base and every track's interface
    ("benchmark.plugin_host", "benchmark.workers", "benchmark.plugins"),  # plugin isolation and the catalogue
    ("benchmark.tracks.common", "benchmark.tracks.base", "benchmark.tracks._pretrain", "benchmark.cost_models",
     "benchmark.work", "benchmark.tracks._pretrain_work", "benchmark.tracks.*.work",
     "benchmark.tracks.*.track", "benchmark.tracks.*.examples"),  # the tracks and their cost
    ("benchmark.suite", "benchmark.estimate"),  # suites (validated and expanded by the tracks) and their cost
    ("benchmark.runner", "benchmark.verify", "benchmark.examples"),  # running and re-computing cells
    ("leaderboard.render", "leaderboard.plots", "leaderboard.site", "benchmark.tracks.*.figures"),  # the board (no torch)
    ("benchmark.submit", "benchmark.__main__"),  # the CLI and its workflows
)


TRACK_PACKAGES = sorted(d.name for d in (ROOT / "benchmark" / "tracks").iterdir() if (d / "__init__.py").exists())


def layer_of(module: str) -> int | None:
    """The layer of an engine module (a ``*`` in :data:`LAYERS` stands for a track package), or None."""
    for i, layer in enumerate(LAYERS):
        if any(module == pattern.replace("*", package) for pattern in layer for package in TRACK_PACKAGES or [""]):
            return i
    return None


def _engine_modules() -> dict[str, Path]:
    paths = sorted((ROOT / "benchmark").rglob("*.py")) + sorted((ROOT / "leaderboard").glob("*.py"))
    modules = {}
    for path in paths:
        parts = path.relative_to(ROOT).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _engine_edges(path: Path, modules: dict[str, Path]) -> list[tuple[str, bool]]:
    """(imported engine module, whether the import is function-local) for every import in ``path``."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    edges = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            targets = {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module for a in node.names}
        elif isinstance(node, ast.Import):
            targets = {a.name for a in node.names}
        else:
            continue
        edges += [(t, id(node) not in top) for t in targets if t in modules]
    return edges


def test_every_engine_module_has_a_layer_and_imports_only_downwards() -> None:
    modules = _engine_modules()
    unplaced = sorted(m for m in modules if layer_of(m) is None)
    assert not unplaced, f"place these modules in LAYERS: {unplaced}"
    upward = [f"{name} (layer {layer_of(name)}) imports {target} (layer {layer_of(target)})"
              for name, path in modules.items() for target, _ in _engine_edges(path, modules)
              if (layer_of(target) or 0) > (layer_of(name) or 0)]
    assert not upward, "\n".join(upward)


def test_no_import_circle() -> None:
    """Including function-local imports: a circle held apart by imports inside functions is still one."""
    modules = _engine_modules()
    graph = {name: {t for t, _ in _engine_edges(path, modules) if t != name} for name, path in modules.items()}
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(nxt):] + [node, nxt]))
            if nxt not in state:
                visit(nxt, stack + [node])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_function_local_imports_only_in_the_cli() -> None:
    """The CLI imports its commands' modules when a command runs (start-up stays fast); everywhere else an
    engine import is at the top of the module (optional dependencies such as ray stay function-local)."""
    modules = _engine_modules()
    local = [f"{name} imports {target} inside a function" for name, path in modules.items()
             if name != "benchmark.__main__" for target, inside in _engine_edges(path, modules) if inside]
    assert not local, "\n".join(local)


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


@pytest.mark.parametrize("path", sorted((ROOT / "attacks").glob("*.py")) + sorted((ROOT / "defenses").glob("*.py")),
                         ids=lambda p: p.name)
def test_methods_import_only_the_plugin_api(path: Path) -> None:
    """An allow-list: from the engine a method imports ``benchmark.api`` and nothing else (the board's modules
    not at all); what it builds on (the head, augmentations, recipes, backbones) is re-exported there."""
    bad = [m for m in _imports(path) if m.startswith(FORBIDDEN) or (m.startswith("benchmark") and m != "benchmark.api")]
    assert not bad, f"{path.name} imports engine internals: {bad}"


def test_engine_never_imports_a_method_by_name() -> None:
    for path in (ROOT / "benchmark").rglob("*.py"):
        bad = [m for m in _imports(path) if m.startswith(("attacks.", "defenses."))]
        assert not bad, f"{path} imports {bad}"


def test_leaderboard_renders_without_torch(tmp_path: Path) -> None:
    code = ("import sys; from leaderboard.render import render_leaderboard; "
            f"render_leaderboard({str(tmp_path)!r}); assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_every_method_module_has_a_citation_docstring() -> None:
    from benchmark.plugins import load_plugins

    attacks, defenses = load_plugins()
    for registry in (attacks, defenses):
        for name in registry.names():
            cls = registry.get(name)
            if not cls.__module__.startswith(("attacks.", "defenses.")):
                continue  # the test suite's fixture plugins (tests/plugins)
            module = sys.modules[cls.__module__]
            assert module.__doc__ and module.__doc__.strip(), f"{name}: module docstring missing"
            assert cls.__module__.rsplit(".", 1)[-1] in (name, name.rstrip("_")) or name.startswith("test_"), \
                f"{name} lives in {cls.__module__}: one module per method, named by its id"


def test_duplicate_ids_are_rejected() -> None:
    from benchmark.registry import DuplicateNameError, Registry, UnknownNameError

    reg: Registry[int] = Registry("thing")
    reg.register("a", 1)
    with pytest.raises(DuplicateNameError):
        reg.register("a", 2)
    with pytest.raises(UnknownNameError, match="Valid choices: a"):
        reg.get("b")


@pytest.mark.heavy
def test_a_fresh_process_resolves_every_method_without_importing_any() -> None:
    """What the scoring process (and a Ray task) does: load the tracks and the plugin catalogue. Every
    method is known by id, and no attack or defense module is imported into that process (they run in
    plugin processes)."""
    code = ("import sys\n"
            "if __name__ == '__main__':\n"
            "    from benchmark.tracks.base import load_tracks; from benchmark.plugins import catalogue\n"
            "    load_tracks(); c = catalogue()\n"
            "    print(sorted(c.attacks), sorted(c.defenses), list(c.problems))\n"
            "    print('imported:', sorted(m for m in sys.modules if m.startswith(('attacks.', 'defenses.'))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert "label_flip" in out and "'cp'" in out and "dp_sgd" in out, out
    assert "imported: []" in out, out


@pytest.mark.slow
def test_ray_executor_streams_the_local_executors_records(tmp_path: Path, tiny_suite_dict, write_suite) -> None:
    """Ray (a local cluster): every record as the local executor computes it, bit for bit on a CPU; the
    clean encoder the two tracks share is prepared by one task before the groups that use it."""
    pytest.importorskip("ray")
    import json

    from benchmark.runner import run_suite
    from benchmark.suite import load_suite

    raw = {**tiny_suite_dict, "tracks": {
        "downstream": {"budgets": [0.1], "attacks": ["none", "label_flip"], "victim": {"kind": "convex", "l2": 0.001}},
        "pretrain-targeted": {"budgets": [0.05], "attacks": ["none", {"id": "poisoned_encoder",
                                                                       "settings": {"n_targets": 2}}]}}}
    suite = load_suite(str(write_suite(raw)))
    records = {}
    for executor in ("local", "ray"):
        out = tmp_path / executor
        summary = run_suite(suite, results_dir=out / "r", cache_dir=out / "c", device="cpu", executor=executor)
        assert summary.by_status == {"ok": len(summary.computed)} and len(summary.computed) >= 4, summary
        records[executor] = {p.name: {k: v for k, v in json.loads(p.read_text())["metrics"].items()
                                      if not k.endswith("_seconds")}  # timings differ, numbers may not
                             for p in (out / "r").rglob("*.json")}
        encoders = list((out / "c" / "encoder").glob("*.pt"))
        records[executor + "-encoders"] = len(encoders)
    assert records["ray"] == records["local"]
    assert records["ray-encoders"] == records["local-encoders"]


def _track_names_in(path: Path, names: set[str]) -> list[str]:
    """String constants naming a track in ``path`` (docstrings aside; a scenario's ``downstream`` data set, as a
    key, an index or beside ``pretrain``, is a field of the scenario, not the track)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    fields: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript):
            fields.add(id(node.slice))
        elif isinstance(node, ast.Dict):
            fields |= {id(k) for k in node.keys if k is not None}
        elif isinstance(node, (ast.Tuple, ast.List)) and any(isinstance(e, ast.Constant) and e.value == "pretrain"
                                                             for e in node.elts):
            fields |= {id(e) for e in node.elts}
    return [f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}" for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and node.value in names and id(node) not in docstrings | fields]


def test_no_track_is_named_outside_its_package() -> None:
    """The suite, the runner, the estimate, provenance, the record schema and the board reach a track through
    its :class:`~benchmark.tracks.base.Track` and ``TrackInfo`` only (attacks and defenses name the tracks they
    implement: that is their declaration)."""
    from benchmark.tracks.info import track_infos

    infos = track_infos()
    packages = {Path(*info.package.split(".")) for info in infos.values()}
    engine = sorted((ROOT / "benchmark").rglob("*.py")) + sorted((ROOT / "leaderboard").glob("*.py"))
    named = [hit for path in engine if not any(path.relative_to(ROOT).is_relative_to(p) for p in packages)
             for hit in _track_names_in(path, set(infos))]
    assert not named, "\n".join(named)
