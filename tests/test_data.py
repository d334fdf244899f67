"""Tests for :mod:`benchmark.data`: bundled datasets, torchvision loaders on tiny fake files, local sources."""

from __future__ import annotations

import hashlib
import pickle
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import CIFAR10, CIFAR100

from benchmark.data import (
    DATASETS,
    DatasetNotFoundError,
    ImageDataset,
    _resize_images,
    dataset_names,
    load_dataset,
    stratified_subset,
)
from benchmark.registry import UnknownNameError


def _as_bytes_rows(images: torch.Tensor) -> set[bytes]:
    """Each image quantised back to uint8, as bytes, for set comparisons."""
    q = (images * 255).round().to(torch.uint8).reshape(len(images), -1).numpy()
    return {row.tobytes() for row in q}


def _check_contract(ds: ImageDataset) -> None:
    assert ds.images.dtype == torch.float32 and ds.images.ndim == 4
    assert ds.images.is_contiguous() and ds.images.device.type == "cpu"
    assert ds.labels.dtype == torch.int64 and ds.labels.shape == (len(ds),)
    assert 0.0 <= float(ds.images.min()) and float(ds.images.max()) <= 1.0
    assert ds.image_shape == tuple(ds.images.shape[1:])


# ------------------------------------------------------------------------------------------ registry


def test_registered_names() -> None:
    assert dataset_names() == ["cifar10", "cifar100", "digits", "mnist5k", "stl10", "svhn"]
    assert dataset_names() == DATASETS.names()


def test_unknown_name_lists_choices() -> None:
    with pytest.raises(UnknownNameError, match="mnist5k"):
        load_dataset("mnist6k", "train")


@pytest.mark.parametrize("split", ["val", "Train", ""])
def test_bad_split(split: str) -> None:
    with pytest.raises(ValueError, match="split"):
        load_dataset("mnist5k", split)


def test_bad_image_size() -> None:
    with pytest.raises(ValueError, match="image_size"):
        load_dataset("digits", "test", image_size=0)


# ------------------------------------------------------------------------------------------ mnist5k


def test_mnist5k_shapes_and_balance() -> None:
    train, test = load_dataset("mnist5k", "train"), load_dataset("mnist5k", "test")
    assert train.images.shape == (4000, 1, 28, 28) and test.images.shape == (1000, 1, 28, 28)
    for ds, per_class in ((train, 400), (test, 100)):
        _check_contract(ds)
        assert ds.name == "mnist5k" and ds.num_classes == 10
        assert torch.bincount(ds.labels, minlength=10).tolist() == [per_class] * 10
    assert float(train.images.max()) == 1.0  # really scaled by 255, not left at 0..255 or squashed


def test_mnist5k_split_is_fixed_and_disjoint() -> None:
    a, b = load_dataset("mnist5k", "train"), load_dataset("mnist5k", "train")
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    train_rows, test_rows = _as_bytes_rows(a.images), _as_bytes_rows(load_dataset("mnist5k", "test").images)
    assert len(train_rows) == 4000 and len(test_rows) == 1000
    assert not train_rows & test_rows


def test_loads_do_not_share_memory() -> None:
    a = load_dataset("mnist5k", "test")
    a.images.fill_(0.5)  # a poisoning attack editing its copy in place
    b = load_dataset("mnist5k", "test")
    assert float(b.images.min()) == 0.0


# ------------------------------------------------------------------------------------------ digits


def test_digits_resized_and_stratified() -> None:
    native = load_dataset("digits", "train")
    assert native.image_shape == (1, 8, 8)
    train = load_dataset("digits", "train", image_size=28)
    test = load_dataset("digits", "test", image_size=28)
    _check_contract(train)
    _check_contract(test)
    assert train.images.shape[1:] == (1, 28, 28) and 1420 <= len(train) <= 1450
    assert len(train) + len(test) == 1797
    assert torch.equal(train.labels, native.labels)
    totals = torch.bincount(train.labels, minlength=10) + torch.bincount(test.labels, minlength=10)
    for n_test, total in zip(torch.bincount(test.labels, minlength=10).tolist(), totals.tolist(), strict=True):
        assert abs(n_test - 0.2 * total) <= 1
    assert not _as_bytes_rows(load_dataset("digits", "train").images) & _as_bytes_rows(
        load_dataset("digits", "test").images
    )


