"""The board's defense rows and published numbers (leaderboard/render.py): cost from every cell, no rank for a
defense whose same-schedule reference is broken or that was measured on fewer columns, no rank on one seed;
each published number beside the metric it was measured with."""

from __future__ import annotations

import itertools

import pandas as pd

from leaderboard.render import _defense_matrix, _defense_rows, defense_effects


def _cells(defense: str, *, restored: float, cost_by_attack: dict[str, float], reference_gap: float = 0.0,
           encoders: tuple[str, ...] = ("simclr/cnn", "byol/cnn"), seeds: tuple[int, ...] = (0, 1, 2)) -> list[dict]:
    rows = []
    for attack, encoder, seed in itertools.product(("none", "label_flip"), encoders, seeds):
        wobble = 0.01 * (seed - 1)
        rows.append({"attack": attack, "defense": defense, "encoder": encoder, "scenario": "finetune", "budget": 0.1,
                     "constraint": "unconstrained", "seed": seed, "space": "input",
                     "m:accuracy_drop": (0.0 if attack == "none" else 0.2) - (0.0 if defense == "none" else restored) + wobble,
                     "m:accuracy_restored": None if defense == "none" or attack == "none" else restored + wobble,
                     "m:defense_cost": None if defense == "none" else cost_by_attack[attack] + wobble,
                     "m:clean_accuracy": 0.9,
                     "m:reference_clean_accuracy": None if defense == "none" else 0.9 - reference_gap})
    return rows


