"""Figures from result JSON: drawn from the committed smoke results, deterministic, torch-free."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from leaderboard.plots import write_plots

SMOKE = Path(__file__).resolve().parents[1] / "leaderboard" / "results" / "smoke"


def _some_results(tmp_path: Path) -> Path:
    """A slice of the committed smoke results: two attacks downstream (with their defenses) and the
    pre-training availability track."""
    out = tmp_path / "results"
    (out / "smoke").mkdir(parents=True)  # where records lie: <results>/<suite>/<cell_id>.json
    for path in SMOKE.glob("*.json"):
        track, _method, _backbone, _scenario, attack, *_ = path.name.split("__")
        if track == "pretrain-availability" or (track == "downstream" and attack in ("none", "label_flip")):
            shutil.copy(path, out / "smoke" / path.name)
    return out


def test_plots_are_written_for_each_figure_and_are_deterministic(tmp_path: Path) -> None:
    results = _some_results(tmp_path)
    first = write_plots(results, tmp_path / "a")
    second = write_plots(results, tmp_path / "b")
    names = sorted(p.name for p in first)
    assert names == ["smoke-smoke-defenses.png", "smoke-smoke-downstream.png", "smoke-smoke-pretrain-availability.png"]
    for a, b in zip(sorted(first), sorted(second)):
        assert a.stat().st_size > 10_000
        assert a.read_bytes() == b.read_bytes()


def test_plot_command_needs_no_torch_and_fails_without_results(tmp_path: Path) -> None:
    code = ("import sys, runpy; sys.modules['torch'] = None; sys.argv = ['benchmark', 'plot', '--results-dir', "
            f"{str(tmp_path / 'empty')!r}, '--output-dir', {str(tmp_path / 'out')!r}]; runpy.run_module('benchmark', run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 1 and "no results to plot" in proc.stderr, proc.stderr


@pytest.mark.slow
def test_the_examples_figure_shows_every_input_space_attack(tmp_path: Path) -> None:
    """`python -m benchmark examples`: every input-space attack of the smoke suite crafts through the harness
    and gets a row of clean | poisoned pairs (1-2 minutes)."""
    from benchmark.examples import write_examples
    from benchmark.suite import load_suite

    out = write_examples(load_suite("smoke"), tmp_path / "examples.png", n=200)
    assert out.stat().st_size > 50_000


def _targeted_results(tmp_path: Path) -> Path:
    """The committed smoke results of the pre-training targeted track."""
    out = tmp_path / "results"
    (out / "smoke").mkdir(parents=True)
    for path in SMOKE.glob("pretrain-targeted__*.json"):
        shutil.copy(path, out / "smoke" / path.name)
    return out


def test_targeted_margins_are_shown_in_logits_beside_the_probability_gain(tmp_path: Path) -> None:
    """Margins are logits, not fractions: the board does not multiply them by 100 as it does rates."""
    import json

    from leaderboard.render import metric_scale, render_leaderboard

    assert metric_scale("m:target_margin_gain") == metric_scale("n_poison") == 1.0
    assert metric_scale("m:target_probability_gain") == metric_scale("targets_pulled") == 100.0
    out = _targeted_results(tmp_path)
    text, problems = render_leaderboard(out)
    assert not problems
    assert "margin gain (logits)" in text and "targets pulled (%)" in text
    margins = [json.loads(p.read_text())["metrics"].get("target_margin_gain") for p in (out / "smoke").glob("*poisoned_encoder__none__*")]
    assert margins and all(m is not None for m in margins)
    mean = sum(margins) / len(margins)
    assert f"{mean:.1f}" in text  # one seed per column: the mean of the column means is the plain mean


def test_a_control_row_neither_wins_nor_is_the_attack_the_defenses_face(tmp_path: Path) -> None:
    """The decoy-reference PoisonedEncoder is a control (its module's ``control_settings``); a zero effect
    wins no column."""
    from leaderboard.render import _rows, _strongest_attacks, load_records

    out = _targeted_results(tmp_path)
    records, problems = load_records(out)
    assert not problems
    df = _rows(records)
    rows, strongest = _strongest_attacks(df[df["status"] == "ok"], "pretrain-targeted")
    by_name = {row[0].split("]")[0].lstrip("["): row for row in rows}
    decoy = by_name["poisoned_encoder_decoy"]
    assert "*(control)*" in decoy[0] and decoy[2] == "–"
    assert strongest == "poisoned_encoder"
    zero = df[(df["attack"] == "poisoned_encoder") & (df["defense"] == "none")]["m:asr_gain"]
    if (zero <= 0).all():
        assert by_name["poisoned_encoder"][2].startswith("0 of")


def _downstream_frame(drops: dict[str, list[float]]) -> pd.DataFrame:
    import pandas as pd

    rows = []
    for attack, values in drops.items():
        for seed, drop in enumerate(values):
            rows.append({"attack": attack, "defense": "none", "space": "feature" if attack == "ft_feature_space" else "input",
                         "m:accuracy_drop": drop, "encoder": "simclr/cnn_micro", "scenario": "finetune", "budget": 0.1,
                         "constraint": "unconstrained", "seed": seed, "attack_settings": "{}", "attack_module": None})
    return pd.DataFrame(rows)


def test_the_board_marks_a_column_the_feature_space_bound_does_not_bound() -> None:
    """Issue #25: the feature-space row is an upper bound of the input-space attacks only where it is ≥ the best
    of them within the seed spread; elsewhere the board names the column, both numbers and why."""
    from leaderboard.render import upper_bound_note

    bounded = _downstream_frame({"ft_feature_space": [0.05, 0.06, 0.055], "gc": [0.01, 0.02, 0.015]})
    assert upper_bound_note(bounded, "downstream") == ""
    within_spread = _downstream_frame({"ft_feature_space": [0.03, 0.05, 0.04], "label_flip": [0.03, 0.06, 0.045]})
    assert upper_bound_note(within_spread, "downstream") == ""
    below = _downstream_frame({"ft_feature_space": [0.010, 0.012, 0.011], "label_flip": [0.05, 0.06, 0.04],
                               "gc": [0.005, 0.006, 0.004]})
    note = upper_bound_note(below, "downstream")
    assert "`ft_feature_space` is below the best input-space attack" in note and "`label_flip` 5.0 ± 1.0" in note
    assert "1.1 ± 0.1" in note and "Why:" in note


def test_tgda_last_quarter_share_on_the_board_is_weighted_by_gain() -> None:
    """A cell whose leader gained almost nothing has a meaningless share; the board's share is the mean
    last-quarter gain over the mean gain."""
    import pandas as pd

    from leaderboard.render import diagnostic_text

    df = pd.DataFrame({"d:tgda_objective_gain": [1.0, 0.001], "d:tgda_last_quarter_gain": [0.02, 0.001],
                       "d:tgda_last_quarter_share": [0.02, 1.0]})
    assert "last quarter's share of it 2.1%" in diagnostic_text(df)


def test_a_method_keeps_its_colour_when_another_joins() -> None:
    """Issue #28: plot colours followed alphabetical order, so a new attack recoloured every existing one."""
    from leaderboard.plots import method_colours

    ids = ["none", "label_flip", "random_noise", "gc", "gc_unclipped", "tgda", "ue", "ue_classwise",
           "ft_feature_space", "ft_decoder", "ft_feature_matching", "adversarial_training", "matrix_completion",
           "finetune", "dp_sgd"]
    before = method_colours(ids)
    assert len(set(before.values())) == len(ids)
    after = method_colours(ids + ["aaa_new_attack"])
    assert sum(after[i] != before[i] for i in ids) <= 1  # only a method it collides with can move


def test_the_board_reads_plugin_metadata_from_records_not_source(tmp_path: Path) -> None:
    """A record carries its attack's metadata; the board labels rows from it (an expected null here), and a record
    written before records carried it takes it from another record of the same module."""
    import json

    from leaderboard.render import _metas, _rows, load_records

    out = _some_results(tmp_path)
    paths = sorted((out / "smoke").glob("downstream__*__label_flip__*.json"))
    half = len(paths) // 2
    for path in paths[:half]:  # records that carry the metadata (here: a null by design)
        record = json.loads(path.read_text())
        record["plugins"]["attack"]["expected_null"] = {"downstream": "a null by design (test)"}
        path.write_text(json.dumps(record))
    for path in paths[half:]:  # records written before records carried it
        older = json.loads(path.read_text())
        older.pop("plugins")
        path.write_text(json.dumps(older))
    records, problems = load_records(out)
    assert not problems
    df = _rows(records)
    metas = _metas(df[df["attack"] == "label_flip"], "attack")
    assert metas["label_flip"]["expected_null"] == {"downstream": "a null by design (test)"}
    assert set(df[df["attack"] == "label_flip"]["attack_meta"]) == {json.dumps(record["plugins"]["attack"], sort_keys=True)}
