"""The `full` suite end to end on fake data: CIFAR-10, CIFAR-100 and STL-10 files in torchvision's own
on-disk formats (written here, md5 sums swapped for theirs), ResNet-18 with the CIFAR stem, every track,
scenario, attack and defense of `full`, with every schedule shrunk to one or two steps. It checks the
paths `--suite full` takes on a user's machine (loaders, resizing STL-10, the ResNet recipes, the skipped
combinations), not numbers: every cell must end `ok` (the FT decoder may be refused by its quality gate).
One seed, one downstream budget, SimCLR's whole matrix and the other methods' no-attack cells: about 260
cells, ≈ 15 min on 2 CPU cores."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from torchvision.datasets import CIFAR10, CIFAR100, STL10

from benchmark.runner import run_suite
from benchmark.suite import expand_cells, load_suite
from tests.test_data import _fake_cifar, _md5

pytestmark = pytest.mark.slow
# The device the run uses: the CPU here; `make gpu-check` runs the same test with POISONBENCH_TEST_DEVICE=cuda.
DEVICE = os.environ.get("POISONBENCH_TEST_DEVICE", "cpu")

TINY = {  # one or two steps of everything; names as in full.yaml
    "gc": {"steps": 2, "gradpc_steps": 2}, "gc_unclipped": {"steps": 2, "gradpc_steps": 2},
    "tgda": {"epochs": 1, "follower_steps": 2, "cg_iters": 2},
    "ue": {"max_rounds": 1, "pgd_steps": 1, "model_steps": 1, "batch_size": 32},
    "ue_classwise": {"mode": "classwise", "max_rounds": 1, "pgd_steps": 1, "model_steps": 1, "batch_size": 32},
    "ft_feature_space": {"gc_steps": 2, "gradpc_steps": 2},
    "ft_decoder": {"gc_steps": 2, "gradpc_steps": 2, "decoder_epochs": 1},
    "ft_feature_matching": {"gc_steps": 2, "gradpc_steps": 2, "match_steps": 2},
    "cp_c": {"mode": "classwise", "rounds": 1, "model_steps": 1, "noise_batches": 1, "pgd_steps": 1},
    "cp_s": {"mode": "samplewise", "init_from": "classwise", "init_rounds": 1, "rounds": 1, "model_steps": 1,
             "noise_batches": 1, "pgd_steps": 1},
    "adversarial_training": {"epochs": 1, "steps": 1, "ssl_steps": 1, "supervised_epochs": 1},
    "matrix_completion": {"n_masks": 1},
    "finetune": {"epochs": 1, "clean_size": 32}, "finetune-1000": {"epochs": 1, "clean_size": 32},
    "finetune-5000": {"epochs": 1, "clean_size": 32},
    "dp_sgd": {"epochs": 1, "supervised_epochs": 1},
}


def _shrunk(entries: list) -> list:
    out = []
    for item in entries:
        item = {"id": item} if isinstance(item, str) else dict(item)
        name = item.get("name", item["id"])
        if name in TINY:
            item["settings"] = {**(item.get("settings") or {}), **TINY[name]}
        out.append(item)
    return out


def _fake_stl10(root: Path, monkeypatch: pytest.MonkeyPatch, n_train: int, n_test: int) -> None:
    folder = root / STL10.base_folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(7)
    for split, n in (("train", n_train), ("test", n_test), ("unlabeled", 2)):
        rng.integers(0, 256, size=(n, 3, 96, 96), dtype=np.uint8).tofile(folder / f"{split}_X.bin")
        if split != "unlabeled":
            (np.arange(n) % 10 + 1).astype(np.uint8).tofile(folder / f"{split}_y.bin")
    (folder / "class_names.txt").write_text("\n".join(f"class{i}" for i in range(10)))
    monkeypatch.setattr(STL10, "train_list", [[f, _md5(folder / f)] for f, _ in STL10.train_list])
    monkeypatch.setattr(STL10, "test_list", [[f, _md5(folder / f)] for f, _ in STL10.test_list])


@pytest.fixture
def fake_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "data"
    _fake_cifar(root, monkeypatch, CIFAR10, {f"data_batch_{i}": 60 for i in range(1, 6)} | {"test_batch": 60},
                "labels", "label_names", 10)
    _fake_cifar(root, monkeypatch, CIFAR100, {"train": 300, "test": 60}, "fine_labels", "fine_label_names", 100)
    _fake_stl10(root, monkeypatch, 100, 60)
    return root


def test_full_suite_runs_every_track_on_fake_torchvision_files(tmp_path: Path, fake_data: Path) -> None:
    full = load_suite("full").raw
    tracks = {}
    for name, body in full["tracks"].items():
        tracks[name] = {**body, "attacks": _shrunk(body["attacks"]), "defenses": _shrunk(body["defenses"])}
    tracks["downstream"]["budgets"] = [0.1]  # one budget: the paths, not the dose-response
    tracks["pretrain-availability"]["victim"] = {**tracks["pretrain-availability"]["victim"], "supervised_epochs": 1}
    # subsets that leave CIFAR-10 images for the target pool; 3 poisons per target
    tracks["pretrain-targeted"] |= {"data": {"pretrain_subset": 150, "downstream_subset": 100}, "budgets": [0.2]}
    raw = {**full, "name": "full-fake", "seeds": [0], "budget": None, "tracks": tracks,
           "data": {**full["data"], "root": str(fake_data)},
           "encoders": {**full["encoders"], "recipe": {**full["encoders"]["recipe"], "epochs": 1, "batch_size": 32,
                                                        "warmup_epochs": 0},
                        "method_settings": {"simclr": {"proj_hidden": 32, "proj_dim": 16},
                                            "mocov2": {"queue_size": 64, "proj_hidden": 32, "proj_dim": 16},
                                            "byol": {"proj_hidden": 32, "proj_dim": 16}}}}
    path = tmp_path / "full-fake.yaml"
    path.write_text(yaml.safe_dump(raw))
    suite = load_suite(str(path))
    cells, _ = expand_cells(suite)
    # every cell of SimCLR, and the no-attack cells of MoCo v2 and BYOL (their encoders, victims and defenses
    # on every track and scenario): the paths, at about half the cost of the whole matrix
    chosen = [c for c in cells if c.spec["encoder"]["method"] == "simclr" or c.spec["attack"]["id"] == "none"]
    assert {c.track for c in chosen} == set(full["tracks"])
    assert {c.spec["scenario"]["name"] for c in chosen} == {s["name"] for s in full["scenarios"]}
    computed = []
    for only in (["method=simclr"], ["attack=none"]):
        summary = run_suite(suite, results_dir=tmp_path / "results", cache_dir=tmp_path / "cache", device=DEVICE,
                            only=only)
        computed += summary.computed
    records = [json.loads(p.read_text()) for p in (tmp_path / "results").rglob("*.json")]
    assert len(records) == len(chosen) == len(computed)
    failed = [(r["cell_id"], r["message"]) for r in records
              if r["status"] != "ok" and not (r["cell"]["attack"]["id"] == "ft_decoder" and "decoder" in str(r["message"]))]
    assert not failed, failed[:5]
