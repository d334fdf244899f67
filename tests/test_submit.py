"""``python -m benchmark submit ID`` (benchmark/submit.py): the contributor's path end to end.

The slow test plays it on a clone of this repository shrunk to one tiny suite: the maintainers commit its
board; an author adds an attack (its module and a suite entry, nothing else), commits and submits it; then
a data-stage defense and a sanitising one the same way. Each submission must end green, with ``leaderboard --check`` passing on the
committed result and no file touched outside the author's own module and suite entry."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchmark.__main__ import main
from benchmark.provenance import REPO_ROOT

TINY_SMOKE = {
    "name": "smoke", "tier": "smoke", "description": "one tiny downstream matrix (the submit test's world)",
    "seeds": [0],
    "data": {"image_size": 16, "pretrain_subset": 300, "downstream_subset": 300},
    "encoders": {"methods": ["simclr"], "backbones": ["cnn_micro"],
                 "recipe": {"epochs": 1, "batch_size": 128, "optimizer": "adam", "lr": 0.002}},
    "scenarios": [{"name": "finetune", "pretrain": "mnist5k", "downstream": "mnist5k"}],
    "tracks": {"downstream": {"budgets": [0.1], "input_epsilons": [None], "attacks": ["none", "label_flip"],
                              "defenses": ["none"], "victim": {"kind": "convex", "l2": 0.001}}},
}

NEW_ATTACK = '''"""Test Author, "Shifting the class means", a fixture of tests/test_submit.py.

Copies of clean points relabelled to the next class, nudged towards that class's mean image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from benchmark.api import DownstreamAttack, DownstreamAttackContext, DownstreamPoison, MethodConfig, register_attack


@dataclass(frozen=True, kw_only=True)
class MeanShiftConfig(MethodConfig):
    strength: float = 0.3

    def problems(self) -> list[str]:
        return [] if 0.0 <= self.strength <= 1.0 else ["strength: must lie in [0, 1]"]


@register_attack
class MeanShift(DownstreamAttack):
    id = "mean_shift"
    Config = MeanShiftConfig
    citation = "Test Author, Shifting the class means (fixture)"
    cost = {"downstream": {}}  # no loop beyond the harness' own work

    def craft_downstream(self, ctx: DownstreamAttackContext) -> DownstreamPoison:
        base = torch.randperm(len(ctx.train_labels), generator=ctx.generator)[: ctx.budget]
        labels = (ctx.train_labels[base] + 1) % ctx.num_classes
        means = torch.stack([ctx.train_images[ctx.train_labels == c].mean(0) for c in range(ctx.num_classes)])
        images = (1 - self.config.strength) * ctx.train_images[base] + self.config.strength * means[labels]
        return DownstreamPoison(images=images.clamp(0, 1), labels=labels, base_indices=base)
'''

NEW_DEFENSE = '''"""Test Author, "Quantising pixels", a fixture of tests/test_submit.py.

Rounds every pixel to one of ``levels`` grey levels before the victim trains.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from benchmark.api import Defense, DefenseContext, MethodConfig, register_defense


@dataclass(frozen=True, kw_only=True)
class QuantiseConfig(MethodConfig):
    levels: int = 4

    def problems(self) -> list[str]:
        return [] if self.levels >= 2 else ["levels: must be at least 2"]


@register_defense
class Quantise(Defense):
    id = "quantise"
    stage = "data"
    tracks = ("downstream",)
    Config = QuantiseConfig
    citation = "Test Author, Quantising pixels (fixture)"
    cost = {"downstream": {}}

    def transform_images(self, images: torch.Tensor, ctx: DefenseContext) -> torch.Tensor:
        steps = self.config.levels - 1
        return torch.round(images * steps) / steps
'''


NEW_SANITISER = '''"""Test Author, "Nearest class mean", a fixture of tests/test_submit.py.