def _board(*defenses: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(_cells("none", restored=0.0, cost_by_attack={}) + [row for d in defenses for row in d])


def test_cost_is_read_from_every_cell_of_the_defense() -> None:
    """A defense measured only under attack still has a cost (every cell records ``defense_cost``)."""
    attacked_only = [r for r in _cells("filter", restored=0.1, cost_by_attack={"none": 0.0, "label_flip": 0.04})
                     if r["attack"] != "none"]
    (effect,) = defense_effects(_board(attacked_only), "downstream", "label_flip")
    assert abs(effect["cost"] - 4.0) < 1e-6 and abs(effect["restored"] - 10.0) < 1e-6


def test_a_broken_reference_is_flagged_and_not_ranked() -> None:
    sound = _cells("sound", restored=0.05, cost_by_attack={"none": 0.01, "label_flip": 0.01})
    broken = _cells("broken", restored=0.15, cost_by_attack={"none": -0.02, "label_flip": -0.02}, reference_gap=0.3)
    rows = _defense_rows(_board(sound, broken), "downstream", "label_flip")
    assert [row[0] for row in rows] == ["1", "–"]  # the broken one restores "more" and still ranks last, unranked
    assert rows[1][1].startswith("broken") and "reference broken: 30.0 points" in rows[1][1]
    assert "(reference broken)" in _defense_matrix(_board(sound, broken), "accuracy_drop")


def test_a_defense_on_fewer_columns_is_not_ranked_against_the_others() -> None:
    everywhere = _cells("everywhere", restored=0.05, cost_by_attack={"none": 0.0, "label_flip": 0.0})
    one_column = _cells("partial", restored=0.2, cost_by_attack={"none": 0.0, "label_flip": 0.0}, encoders=("simclr/cnn",))
    rows = _defense_rows(_board(everywhere, one_column), "downstream", "label_flip")
    assert [(row[0], row[-1]) for row in rows] == [("1", "2 of 2"), ("–", "1 of 2")]
    assert "on 1 columns, others on 2" in rows[1][1]


def test_one_seed_gives_no_rank() -> None:
    one = _cells("a", restored=0.05, cost_by_attack={"none": 0.0, "label_flip": 0.0}, seeds=(0,))
    other = _cells("b", restored=0.01, cost_by_attack={"none": 0.0, "label_flip": 0.0}, seeds=(0,))
    rows = _defense_rows(pd.DataFrame(_cells("none", restored=0.0, cost_by_attack={}, seeds=(0,)) + one + other),
                         "downstream", "label_flip")
    assert [row[0] for row in rows] == ["–", "–"] and rows[0][1] == "a"


# ------------------------------------------------------------------------------------------ published numbers
def test_each_published_number_sits_beside_its_own_metric() -> None:
    """CP's published numbers are probe=clean: the availability headline shows a probe=clean column and the
    published line points at it (the headline ranks probe=poisoned); PoisonedEncoder's ImageNet-100 number
    says no suite here runs that data set; the downstream paper's one established number is there."""
    from pathlib import Path

    from leaderboard.render import _rows, headline_blocks, load_records, published_blocks, published_headline

    assert "beside the *probe=clean drop* column" in published_headline("pretrain-availability", {"cp_s", "cp_c"})
    assert "`cp_s` probe=clean drop 46.9 / 36.7 / 32.6" in published_headline("pretrain-availability", {"cp_s"})
    assert "which no suite here runs" in published_headline("pretrain-targeted", {"poisoned_encoder"})
    assert "`gc` drop 29.5 (SSL method not stated)" in published_headline("downstream", {"gc"})
    records, _ = load_records(Path("leaderboard/results"))
    df = _rows(records)
    blocks = headline_blocks(df[df["track"] == "pretrain-availability"])
    tables = [payload[0] for kind, payload in blocks if kind == "table"]
    assert any("probe=clean drop (the published protocol)" in headers for headers in tables)
    # each track's headline names the encoders it was measured on (a tier may run a track on some only)
    cpu = df[(df["track"] == "pretrain-availability") & (df["tier"] == "cpu")]
    named = [text for kind, text in headline_blocks(cpu) if kind == "p" and text.startswith("**pretrain-availability**")]
    assert named == [n for n in named if "(encoders " + ", ".join(f"`{e}`" for e in sorted(set(cpu["encoder"]))) + ")" in n]
    assert named
    _, rows = published_blocks(df)
    imagenet = [row for row in rows if "ImageNet-100" in row[6]]
    assert imagenet and all("does not run imagenet100" in row[5] for row in imagenet)
    assert any(row[0] == "downstream" and row[2] == "gc" for row in rows)


def test_the_page_shows_the_published_numbers() -> None:
    from pathlib import Path

    from leaderboard.site import render_site

    page = render_site(Path("leaderboard/results"), Path("leaderboard/plots"))
    assert '<section id="published"><h2>Published numbers</h2>' in page and "ImageNet-100" in page
    assert 'href="index.html#published"' in page


def test_the_board_names_its_machines_and_flags_a_track_that_mixes_them() -> None:
    """SSL pre-training amplifies the float rounding that differs between CPU models (benchmark/verify.py):
    the board says which machines computed a tier and names a track whose rows come from more than one."""
    from leaderboard.render import device_label, machines_note

    assert device_label({"type": "cpu", "cpu": "AMD EPYC"}) == "AMD EPYC"
    assert device_label({"type": "cuda", "name": "NVIDIA H100"}) == "NVIDIA H100"
    one = pd.DataFrame({"track": ["downstream"] * 3, "device": ["AMD EPYC"] * 3})
    assert machines_note(one) == "Computed on: AMD EPYC (3 cells)."
    mixed = pd.concat([one, pd.DataFrame({"track": ["pretrain-targeted"] * 2, "device": ["AMD EPYC", "Intel Xeon"]})])
    note = machines_note(mixed)
    assert "AMD EPYC (4 cells), Intel Xeon (1 cell)" in note
    assert "`pretrain-targeted` come from more than one machine" in note and "`downstream`" not in note


def test_a_detector_gets_its_auroc_and_rates_and_no_restored_row() -> None:
    """Backdoored victims score above their clean encoders: AUROC 1; the verdict's rates count each clean encoder
    once; the detector is in no attacks × defenses matrix."""
    from leaderboard.render import detection_rows, detectors

    rows = []
    for attack, seed in itertools.product(("none", "sslbkd", "sslbkd_trigger_only"), (0, 1, 2)):
        poisoned = attack == "sslbkd"
        rows.append({"attack": attack, "defense": "decree", "encoder": "simclr/cnn", "scenario": "finetune", "budget": 0.05,
                     "constraint": "unconstrained", "seed": seed, "m:asr_gain": 0.3 if poisoned else 0.0,
                     "m:n_poison": 50.0 if poisoned else 0.0,
                     "m:detection_score": -0.02 if poisoned else -0.3 - 0.01 * seed,
                     "m:detection_flagged": 1.0 if poisoned else float(seed == 0),
                     "m:detection_score_clean_encoder": -0.3 - 0.01 * seed,
                     "m:detection_flagged_clean_encoder": float(seed == 0)})
    undefended = [dict(r, defense="none", **{k: None for k in r if k.startswith("m:detection")}) for r in rows]
    board = pd.DataFrame(undefended + rows)
    assert detectors(board) == {"decree"}
    assert detection_rows(board) == [["`decree`", "`sslbkd`", "1.00", "100%", "33%", "3 / 3"]]
    assert _defense_matrix(board, "asr_gain") == ""  # only `none` is left once the detector is set aside
