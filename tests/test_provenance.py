"""Numbers that stay true: records name the hashes of every file on their compute path; an edit makes
``leaderboard --check`` fail naming the stale cells, and ``run --stale`` recomputes exactly those."""

from __future__ import annotations

import ast
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from benchmark.provenance import ENGINE_FILES, dependencies, file_hash, plugin_files, recorded_hash, staleness
from benchmark.tracks.info import OFF_COMPUTE_PATH as TRACK_FILES_OFF_PATH
from leaderboard.render import stale_report

ROOT = Path(__file__).resolve().parent.parent

PLUGIN = '''"""Test, "An attack that gets edited", 2026: label flips (for the staleness test)."""
from dataclasses import dataclass

import torch

from benchmark.api import DownstreamAttack, DownstreamPoison, MethodConfig, register_attack


@dataclass(frozen=True, kw_only=True)
class EditMeConfig(MethodConfig):
    pass


@register_attack
class EditMe(DownstreamAttack):
    id = "edit_me"
    Config = EditMeConfig
    citation = "a test"

    def craft_downstream(self, ctx):
        base = torch.randperm(len(ctx.train_labels), generator=ctx.generator)[: ctx.budget]
        return DownstreamPoison(images=ctx.train_images[base].clone(), labels=(ctx.train_labels[base] + 1) % ctx.num_classes,
                                base_indices=base)
'''


def test_dependencies_name_the_engine_the_track_and_the_plugins() -> None:
    files = dependencies("downstream", [str(ROOT / "attacks" / "gc.py"), str(ROOT / "defenses" / "dp_sgd.py")])
    assert set(ENGINE_FILES) <= set(files)
    assert {"benchmark/tracks/downstream/track.py", "benchmark/tracks/downstream/interface.py",
            "benchmark/tracks/downstream/validate.py", "attacks/gc.py", "attacks/_common.py", "defenses/dp_sgd.py"} <= set(files)
    # the board's text and figures, the estimate and the examples figure move no number
    assert not {f"benchmark/tracks/downstream/{name}" for name in ("info.py", "figures.py", "work.py", "examples.py")} & set(files)
    assert not any(f.startswith("benchmark/tracks/pretrain_targeted/") for f in files)
    assert all((ROOT / f).exists() for f in files)


# engine modules a cell imports whose edits cannot move its numbers: the suite schema and expansion (the resolved
# config is in the cell's id), record bookkeeping, the track registry's plain data and the estimate's cost language
OFF_COMPUTE_PATH = {"benchmark/suite.py", "benchmark/provenance.py", "benchmark/tracks/info.py",
                    "benchmark/cost_models.py", "benchmark/work.py", "benchmark/tracks/_pretrain_work.py",
                    "benchmark/__init__.py"}


def _module_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return {n for n in names if n.split(".")[0] == "benchmark"}


def _module_file(name: str) -> str | None:
    for candidate in (ROOT / Path(*name.split(".")).with_suffix(".py"), ROOT / Path(*name.split(".")) / "__init__.py"):
        if candidate.exists():
            return candidate.relative_to(ROOT).as_posix()
    return None


def test_every_engine_module_a_cell_imports_is_hashed_or_declared_off_its_path() -> None:
    """A record is stale when a file it depends on changes: every engine module the runner and a track's run
    import (transitively) must be in ``ENGINE_FILES`` or the track's sources, or be named here as off the path."""
    from benchmark.tracks.info import track_infos

    for info in track_infos().values():
        hashed = set(ENGINE_FILES) | set(info.sources())
        todo, seen = ["benchmark.runner", f"{info.package}.track"], set()
        while todo:
            path = _module_file(todo.pop())
            if path is None or path in seen:
                continue
            seen.add(path)
            todo += sorted(_module_imports(ROOT / path))
        # another track's package and shared sources are imported only for benchmark.api's re-exports
        others = {f for other in track_infos().values() if other is not info for f in other.sources()}
        own_folder = str(Path(*info.package.split(".")).as_posix()) + "/"
        off_track = {f for f in seen if f.startswith("benchmark/tracks/") and f.count("/") == 3 and not f.startswith(own_folder)}
        missing = sorted(seen - hashed - OFF_COMPUTE_PATH - others - off_track
                         - {f for f in seen if f.startswith(own_folder) and Path(f).name in TRACK_FILES_OFF_PATH})
        assert not missing, f"{info.name}: modules on its cells' path that no record hashes: {missing}"