Keeps a training point when the class mean nearest to its features (the encoder's) is its own label's.
"""

from __future__ import annotations

import torch

from benchmark.api import Defense, DefenseContext, FeatureExtractorView, register_defense


@register_defense
class NearestMean(Defense):
    id = "nearest_mean"
    stage = "sanitise"
    tracks = ("downstream",)
    citation = "Test Author, Nearest class mean (fixture)"
    cost = {"downstream": {"data": {"passes": "n"}}}

    def keep_indices(self, extractor: FeatureExtractorView | None, images: torch.Tensor,
                     labels: torch.Tensor | None, ctx: DefenseContext) -> torch.Tensor:
        assert extractor is not None and labels is not None
        features, labels = extractor.features(images), labels.to(extractor.device)
        means = torch.stack([features[labels == c].mean(0) for c in range(ctx.num_classes)])
        return torch.nonzero(torch.cdist(features, means).argmin(1) == labels).flatten().cpu()
'''


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def benchmark(repo: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "benchmark", *args], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=1800, check=False)


def shrunk_clone(tmp_path: Path) -> Path:
    """A clone of HEAD whose only suite with results is TINY_SMOKE, with no record yet."""
    repo = tmp_path / "repo"
    subprocess.run(["git", "clone", "--quiet", str(REPO_ROOT), str(repo)], check=True)
    for folder in (repo / "leaderboard" / "results").iterdir():
        shutil.rmtree(folder)
    for figure in (repo / "leaderboard" / "plots").glob("*.png"):
        figure.unlink()
    (repo / "leaderboard" / "recompute.yaml").unlink(missing_ok=True)
    (repo / "benchmark" / "suites" / "smoke.yaml").write_text(yaml.safe_dump(TINY_SMOKE, sort_keys=False))
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "a tiny world")
    return repo


def add_method(repo: Path, path: str, source: str, kind: str, entry: dict) -> None:
    """What an author writes: the module, and its entry in the smoke suite."""
    (repo / path).write_text(source)
    suite_file = repo / "benchmark" / "suites" / "smoke.yaml"
    suite = yaml.safe_load(suite_file.read_text())
    suite["tracks"]["downstream"][f"{kind}s"].append(entry)
    suite_file.write_text(yaml.safe_dump(suite, sort_keys=False))


@pytest.mark.slow
def test_a_new_attack_and_defense_reach_the_board_through_submit(tmp_path: Path) -> None:
    if shutil.which("bwrap") is None:
        pytest.skip("the submission's records come from the sandbox: apt-get install bubblewrap")
    repo = shrunk_clone(tmp_path)
    env = {**os.environ, "POISONBENCH_PLUGINS": "", "POISONBENCH_PROGRESS": "0",
           "POISONBENCH_CACHE": str(tmp_path / "cache"), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    baseline = benchmark(repo, env, "run", "--sandbox", "required")
    assert baseline.returncode == 0, baseline.stderr[-2000:]
    assert benchmark(repo, env, "plot").returncode == 0
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "the maintainers' board")
    start = git(repo, "rev-parse", "HEAD").strip()

    for path, source, kind, plugin_id in (("attacks/mean_shift.py", NEW_ATTACK, "attack", "mean_shift"),
                                          ("defenses/quantise.py", NEW_DEFENSE, "defense", "quantise"),
                                          ("defenses/nearest_mean.py", NEW_SANITISER, "defense", "nearest_mean")):
        add_method(repo, path, source, kind, {"id": plugin_id})
        uncommitted = benchmark(repo, env, "submit", plugin_id)
        assert uncommitted.returncode == 2 and "commit first" in uncommitted.stderr  # before any compute
        git(repo, "add", path, "benchmark/suites/smoke.yaml")
        git(repo, "commit", "-qm", f"add {plugin_id}")
        submitted = benchmark(repo, env, "submit", plugin_id)
        assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
        report = submitted.stdout.split("paste into the pull request", 1)[1]
        assert f"{kind} `{plugin_id}`" in report and "| verify |" in report and "| check |" in report
        assert "FAILED" not in report and f"[{plugin_id}]" in report  # its row on the board
        git(repo, "add", "leaderboard")
        git(repo, "commit", "-qm", f"{plugin_id}: records and board")
        check = benchmark(repo, env, "leaderboard", "--check")
        assert check.returncode == 0, check.stderr[-2000:]

    touched = set(git(repo, "diff", "--name-only", start, "HEAD").split())
    assert {p for p in touched if not p.startswith("leaderboard/")} == {
        "attacks/mean_shift.py", "defenses/quantise.py", "defenses/nearest_mean.py", "benchmark/suites/smoke.yaml"}
    sanitised = [json.loads(p.read_text()) for p in (repo / "leaderboard" / "results" / "smoke").glob("*nearest_mean*.json")]
    flipped = [r for r in sanitised if r["cell"]["attack"]["name"] == "label_flip"]
    assert flipped and all(r["metrics"]["removed_poison_share"] > r["metrics"]["removed_clean_share"] for r in flipped)
    assert "removes" in (repo / "leaderboard" / "README.md").read_text()
    estimate = benchmark(repo, env, "plan", "--suite", "smoke", "--estimate")
    assert estimate.returncode == 0 and "not estimated" not in estimate.stdout, estimate.stdout[-1500:]


def test_submit_says_what_is_wrong_before_any_compute(capsys) -> None:
    assert main(["submit", "no_such_method"]) == 2
    err = capsys.readouterr().err
    assert "no attack or defense has id 'no_such_method'" in err and "label_flip" in err and "attacks/no_such_method.py" in err
