"""Suite validation reports every problem before compute; expansion and overrides behave."""

from __future__ import annotations

import pytest

from benchmark.suite import SuiteError, apply_overrides, expand_cells, load_suite


def test_builtin_suites_validate() -> None:
    for name in ("smoke", "cpu", "full"):
        try:
            suite = load_suite(name)
        except SuiteError as exc:
            if "no suite named" in str(exc):
                continue
            raise
        cells, _ = expand_cells(suite)
        assert cells, name


def test_every_problem_is_reported_at_once(tiny_suite_dict, write_suite) -> None:
    raw = tiny_suite_dict
    raw["tracks"]["downstream"]["attacks"] = ["none", "label_flp"]
    raw["tracks"]["downstream"]["budgets"] = [1.5]
    raw["encoders"]["methods"] = ["simclr", "swav"]
    raw["scenarios"][1]["downstream"] = "imagenet"
    raw["colour"] = "blue"
    with pytest.raises(SuiteError) as info:
        load_suite(str(write_suite(raw)))
    text = "\n".join(info.value.problems)
    assert len(info.value.problems) >= 5
    assert "label_flp" in text and "label_flip" in text  # the valid choices are listed
    assert "1.5" in text and "swav" in text and "imagenet" in text and "colour" in text


def test_unknown_attack_setting_names_the_valid_ones(tiny_suite_dict, write_suite) -> None:
    raw = tiny_suite_dict
    raw["tracks"]["downstream"]["attacks"] = [{"id": "label_flip", "settings": {"strength": 3}}]
    with pytest.raises(SuiteError, match="strength"):
        load_suite(str(write_suite(raw)))


def test_unknown_suite_lists_builtins() -> None:
    with pytest.raises(SuiteError, match="smoke"):
        load_suite("no-such-suite")


def test_malformed_yaml_is_reported(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(SuiteError, match="YAML"):
        load_suite(str(path))


def test_overrides_are_parsed_as_yaml() -> None:
    raw, problems = apply_overrides({"a": {"b": 1}}, ["a.b=[0.1, 0.2]", "c.d=true", "broken"])
    assert raw == {"a": {"b": [0.1, 0.2]}, "c": {"d": True}}
    assert len(problems) == 1 and "broken" in problems[0]


def test_expansion_counts_and_stable_ids(tiny_suite_dict, write_suite) -> None:
    suite = load_suite(str(write_suite(tiny_suite_dict)))
    cells, skipped = expand_cells(suite)
    assert len(cells) == 2 * 3  # scenarios × attacks (one method, backbone, seed, budget)
    assert len({c.id for c in cells}) == len(cells)
    again, _ = expand_cells(load_suite(str(write_suite(tiny_suite_dict))))
    assert [c.id for c in cells] == [c.id for c in again]
    assert not skipped


def test_override_changes_cell_ids(tiny_suite_dict, write_suite) -> None:
    path = str(write_suite(tiny_suite_dict))
    base = {c.id for c in expand_cells(load_suite(path))[0]}
    changed = {c.id for c in expand_cells(load_suite(path, ["encoders.recipe.epochs=3"]))[0]}
    assert base.isdisjoint(changed)  # a different recipe never reuses results


def test_suite_can_extend_another(tmp_path) -> None:
    quick = load_suite("full200")
    full = load_suite("full")
    assert quick.raw["encoders"]["recipe"]["epochs"] == 200 and full.raw["encoders"]["recipe"]["epochs"] == 1000
    assert quick.raw["encoders"]["recipe"]["batch_size"] == full.raw["encoders"]["recipe"]["batch_size"]
    assert quick.tier == "full" and quick.name == "full200"
