"""Pieces every track shares: the run environment, data at the encoder's resolution, encoders and
cached features from the artifact cache, and the clean linear probe."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from benchmark.cache import ArtifactCache, TensorDict
from benchmark.data import ImageDataset, load_dataset
from benchmark.plugins import catalogue
from benchmark.pretrain import FeatureExtractor, SSLRecipe, extractor_from_tensors, extractor_tensors, make_extractor, train_ssl
from benchmark.probe import fit_linear_head, head_accuracy, select_l2
from benchmark.tracks.specs import DataSpec, VictimSpec
from benchmark.training import chunked
from benchmark.utils import config_hash, fast_layout, fast_path
from benchmark.workers import STATS, call_plugin


@dataclass
class RunEnv:
    """What the cells of a run share in the scoring process: the artifact cache, the device, and objects
    kept between cells (:meth:`shared`), each with a fingerprint of its contents checked after every cell."""

    cache: ArtifactCache
    device: torch.device
    memo: dict[str, Any] = field(default_factory=dict)  # in-process reuse of shared settings
    plugin_seconds: float = 3600.0  # time limit of one plugin call
    fingerprints: dict[str, str] = field(default_factory=dict)
    touched: set[str] = field(default_factory=set)

    def shared(self, key: Mapping[str, Any], build: Callable[[], Any], keep: int = 16) -> Any:
        """An object shared by the cells of one encoder/scenario, kept for the next few cells."""

        name = config_hash(key)
        if name not in self.memo:
            while len(self.memo) >= keep:
                evicted = next(iter(self.memo))
                self.memo.pop(evicted)
                self.fingerprints.pop(evicted, None)
            self.memo[name] = build()
            self.fingerprints[name] = state_fingerprint(self.memo[name])
        self.touched.add(name)
        return self.memo[name]

    def begin_cell(self) -> None:
        self.touched = set()

    def verify(self) -> list[str]:
        """The shared objects this cell used whose contents changed (they are dropped, so the next cell
        rebuilds them from the cache); empty when everything is intact."""
        changed = []
        for name in sorted(self.touched):
            if name in self.memo and state_fingerprint(self.memo[name]) != self.fingerprints[name]:
                changed.append(f"{type(self.memo[name]).__name__} {name}")
                self.memo.pop(name)
                self.fingerprints.pop(name)
        return changed


def state_fingerprint(obj: Any) -> str:
    """A hash of every tensor (data, labels, features, module weights and buffers) and plain value
    reachable from ``obj``'s attributes, without following the run environment or the cache."""
    import hashlib

    digest = hashlib.blake2b(digest_size=16)
    seen: set[int] = set()
    alive: list[Any] = []  # keeps visited objects alive, so that an id is never reused within one walk

    def visit(value: Any, path: str) -> None:
        if isinstance(value, (RunEnv, ArtifactCache)) or id(value) in seen or (callable(value) and not isinstance(value, torch.nn.Module)):
            return
        seen.add(id(value))
        alive.append(value)
        if isinstance(value, torch.Tensor):
            digest.update(f"{path}:{tuple(value.shape)}:{value.dtype}".encode())
            digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
        elif isinstance(value, torch.nn.Module):
            for k, v in value.state_dict(keep_vars=False).items():
                visit(v, f"{path}.{k}")
        elif isinstance(value, Mapping):
            for k in sorted(value, key=str):
                visit(value[k], f"{path}[{k}]")
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                visit(v, f"{path}[{i}]")
        elif hasattr(value, "__dict__"):  # private attributes (``_heads``) are memo caches that may grow
            for k, v in sorted(vars(value).items()):
                if not k.startswith("_"):
                    visit(v, f"{path}.{k}")
        elif isinstance(value, (str, int, float, bool, type(None))):
            digest.update(f"{path}={value!r}".encode())

    visit(obj, "")
    return digest.hexdigest()


def plugin_call(env: RunEnv, function: str, kind: str, entry: Any, request: Mapping[str, Any], *, rng_seed: int,
                bridge: Any = None) -> Any:
    """Run ``function`` of :mod:`benchmark.plugin_host` for the attack or defense ``entry`` in its own plugin
    process (:mod:`benchmark.workers`), with ``request`` (plain data: what the threat model grants)."""

    info = catalogue().get(kind, entry.id)
    full = {"module": info.module, "kind": kind, "id": entry.id, "settings": dict(entry.settings),
            "device": str(env.device), "rng_seed": int(rng_seed), "threads": torch.get_num_threads(), **request}
    answer = call_plugin(function, full, timeout=env.plugin_seconds, bridge=bridge)
    if isinstance(answer, dict) and "seconds" in answer:  # a call's time is measured here, never reported by it
        answer["seconds"] = STATS.last_seconds
    return answer


def extractor_spec(encoder: Mapping[str, Any], extractor: FeatureExtractor, in_chans: int) -> dict[str, Any]:
    """A feature extractor as plain data (its recipe and tensors), for a plugin process to rebuild."""
    return {"recipe": dict(encoder), "in_chans": int(in_chans), "tensors": extractor_tensors(extractor)}


def plain_tensor(value: Any, what: str) -> torch.Tensor:
    """A contiguous copy of a plain ``torch.Tensor`` (what a plugin sent back), or a clear error."""
    if type(value) is not torch.Tensor:
        raise TypeError(f"{what}: expected a tensor, got {type(value).__name__}")
    return value.detach().clone().contiguous()


@dataclass
class CellOutcome:
    """What a track returns: ``metrics`` for the board, ``details`` for provenance/diagnostics."""

    metrics: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"
    message: str = ""


