"""Suite validation reports every problem before compute; expansion and overrides behave."""

from __future__ import annotations

import pytest

from benchmark.__main__ import main
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
    quick = load_suite("full-quick")
    full = load_suite("full")
    assert quick.raw["encoders"]["recipe"]["epochs"] == 200 and full.raw["encoders"]["recipe"]["epochs"] == 1000
    assert quick.raw["encoders"]["recipe"]["batch_size"] == full.raw["encoders"]["recipe"]["batch_size"]
    assert quick.tier == "full" and quick.name == "full-quick"


def test_a_track_may_use_its_own_seeds(tiny_suite_dict, write_suite) -> None:
    tiny_suite_dict["seeds"] = [0, 1]
    track = next(iter(tiny_suite_dict["tracks"]))
    tiny_suite_dict["tracks"][track]["seeds"] = [1]
    cells = expand_cells(load_suite(str(write_suite(tiny_suite_dict))))[0]
    assert {c.spec["seed"] for c in cells if c.track == track} == {1}
    assert {c.spec["seed"] for c in cells if c.track != track} in (set(), {0, 1})


# ------------------------------------------------------------------------------------------- malformed variants
SHIPPED = ("smoke", "cpu", "full", "full-quick")
BAD_VARIANTS: list[tuple[str, str, str]] = [  # (--set override, what the report must say)
    ("encoders.recipe.epochs=1.5", "encoders", "1.5 is not an integer"),
    ("encoders.recipe.epochs=ten", "encoders", "'ten' is not an integer"),
    ("encoders.recipe.lr=ten", "encoders", "'ten' is not a number"),
    ("encoders.recipe.batch_size=-4", "encoders", "batch_size"),
    ("encoders.method_settings.simclr.proj_hidden=1.5", "proj_hidden", "1.5 is not an integer"),
    ("encoders.method_settings.simclr.proj_hidden=-1", "proj_hidden", "outside"),
    ("encoders.method_settings.simclr.temprature=0.5", "temprature", "did you mean 'temperature'"),
    ("encoders.recipe.augment.crop_scale_min=2", "crop_scale_min", "outside"),
    ("description={a: 1}", "description", "expected str"),
    ("tier=gpu", "tier", "must be one of"),
    ("seeds=[-1]", "seeds", "negative"),
    ("tracks.downstream.seeds=[0, 0]", "seeds", "duplicates"),
    ("compute={device_hours: 10, profile: h200-projectd}", "profile", "did you mean 'h200-projected'"),
    ("compute={device_hours: -1, profile: h200-projected}", "device_hours", "outside"),
    ("seeds=zero", "seeds", "expected a list"),
    ("data.image_size=4", "image_size", "≥ 8"),
    ("data.imagesize=16", "imagesize", "did you mean 'image_size'"),
    ("limits.plugin_seconds=-1", "plugin_seconds", "outside"),
    ("tracks.downstream.budgets=[1.5]", "budgets", "not a fraction"),
    ("tracks.downstream.victim.knd=sgd", "knd", "did you mean 'kind'"),
    ("tracks.downstream.victim.kind=svm", "kind", "must be one of"),
    ("tracks.downstream.victim.l2=-1", "l2", "outside"),
    ("tracks.downstream.victim.sgd.epochs=0", "sgd.epochs", "outside"),
    ("tracks.downstream.input_epsilons=[2]", "input_epsilons", "(0, 1]"),
    ("tracks.downstream.attacks=[{id: gc, settings: {steps: 1.5}}]", "steps", "not an integer"),
    ("tracks.downstream.attacks=[{id: gcc}]", "gcc", "did you mean 'gc'"),
    ("tracks.downstream.attacks=[{id: gc, setings: {}}]", "setings", "did you mean 'settings'"),
    ("tracks.downstream.defenses=[{id: dp_sgd, settings: {epochs: ten}}]", "epochs", "not an integer"),
    ("tracks.downstream.defenses=[{id: dp_sgd, settings: {noise_multiplier: -1}}]", "noise_multiplier", "≥ 0"),
    ("tracks.downstrem.budgets=[0.1]", "downstrem", "did you mean 'downstream'"),
    ("tracks.pretrain-targeted.victim.asr_augmentations=-1", "asr_augmentations", "outside"),
    ("tracks.pretrain-availability.epsilon=ten", "epsilon", "not a number"),
    ("tracks.pretrain-availability.recipe.method=byol", "recipe.method", "set under encoders"),
    ("tracks.pretrain-availability.data.root=/x", "data", "unknown key 'root'"),
]


@pytest.mark.parametrize("suite", SHIPPED)
@pytest.mark.parametrize("override,where,fragment", BAD_VARIANTS, ids=[v[0].split("=")[0] for v in BAD_VARIANTS])
def test_malformed_variants_of_the_shipped_suites_are_rejected(suite: str, override: str, where: str, fragment: str) -> None:
    extra = ["tracks.downstream.defended_attacks=null"] if override.startswith("tracks.downstream.attacks") else []
    with pytest.raises(SuiteError) as err:  # (a tier's defended_attacks name attacks the variant replaces)
        load_suite(suite, [override, *extra])
    assert any(where in p and fragment in p for p in err.value.problems), err.value.problems