def test_a_plugin_depends_on_the_package_modules_it_imports_only() -> None:
    """label_flip imports one helper, ``_common`` (and its package's ``__init__.py`` runs): an edit of GC's own helpers does not
    stale its records; gc_unclipped builds on gc.py, so gc.py and gc's helpers are on its path."""
    assert plugin_files(str(ROOT / "attacks" / "label_flip.py")) == ["attacks/label_flip.py", "attacks/__init__.py",
                                                                  "attacks/_common.py"]
    unclipped = set(plugin_files(str(ROOT / "attacks" / "gc_unclipped.py")))
    assert {"attacks/gc.py", "attacks/_gradpc.py", "attacks/_feature_gc.py", "attacks/_common.py"} <= unclipped
    files = {f: file_hash(f) for f in dependencies("downstream", [str(ROOT / "attacks" / "label_flip.py")])}
    sources = {"attack": {"module": "attacks.label_flip"}}
    assert staleness({"provenance": {"sources": {**sources, "files": {**files, "attacks/_gradpc.py": "0" * 16}}}}) == []
    gc_files = {f: file_hash(f) for f in dependencies("downstream", [str(ROOT / "attacks" / "gc.py")])}
    gc_sources = {"attack": {"module": "attacks.gc"}}
    assert staleness({"provenance": {"sources": {**gc_sources, "files": {**gc_files, "attacks/_gradpc.py": "0" * 16}}}})
    missing = {f: h for f, h in gc_files.items() if f != "attacks/_feature_gc.py"}
    assert any("attacks/_feature_gc.py is now on its path" in r
               for r in staleness({"provenance": {"sources": {**gc_sources, "files": missing}}}))


def test_a_record_without_hashes_or_from_a_dirty_tree_is_stale() -> None:
    assert staleness({"provenance": {"sources": {}}})
    files = {"attacks/gc.py": "0" * 16}
    assert any("attacks/gc.py changed" in r for r in staleness({"provenance": {"sources": {"files": files}}}))


def _run(args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """``python -m benchmark`` in this process, as a new process would run it: its plugin processes import the
    edited module afresh, and the records hash the files as they are now."""
    from benchmark.__main__ import main

    recorded_hash.cache_clear()
    with monkeypatch.context() as scope:
        scope.setenv("POISONBENCH_PLUGINS", "")  # --plugins adds the edited module, for this run only
        assert main(args) == 0


def _records(results: Path) -> list[dict]:
    records = []
    for path in sorted(results.rglob("*.json")):
        record = json.loads(path.read_text())
        record["provenance"]["code"]["dirty"] = False  # this check is about the edited file, not the checkout
        path.write_text(json.dumps(record))
        records.append(record)
    return records


@pytest.mark.heavy
def test_editing_an_attack_makes_its_records_stale_and_run_stale_recomputes_them(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import TINY_SUITE

    monkeypatch.syspath_prepend(str(tmp_path))  # the plugin processes inherit this process's path

    package = tmp_path / "edited_plugins"
    package.mkdir()
    (package / "__init__.py").write_text("")
    module = package / "edit_me.py"
    module.write_text(PLUGIN)
    raw = {**TINY_SUITE, "scenarios": TINY_SUITE["scenarios"][:1]}
    raw["tracks"] = {"downstream": {**TINY_SUITE["tracks"]["downstream"], "attacks": ["none", "edit_me"]}}
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(raw))
    args = ["run", "--suite", str(tmp_path / "suite.yaml"), "--results-dir", str(tmp_path / "results"),
            "--cache-dir", str(tmp_path / "cache"), "--no-leaderboard", "--plugins", "edited_plugins.edit_me"]
    _run(args, monkeypatch)
    first = _records(tmp_path / "results")
    assert len(first) == 2 and stale_report(tmp_path / "results") == ""

    module.write_text(PLUGIN + "\n# an edit\n")
    report = stale_report(tmp_path / "results")
    assert "1 result(s) of suite tiny" in report and "edit_me.py changed" in report and "__edit_me__" in report
    assert "--stale" in report

    _run([*args, "--stale"], monkeypatch)
    second = _records(tmp_path / "results")
    assert stale_report(tmp_path / "results") == ""
    walls = {r["cell_id"]: r["provenance"]["wall_seconds"] for r in first}
    recomputed = [r["cell_id"] for r in second if r["provenance"]["wall_seconds"] != walls[r["cell_id"]]]
    assert len(recomputed) == 1 and "__edit_me__" in recomputed[0]  # the `none` cell was not touched


def test_a_tree_differing_only_in_the_benchmarks_outputs_is_not_dirty(tmp_path: Path) -> None:
    """Records, boards and figures are outputs (rewritten by runs): a run started while another run's
    records are uncommitted is clean; an edited source is dirty."""
    from benchmark.results import git_version

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "attacks").mkdir()
    (tmp_path / "leaderboard" / "results" / "cpu").mkdir(parents=True)
    record, source = tmp_path / "leaderboard" / "results" / "cpu" / "cell.json", tmp_path / "attacks" / "gc.py"
    record.write_text("{}")
    source.write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    assert git_version(tmp_path)["dirty"] is False
    record.write_text('{"metrics": {}}')
    assert git_version(tmp_path)["dirty"] is False
    source.write_text("x = 2\n")
    assert git_version(tmp_path)["dirty"] is True