def test_resize_keeps_constant_images_and_range() -> None:
    out = _resize_images(torch.full((3, 1, 8, 8), 0.25), 20)
    assert out.shape == (3, 1, 20, 20)
    assert torch.allclose(out, torch.full_like(out, 0.25), atol=1e-6)
    checker = torch.zeros(1, 1, 8, 8)
    checker[..., ::2, ::2] = 1.0
    sharp = _resize_images(checker, 27)
    assert 0.0 <= float(sharp.min()) and float(sharp.max()) <= 1.0


# ------------------------------------------------------------------------------------------ CIFAR via torchvision


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _write_pickle(path: Path, obj: dict) -> None:
    with path.open("wb") as f:
        pickle.dump(obj, f)


def _fake_cifar(
    root: Path,
    monkeypatch: pytest.MonkeyPatch,
    cls: type[CIFAR10],
    batches: dict[str, int],
    label_key: str,
    meta_key: str,
    num_classes: int,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write tiny batches in CIFAR's own pickle format and point ``cls`` at their real md5 sums.

    The integrity check of torchvision still runs; only the expected checksums are swapped for the
    ones of our files. Returns ``file -> (NCHW uint8 images, labels)``.
    """
    folder = root / cls.base_folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(123)
    written = {}
    for filename, n in batches.items():
        images = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
        labels = rng.integers(0, num_classes, size=n)
        # CIFAR rows are 3072 bytes: the red plane, then green, then blue, each row-major.
        _write_pickle(folder / filename, {"data": images.reshape(n, 3072), label_key: labels.tolist()})
        written[filename] = (images, labels)
    meta_file = cls.meta["filename"]
    _write_pickle(folder / meta_file, {meta_key: [f"class{i}" for i in range(num_classes)]})
    monkeypatch.setattr(cls, "train_list", [[f, _md5(folder / f)] for f, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[f, _md5(folder / f)] for f, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": _md5(folder / meta_file)})
    return written


def _expected(written: dict[str, tuple[np.ndarray, np.ndarray]], files: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    images = np.concatenate([written[f][0] for f in files])
    labels = np.concatenate([written[f][1] for f in files])
    return torch.from_numpy(images).float() / 255, torch.from_numpy(labels).long()


@pytest.fixture
def fake_cifar10(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    sizes = {f"data_batch_{i}": i + 1 for i in range(1, 6)} | {"test_batch": 4}
    return _fake_cifar(tmp_path, monkeypatch, CIFAR10, sizes, "labels", "label_names", 10)


def test_cifar10_through_torchvision(tmp_path: Path, fake_cifar10: dict) -> None:
    train = load_dataset("cifar10", "train", root=tmp_path)
    _check_contract(train)
    images, labels = _expected(fake_cifar10, [f"data_batch_{i}" for i in range(1, 6)])
    assert train.images.shape == (20, 3, 32, 32) and train.num_classes == 10 and train.name == "cifar10"
    assert torch.equal(train.images, images) and torch.equal(train.labels, labels)

    test = load_dataset("cifar10", "test", root=str(tmp_path), image_size=16)
    images, labels = _expected(fake_cifar10, ["test_batch"])
    assert test.images.shape == (4, 3, 16, 16) and torch.equal(test.labels, labels)


def test_cifar10_root_from_env(tmp_path: Path, fake_cifar10: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POISONBENCH_DATA_ROOT", str(tmp_path))
    assert len(load_dataset("cifar10", "test")) == 4


def test_cifar100_through_torchvision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written = _fake_cifar(
        tmp_path, monkeypatch, CIFAR100, {"train": 7, "test": 3}, "fine_labels", "fine_label_names", 100
    )
    test = load_dataset("cifar100", "test", root=tmp_path)
    images, labels = _expected(written, ["test"])
    assert test.num_classes == 100 and torch.equal(test.images, images) and torch.equal(test.labels, labels)
    assert len(load_dataset("cifar100", "train", root=tmp_path)) == 7


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn", "stl10"])
def test_missing_torchvision_data(tmp_path: Path, name: str) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset(name, "train", root=empty)
    message = str(info.value)
    assert str(empty) in message and name in message and "--data-root" in message
    assert isinstance(info.value, FileNotFoundError)


def test_failed_download_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(self: CIFAR10) -> None:
        raise urllib.error.URLError("no internet")

    monkeypatch.setattr(CIFAR10, "download", offline)
    with pytest.raises(DatasetNotFoundError, match="download failed"):
        load_dataset("cifar10", "test", root=tmp_path, download=True)


# ------------------------------------------------------------------------------------------ npz source


def _save_npz(path: Path, **arrays: np.ndarray) -> str:
    np.savez(path, **arrays)
    return f"npz:{path}"


def test_npz_nhwc_uint8(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, size=(6, 5, 4, 3), dtype=np.uint8)
    x_test = rng.integers(0, 256, size=(2, 5, 4, 3), dtype=np.uint8)
    name = _save_npz(
        tmp_path / "d.npz", x_train=x_train, y_train=np.array([0, 1, 2, 0, 1, 2]), x_test=x_test, y_test=[4, 0]
    )
    train = load_dataset(name, "train")
    _check_contract(train)
    assert train.name == name and train.image_shape == (3, 5, 4)
    assert train.num_classes == 5  # max label over both splits + 1
    assert torch.equal(train.images, torch.from_numpy(x_train).permute(0, 3, 1, 2).float() / 255)
    assert load_dataset(name, "test").labels.tolist() == [4, 0]


def test_npz_nchw_float_and_greyscale(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.random((8, 1, 6, 6), dtype=np.float32)
    grey = (rng.random((3, 6, 6)) * 255).astype(np.uint8)
    name = _save_npz(tmp_path / "f.npz", x_train=x, y_train=np.arange(8) % 2, x_test=grey, y_test=np.array([0, 1, 1]))
    train = load_dataset(name, "train", subset=4, subset_seed=3, image_size=12)
    assert train.images.shape == (4, 1, 12, 12) and torch.bincount(train.labels).tolist() == [2, 2]
    assert torch.equal(load_dataset(name, "train").images, torch.from_numpy(x))
    assert load_dataset(name, "test").image_shape == (1, 6, 6)


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"x_train": np.zeros((2, 4, 4)), "y_train": np.zeros(2, int), "x_test": np.zeros((1, 4, 4))}, "y_test"),
        ({"x_train": np.full((2, 4, 4), 255.0)}, r"\[0, 1\]"),
        ({"x_train": np.zeros((2, 4, 4, 7))}, "C in"),
        ({"x_train": np.zeros((2, 4, 4), dtype=np.int32)}, "uint8"),
        ({"y_train": np.array([0.0, 1.0])}, "integer"),
        ({"y_train": np.array([0, 1, 1])}, "2 images but y_train has 3"),
    ],
)
def test_npz_malformed(tmp_path: Path, arrays: dict, match: str) -> None:
    good = {"x_train": np.zeros((2, 4, 4)), "y_train": np.zeros(2, int), "x_test": np.zeros((1, 4, 4)), "y_test": [0]}
    if "y_test" in match:
        good.pop("y_test")
    name = _save_npz(tmp_path / "bad.npz", **(good | arrays))
    with pytest.raises(ValueError, match=match):
        load_dataset(name, "train")


def test_npz_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"nope\.npz"):
        load_dataset(f"npz:{tmp_path / 'nope.npz'}", "train")


# ------------------------------------------------------------------------------------------ folder source


def _write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_folder_rgb(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    pixels = {}
    for split, per_class in (("train", 3), ("test", 1)):
        for cls in ("dog", "cat"):
            for i in range(per_class):
                arr = rng.integers(0, 256, size=(5, 6, 3), dtype=np.uint8)  # H=5, W=6
                _write_png(tmp_path / split / cls / f"{i}.png", arr)
                pixels[(split, cls, i)] = arr
    (tmp_path / "test" / "bird").mkdir()  # a class with no images still gets an id
    train = load_dataset(f"folder:{tmp_path}", "train")
    _check_contract(train)
    assert train.image_shape == (3, 5, 6) and train.num_classes == 3  # bird=0, cat=1, dog=2
    assert train.labels.tolist() == [1, 1, 1, 2, 2, 2]
    expected = torch.from_numpy(pixels[("train", "dog", 0)]).permute(2, 0, 1).float() / 255
    assert torch.equal(train.images[3], expected)
    assert load_dataset(f"folder:{tmp_path}", "test").labels.tolist() == [1, 2]


def test_folder_greyscale_and_errors(tmp_path: Path) -> None:
    for cls in ("a", "b"):
        _write_png(tmp_path / "train" / cls / "x.png", np.full((4, 4), 128, dtype=np.uint8))
    ds = load_dataset(f"folder:{tmp_path}", "train")
    assert ds.image_shape == (1, 4, 4) and torch.allclose(ds.images, torch.full_like(ds.images, 128 / 255))
    with pytest.raises(DatasetNotFoundError, match="test"):
        load_dataset(f"folder:{tmp_path}", "test")
    _write_png(tmp_path / "train" / "b" / "y.png", np.zeros((5, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="same size"):
        load_dataset(f"folder:{tmp_path}", "train")


# ------------------------------------------------------------------------------------------ stratified_subset


def test_stratified_subset_balanced_and_seeded() -> None:
    train = load_dataset("mnist5k", "train")
    a = stratified_subset(train, 100, seed=0)
    assert torch.bincount(a.labels, minlength=10).tolist() == [10] * 10
    b = stratified_subset(train, 100, seed=0)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    c = stratified_subset(train, 100, seed=1)
    assert not torch.equal(a.images, c.images)
    odd = torch.bincount(stratified_subset(train, 105, seed=0).labels, minlength=10)
    assert odd.sum() == 105 and set(odd.tolist()) == {10, 11}
    same = load_dataset("mnist5k", "train", subset=100, subset_seed=0)
    assert torch.equal(same.images, a.images)


def test_stratified_subset_small_class_and_bounds() -> None:
    labels = torch.tensor([0] * 2 + [1] * 50 + [2] * 30)
    ds = ImageDataset("toy", "train", torch.rand(len(labels), 1, 2, 2), labels, 3)
    sub = stratified_subset(ds, 20, seed=5)
    assert torch.bincount(sub.labels).tolist() == [2, 9, 9]
    assert len(stratified_subset(ds, len(ds), seed=0)) == len(ds)
    for bad in (0, len(ds) + 1):
        with pytest.raises(ValueError, match="subset size"):
            stratified_subset(ds, bad, seed=0)


# ------------------------------------------------------------------------------------------ ImageDataset


def test_image_dataset_validation() -> None:
    with pytest.raises(ValueError, match="float32"):
        ImageDataset("x", "train", torch.zeros(2, 1, 2, 2, dtype=torch.float64), torch.zeros(2, dtype=torch.long), 1)
    with pytest.raises(ValueError, match="labels"):
        ImageDataset("x", "train", torch.zeros(2, 1, 2, 2), torch.zeros(3, dtype=torch.long), 1)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        ImageDataset("x", "train", torch.zeros(2, 1, 2, 2), torch.tensor([0, 2]), 2)
    ds = ImageDataset("x", "train", torch.zeros(2, 2, 2, 1).permute(0, 3, 1, 2), torch.tensor([0, 1]), 2)
    assert ds.images.is_contiguous() and len(ds) == 2 and "n=2" in repr(ds)


def test_a_truncated_file_that_passes_the_md5_check_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sizes = {f"data_batch_{i}": 2 for i in range(1, 6)} | {"test_batch": 2}
    _fake_cifar(tmp_path, monkeypatch, CIFAR10, sizes, "labels", "label_names", 10)
    path = tmp_path / CIFAR10.base_folder / "test_batch"
    path.write_bytes(path.read_bytes()[:100])  # cut mid-pickle, then make the checksum agree
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", _md5(path)]])
    with pytest.raises(DatasetNotFoundError, match="corrupted"):
        load_dataset("cifar10", "test", root=tmp_path)


def test_every_missing_data_set_is_named_before_compute(tmp_path: Path) -> None:
    from benchmark.runner import check_data_available
    from benchmark.suite import expand_cells, load_suite

    suite = load_suite("full", [f"data.root={tmp_path}", "seeds=[0]"])
    with pytest.raises(DatasetNotFoundError) as info:
        check_data_available(expand_cells(suite)[0])
    message = str(info.value)
    assert all(name in message for name in ("'cifar10'", "'cifar100'", "'stl10'")), message