def test_every_problem_of_every_depth_is_reported_at_once() -> None:
    overrides = [o for o, _, _ in BAD_VARIANTS[:6]] + ["tracks.downstream.victim.knd=sgd", "limits.plugin_seconds=-1"]
    with pytest.raises(SuiteError) as err:
        load_suite("smoke", overrides)
    assert len(err.value.problems) >= 5, err.value.problems


def test_yaml_exponent_numbers_are_numbers(tmp_path) -> None:
    from benchmark.suite import parse_yaml

    assert parse_yaml("a: 1e-06\nb: 5e3\nc: 1.0e-6\nd: 10\n") == {"a": 1e-06, "b": 5000.0, "c": 1e-06, "d": 10}
    suite = load_suite("smoke", ["encoders.recipe.weight_decay=1e-06"])
    assert suite.raw["encoders"]["recipe"]["weight_decay"] == 1e-06


def test_a_suite_file_that_is_not_utf8_is_a_clear_error(tmp_path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(SuiteError, match="not UTF-8"):
        load_suite(str(path))


def test_a_results_dir_that_is_a_file_fails_before_compute(tmp_path) -> None:
    from benchmark.__main__ import main

    target = tmp_path / "results"
    target.write_text("not a folder")
    code = main(["run", "--suite", "smoke", "--results-dir", str(target), "--cache-dir", str(tmp_path / "cache"),
                 "--no-leaderboard"])
    assert code == 2
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize(("device", "message"), [
    ("cuda", "no CUDA GPU"), ("cuda:7", "CUDA"), ("tpu", "not a device name"), ("meta", "only cpu and cuda")])
def test_an_unusable_device_is_a_clear_error_before_compute(device: str, message: str, tmp_path, capsys,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    if device == "cuda:7":
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert main(["run", "--device", device, "--results-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists() and not (tmp_path / "c").exists()


def test_defended_methods_restricts_the_defended_cells_only(tiny_suite_dict, write_suite) -> None:
    tiny_suite_dict["encoders"]["methods"] = ["simclr", "byol"]
    tiny_suite_dict["encoders"]["method_settings"]["byol"] = {"proj_hidden": 64, "proj_dim": 32}
    track = "downstream"
    tiny_suite_dict["tracks"][track] |= {"defenses": ["none", "finetune"], "defended_methods": ["simclr"]}
    cells, skipped = expand_cells(load_suite(str(write_suite(tiny_suite_dict))))
    mine = [c for c in cells if c.track == track]
    assert {c.spec["encoder"]["method"] for c in mine if c.spec["defense"]["id"] != "none"} == {"simclr"}
    assert {c.spec["encoder"]["method"] for c in mine if c.spec["defense"]["id"] == "none"} == {"simclr", "byol"}
    assert any("defended_methods" in s.reason for s in skipped)
    tiny_suite_dict["tracks"][track]["defended_methods"] = ["moco"]
    with pytest.raises(SuiteError, match="defended_methods: 'moco' is not one of the track's methods"):
        load_suite(str(write_suite(tiny_suite_dict)))


def test_track_methods_restrict_one_track_to_some_encoders(tiny_suite_dict, write_suite) -> None:
    """``tracks.<track>.methods``: that track's cells use those SSL methods only (a tier's time limit), the
    other tracks keep every method; the rest are listed as skipped; a method the suite lacks, or a defended
    method outside the track's, is a clear error."""
    tiny_suite_dict["encoders"]["methods"] = ["simclr", "byol"]
    tiny_suite_dict["encoders"]["method_settings"]["byol"] = {"proj_hidden": 64, "proj_dim": 32}
    tiny_suite_dict["tracks"]["downstream"] |= {"methods": ["byol"]}
    tiny_suite_dict["tracks"]["pretrain-targeted"] = {"budgets": [0.02], "attacks": ["none", "poisoned_encoder"]}
    cells, skipped = expand_cells(load_suite(str(write_suite(tiny_suite_dict))))
    by_track = {t: {c.spec["encoder"]["method"] for c in cells if c.track == t} for t in {c.track for c in cells}}
    assert by_track.pop("downstream") == {"byol"}
    assert by_track == {"pretrain-targeted": {"simclr", "byol"}}
    assert any(s.track == "downstream" and "tracks.downstream.methods" in s.reason for s in skipped)
    tiny_suite_dict["tracks"]["downstream"] |= {"methods": ["moco"]}
    with pytest.raises(SuiteError, match=r"downstream\.methods: 'moco' is not one of the suite's methods"):
        load_suite(str(write_suite(tiny_suite_dict)))
    tiny_suite_dict["tracks"]["downstream"] |= {"methods": ["byol"], "defended_methods": ["simclr"]}
    with pytest.raises(SuiteError, match="defended_methods: 'simclr' is not one of the track's methods"):
        load_suite(str(write_suite(tiny_suite_dict)))


def test_plan_summarises_by_default_and_lists_cells_on_request(capsys, tmp_path) -> None:
    """A newcomer's `plan --suite smoke` fits a screen (issue #28: it printed 1,314 lines); --cells lists them."""
    from benchmark.__main__ import main
    from benchmark.suite import expand_cells, load_suite

    assert main(["plan", "--suite", "smoke", "--results-dir", str(tmp_path)]) == 0
    summary = capsys.readouterr().out.splitlines()
    cells = len(expand_cells(load_suite("smoke"))[0])
    assert len(summary) <= 40 and f"{cells} cells" in summary[0] and "0 finished" in summary[0]
    assert main(["plan", "--suite", "smoke", "--results-dir", str(tmp_path), "--cells", "--only", "attack=gc",
                 "--only", "seed=0"]) == 0
    listed = [line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("[todo]")]
    assert listed and all("__gc__" in line for line in listed)


def test_one_poison_count_rule_robust_to_float_error() -> None:
    """A budget fraction becomes a count by one rule everywhere (benchmark.api.poison_count): ⌊fraction · n⌋
    where 0.29 · 100 = 28.999999999999996 in floating point still gives 29 (int() gave 28)."""
    from benchmark.api import poison_count

    assert 0.29 * 100 < 29 and poison_count(0.29, 100) == 29
    assert poison_count(0.1, 1000) == 100 and poison_count(0.03, 1437) == 43 and poison_count(1.0, 5000) == 5000
    assert poison_count(0.1334, 3000) == 400 and poison_count(0.0, 100) == 0


@pytest.mark.parametrize("name", ["smoke", "cpu", "full-quick", "full"])
def test_the_rule_gives_every_shipped_cell_the_count_it_had(name: str) -> None:
    """The records must not move: on every cell of the shipped suites the rule agrees with the one its track
    used before (``int(b·n)`` downstream, ``floor(b·n + 1e-9)`` on the pre-training tracks)."""
    import math

    from benchmark.api import poison_count
    from benchmark.work import cell_sizes

    cells, _ = expand_cells(load_suite(name))
    for cell in cells:
        sizes = cell_sizes(cell)
        n = sizes.train if cell.track == "downstream" else sizes.pretrain
        before = int(cell.spec["budget"] * n) if cell.track == "downstream" else math.floor(cell.spec["budget"] * n + 1e-9)
        assert poison_count(cell.spec["budget"], n) == before, (cell.cell_id, n)


# ------------------------------------------------------------------------------------------- typed cells
def test_cells_carry_their_spec_typed() -> None:
    from benchmark.pretrain import SSLRecipe
    from benchmark.tracks.specs import DataSpec, ScenarioSpec, VictimSpec

    cells, _ = expand_cells(load_suite("smoke"))
    for cell in cells:
        assert isinstance(cell.encoder, SSLRecipe) and cell.encoder.method == cell.spec["encoder"]["method"]
        assert isinstance(cell.victim, VictimSpec) and cell.victim.kind == cell.spec["victim"]["kind"]
        assert isinstance(cell.data, DataSpec) and cell.data.image_size == cell.spec["data"]["image_size"]
        assert isinstance(cell.scenario, ScenarioSpec) and cell.scenario.to_dict() == cell.spec["scenario"]
        assert (cell.budget, cell.seed, cell.input_epsilon) == (cell.spec["budget"], cell.spec["seed"], cell.spec["input_epsilon"])
        assert cell.attack.to_dict() == cell.spec["attack"] and cell.defense.to_dict() == cell.spec["defense"]


def test_build_config_builds_nested_specs_with_their_defaults() -> None:
    from benchmark.plugin_base import build_config, config_problems
    from benchmark.probe import SGDProbeConfig
    from benchmark.tracks.specs import VictimSpec

    victim = build_config(VictimSpec, {"kind": "sgd", "sgd": {"epochs": 3, "milestones": [0.5]}})
    assert isinstance(victim.sgd, SGDProbeConfig)
    assert (victim.sgd.epochs, victim.sgd.milestones, victim.sgd.lr, victim.l2) == (3, (0.5,), 1.0, "auto")
    assert build_config(VictimSpec, {}).sgd is None
    problems = config_problems(VictimSpec, {"sgd": {"epochs": 0, "milestones": [2.0]}}, "victim")
    assert any(p.startswith("victim.sgd.epochs") for p in problems)
    assert any(p.startswith("victim.sgd.milestones") for p in problems)


def test_a_suite_is_typed_too() -> None:
    suite = load_suite("cpu")
    assert suite.spec.name == "cpu" and suite.spec.encoders.methods == suite.raw["encoders"]["methods"]
    assert set(suite.track_specs) == set(suite.raw["tracks"])
    for name, spec in suite.track_specs.items():
        assert spec.budgets == suite.raw["tracks"][name]["budgets"]


def test_a_suite_that_extends_another_leaves_out_a_track_with_null(tmp_path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("extends: smoke\nname: mine\ntracks:\n  pretrain-targeted: null\n")
    suite = load_suite(str(path))
    assert "pretrain-targeted" not in suite.tracks and "downstream" in suite.tracks
    assert all(c.track != "pretrain-targeted" for c in expand_cells(suite)[0])
