"""Sanitising defenses (``stage = "sanitise"``, ``Defense.keep_indices``): the victim trains on the points
the defense keeps, the harness checks the selection and records the shares of poisons and of clean points
removed (issue #28). The test sanitisers live in ``tests/plugins/hooks.py``; ``defenses/deep_knn.py`` is
the built-in one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmark.suite import expand_cells, load_suite
from benchmark.validation import removed_shares, validate_kept
from tests.test_contracts import run_tiny, tiny_suite

ROOT = Path(__file__).resolve().parent.parent


def test_a_selection_is_checked_and_every_problem_named() -> None:
    assert validate_kept(torch.tensor([3, 0, 2]), 4, "d").tolist() == [0, 2, 3]
    assert validate_kept(torch.tensor([1], dtype=torch.int32), 4, "d").dtype == torch.int64
    for bad, message in ((torch.tensor([0.0, 1.0]), "not an integer type"), (torch.tensor([[0, 1]]), "not 1-D"),
                         (torch.tensor([0, 4]), r"outside \[0, 3\]"), (torch.tensor([1, 1]), "repeat"),
                         (torch.tensor([], dtype=torch.int64), "keeps no point"),
                         (torch.tensor([True, False]), "not an integer type")):
        with pytest.raises(ValueError, match=message):
            validate_kept(bad, 4, "d")
    with pytest.raises(ValueError, match=r"must return a torch\.Tensor"):
        validate_kept([0, 1], 4, "d")


def test_removed_shares_count_poisons_and_clean_points_apart() -> None:
    kept = torch.tensor([0, 1, 2, 5])  # of 8 points, the last 3 poisons: it drops 2 clean (3, 4) and 2 poisons (6, 7)
    shares = removed_shares(kept, 8, torch.tensor([5, 6, 7]))
    assert shares == {"removed_clean_share": 2 / 5, "removed_poison_share": 2 / 3}
    assert removed_shares(kept, 8, None) == {"removed_clean_share": 4 / 8}


def test_the_downstream_victim_trains_on_the_points_kept(tmp_path: Path) -> None:
    """Keeping everything is the undefended victim exactly; Deep k-NN removes flipped labels far more often
    than clean ones; a selection that repeats an index ends the cell with the problem named."""
    raw = tiny_suite("downstream", ["none", "label_flip"], ["none", "_test_keep_all", "deep_knn", "_test_keep_twice"])
    records = {(r["cell"]["attack"]["name"], r["cell"]["defense"]["name"]): r for r in run_tiny(raw, tmp_path)}
    undefended, keep_all = records[("label_flip", "none")]["metrics"], records[("label_flip", "_test_keep_all")]["metrics"]
    assert keep_all["poisoned_accuracy"] == undefended["poisoned_accuracy"]
    assert keep_all["defense_cost"] == 0.0 and keep_all["accuracy_restored"] == 0.0
    assert keep_all["removed_poison_share"] == keep_all["removed_clean_share"] == 0.0
    assert records[("none", "_test_keep_all")]["metrics"]["removed_clean_share"] == 0.0
    knn = records[("label_flip", "deep_knn")]["metrics"]
    assert knn["removed_poison_share"] > knn["removed_clean_share"] + 0.2, knn
    twice = records[("label_flip", "_test_keep_twice")]
    assert twice["status"] == "error" and "keep_indices returned an unusable selection" in twice["message"]
    assert "indices repeat" in twice["message"]


def test_the_pretraining_victim_and_the_supervised_victim_train_on_the_images_kept(tmp_path: Path) -> None:
    raw = tiny_suite("pretrain-availability", ["none", "random_noise"], ["none", "_test_keep_even"])
    records = {(r["cell"]["attack"]["name"], r["cell"]["defense"]["name"]): r for r in run_tiny(raw, tmp_path)}
    sanitised = records[("random_noise", "_test_keep_even")]
    assert sanitised["status"] == "ok", sanitised["message"]
    # budget 1.0: every pre-training image is a poison, and half of them are dropped
    assert sanitised["metrics"]["removed_poison_share"] == 0.5
    assert "supervised_poisoned_accuracy" in sanitised["metrics"] and "defense_cost" in sanitised["metrics"]
    clean = records[("none", "_test_keep_even")]["metrics"]
    assert clean["removed_clean_share"] == 0.5
    assert clean["defended_clean_accuracy"] != records[("none", "none")]["metrics"]["clean_accuracy"]


def test_a_sanitiser_skips_the_targeted_track_whose_poisons_differ_in_shape(write_suite) -> None:
    raw = tiny_suite("pretrain-targeted", ["none"], ["none", "_test_keep_all"])
    cells, skipped = expand_cells(load_suite(str(write_suite(raw))))
    assert all(c.spec["defense"]["id"] == "none" for c in cells)
    assert skipped and all("by their shape alone" in s.reason for s in skipped)


def test_the_documented_hook_is_the_built_in_one() -> None:
    readme = (ROOT / "defenses" / "README.md").read_text()
    snippet = readme.split("## Sanitising defenses", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert snippet.strip() and snippet in (ROOT / "defenses" / "deep_knn.py").read_text()