def recipe_of(encoder: Mapping[str, Any]) -> SSLRecipe:
    return SSLRecipe(**encoder)


def load_split(name: str, split: str, data: DataSpec, *, subset: int | None, channels: int | None = None,
               image_size: int | None = None) -> ImageDataset:
    """A dataset split at the suite's resolution, its training split subset to ``subset`` images (a test split is
    whole), with ``channels`` channels."""
    size = image_size or data.image_size
    ds = load_dataset(name, split, root=data.root, download=data.download, image_size=size,
                      subset=subset if split == "train" else None, subset_seed=0)
    if channels is not None and ds.images.shape[1] != channels:
        ds = _with_images(ds, match_channels(ds.images, channels))
    return ds


def _with_images(ds: ImageDataset, images: torch.Tensor) -> ImageDataset:
    return ImageDataset(name=ds.name, split=ds.split, images=images, labels=ds.labels, num_classes=ds.num_classes)


def match_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Grey → RGB by repetition, RGB → grey by the mean (for transfer across colour spaces)."""
    if images.shape[1] == channels:
        return images
    if images.shape[1] == 1:
        return images.repeat(1, channels, 1, 1).contiguous()
    return images.mean(dim=1, keepdim=True).repeat(1, channels, 1, 1).contiguous()


def data_key(data: DataSpec) -> dict[str, Any]:
    """The part of the data settings that changes tensors (the root directory does not)."""
    return {"image_size": data.image_size, "pretrain_subset": data.pretrain_subset,
            "downstream_subset": data.downstream_subset}


def encoder_key(encoder: Mapping[str, Any], pretrain: str, data: DataSpec, seed: int,
                variant: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Cache key of a pre-trained encoder; ``variant`` names poisons/defenses that changed its training."""
    return {"encoder": dict(encoder), "pretrain": pretrain, "data": data_key(data), "seed": seed,
            "variant": dict(variant or {})}


def pretrained_extractor(env: RunEnv, key: Mapping[str, Any], images: torch.Tensor,
                         extra_images: torch.Tensor | None = None) -> FeatureExtractor:
    """The (undefended) encoder pre-trained on ``images`` plus ``extra_images`` (injected images of another
    shape, see :func:`benchmark.pretrain.train_ssl`) for ``key`` (cached). Its feature standardisation is
    fitted on ``images``."""
    recipe = recipe_of(key["encoder"])
    in_chans = images.shape[1]

    def build() -> TensorDict:
        desc = f"pre-train {recipe.method}/{recipe.backbone} seed {key['seed']}"
        model = train_ssl(recipe, images, seed=int(key["seed"]), device=env.device, desc=desc, extra_images=extra_images)
        return extractor_tensors(make_extractor(model.backbone, images, env.device))

    return extractor_from_tensors(recipe, in_chans, env.cache.get_or_build("encoder", key, build), env.device)


def clean_encoder_key(cell: Any) -> dict[str, Any]:
    """The cache key of ``cell``'s clean encoder: the same for every track whose data and recipe agree."""
    return encoder_key(cell.spec["encoder"], cell.scenario.pretrain, cell.data, cell.seed)


def clean_encoder_id(cell: Any) -> str:
    return config_hash(clean_encoder_key(cell))


def build_clean_encoder(cell: Any, env: RunEnv) -> str:
    """Pre-train ``cell``'s clean encoder into the cache (a no-op when it is there); returns its id. The
    executors that run groups of cells in parallel call it once per encoder before the groups that use it."""
    pre = load_split(cell.scenario.pretrain, "train", cell.data, subset=cell.data.pretrain_subset)
    pretrained_extractor(env, clean_encoder_key(cell), pre.images)
    return clean_encoder_id(cell)


def random_init_extractor(env: RunEnv, encoder: Mapping[str, Any], images: torch.Tensor, seed: int) -> FeatureExtractor:
    """The same backbone at its random initialisation (seeded): the baseline an SSL encoder must beat."""
    recipe = recipe_of(encoder)
    torch.manual_seed(seed)
    return make_extractor(recipe.build_model(images.shape[1]).backbone, images, env.device)


def cached_features(env: RunEnv, key: Mapping[str, Any], extractor: FeatureExtractor, images: torch.Tensor) -> torch.Tensor:
    def build() -> TensorDict:
        with torch.no_grad(), fast_path(env.device):
            feats = chunked(lambda part: extractor(fast_layout(part.to(env.device), env.device)).float(), images, size=1024)
        return {"features": feats}

    return env.cache.get_or_build("features", key, build)["features"].to(env.device)


def cached_scalar(env: RunEnv, kind: str, key: Mapping[str, Any], compute: Callable[[], float]) -> float:
    """A scalar (an accuracy) computed once per ``key`` and kept in the artifact cache."""
    return float(env.cache.get_or_build(kind, key, lambda: {"value": torch.tensor(float(compute()))})["value"])


def resolve_l2(victim: VictimSpec, features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[float, dict[str, float]]:
    """The head's L2 weight: fixed, or chosen on a validation split of clean training data."""
    if victim.l2 != "auto":
        return float(victim.l2), {}
    return select_l2(features, labels.to(features.device), num_classes, list(victim.l2_grid), seed=0)


def probe_accuracy(train_f: torch.Tensor, train_y: torch.Tensor, test_f: torch.Tensor, test_y: torch.Tensor,
                   num_classes: int, l2: float) -> float:
    head = fit_linear_head(train_f, train_y.to(train_f.device), num_classes, l2=l2)
    return head_accuracy(head, test_f, test_y.to(test_f.device))
