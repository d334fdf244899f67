"""Pieces the two pre-training tracks share: the setting of one encoder/scenario/seed (data, clean
encoder, cached features, the probe's L2 weight), defense plumbing, and the supervised victim used for
cross-evaluation of availability poisons."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import kornia.augmentation as K
import torch
from torch import nn

from benchmark.api import DEFENSES, Defense, DefenseContext
from benchmark.data import ImageDataset
from benchmark.pretrain import FeatureExtractor, SSLTrainingHooks
from benchmark.probe import LinearHead, fit_linear_head, head_accuracy
from benchmark.suite import NO_DEFENSE, Cell
from benchmark.tracks.common import (
    RunEnv,
    cached_features,
    data_key,
    encoder_key,
    load_split,
    pretrained_extractor,
    recipe_of,
    resolve_l2,
)
from benchmark.utils import config_hash, derive_seed, seed_everything


class PretrainSetting:
    """What the cells of one (encoder, scenario, data, seed, victim) share; the clean encoder is the
    downstream track's (same cache key), so it is trained once for all tracks."""

    @classmethod
    def shared(cls, cell: Cell, env: RunEnv) -> "PretrainSetting":
        """The setting of ``cell``, built once and reused by the next cells of both pre-training tracks."""
        spec = cell.spec
        key = {"track": "pretrain", **{k: spec[k] for k in ("encoder", "scenario", "data", "seed", "victim")}}
        return env.shared(key, lambda: cls(cell, env))

    def __init__(self, cell: Cell, env: RunEnv) -> None:
        spec = cell.spec
        self.env, self.seed = env, int(spec["seed"])
        self.encoder_spec, self.victim, self.data = spec["encoder"], spec["victim"], spec["data"]
        self.scenario = spec["scenario"]
        self.recipe = recipe_of(self.encoder_spec)
        self.pre = load_split(self.scenario["pretrain"], "train", self.data, subset_key="pretrain_subset")
        self.channels, self.size = self.pre.images.shape[1], self.pre.images.shape[-1]
        self.train = self._split("train")
        self.test = self._split("test")
        self.num_classes = self.train.num_classes
        # probe = poisoned (head trained on the poisoned pre-training images) needs their labels to be
        # labels of the downstream task: only when both are the same dataset
        self.same_data = self.scenario["pretrain"] == self.scenario["downstream"]
        self.clean_key = encoder_key(self.encoder_spec, self.scenario["pretrain"], self.data, self.seed)
        self.clean = self.encoder(self.clean_key, self.pre.images)
        train_f = self.features(self.clean_key, self.clean, "train", self.train.images)
        self.l2, self.l2_scores = resolve_l2(self.victim, train_f, self.train.labels, self.num_classes)
        self._heads: dict[str, LinearHead] = {}

    def _split(self, split: str) -> ImageDataset:
        return load_split(self.scenario["downstream"], split, self.data, subset_key="downstream_subset",
                          channels=self.channels, image_size=self.size)

    def variant_key(self, variant: Mapping[str, Any]) -> dict[str, Any]:
        """The encoder key of a victim pre-trained under ``variant`` (poison, defense); {} = clean."""
        variant = {k: v for k, v in variant.items() if v is not None}
        return encoder_key(self.encoder_spec, self.scenario["pretrain"], self.data, self.seed, variant=variant)

    def encoder(self, key: Mapping[str, Any], images: torch.Tensor, *, hooks: SSLTrainingHooks | None = None,
                after: Callable[[FeatureExtractor], FeatureExtractor] | None = None) -> FeatureExtractor:
        return pretrained_extractor(self.env, key, images, hooks=hooks, after=after)

    def features(self, key: Mapping[str, Any], extractor: FeatureExtractor, split: str, images: torch.Tensor,
                 extra: Mapping[str, Any] | None = None) -> torch.Tensor:
        fkey = {"encoder": dict(key), "downstream": self.scenario["downstream"], "split": split, **(extra or {})}
        return cached_features(self.env, fkey, extractor, images)

    def head(self, key: Mapping[str, Any], extractor: FeatureExtractor) -> LinearHead:
        """The convex probe on the clean labeled downstream training set (probe = clean)."""
        name = config_hash(key)
        if name not in self._heads:
            feats = self.features(key, extractor, "train", self.train.images)
            self._heads[name] = fit_linear_head(feats, self.train.labels.to(feats.device), self.num_classes, l2=self.l2)
        return self._heads[name]

    def probe_accuracy(self, key: Mapping[str, Any], extractor: FeatureExtractor) -> float:
        test_f = self.features(key, extractor, "test", self.test.images)
        return head_accuracy(self.head(key, extractor), test_f, self.test.labels.to(test_f.device))

    def poisoned_probe_accuracy(self, key: Mapping[str, Any], extractor: FeatureExtractor, images: torch.Tensor,
                                poison: str | None) -> float | None:
        """Probe trained on the (possibly poisoned) pre-training images' features and labels."""
        if not self.same_data:
            return None
        feats = self.features(key, extractor, "pretrain", images, {"poison": poison})
        head = fit_linear_head(feats, self.pre.labels.to(feats.device), self.num_classes, l2=self.l2)
        test_f = self.features(key, extractor, "test", self.test.images)
        return head_accuracy(head, test_f, self.test.labels.to(test_f.device))


# ------------------------------------------------------------------------------------------ defenses
def make_defense(cell: Cell) -> Defense | None:
    entry = cell.defense
    if entry.id == NO_DEFENSE:
        return None
    cls = DEFENSES.get(entry.id)
    return cls(cls.Config(**entry.settings))


def defense_context(cell: Cell, num_classes: int, device: torch.device) -> DefenseContext:
    seed = derive_seed(int(cell.spec["seed"]), "defense", cell.defense.id, cell.defense.settings)
    return DefenseContext(track=cell.track, num_classes=num_classes, seed=seed,
                          generator=torch.Generator().manual_seed(seed), device=device)


def _overrides(defense: Defense, name: str) -> bool:
    return getattr(type(defense), name) is not getattr(Defense, name)


def defense_hooks(defense: Defense | None, setting: PretrainSetting, dctx: DefenseContext) -> SSLTrainingHooks | None:
    """SSL hooks of a data- or training-stage defense (a data-stage defense without its own hooks
    transforms every batch)."""
    if defense is None or defense.stage == "posthoc":
        return None
    if _overrides(defense, "ssl_hooks") or defense.stage != "data":
        return defense.ssl_hooks(setting.recipe, dctx)
    return SSLTrainingHooks(batch_transform=lambda x: defense.transform_images(x, dctx))


def defense_after(defense: Defense | None, setting: PretrainSetting,
                  dctx: DefenseContext) -> Callable[[FeatureExtractor], FeatureExtractor] | None:
    """A post-hoc defense repairs the trained encoder on the clean labeled downstream training set."""
    if defense is None or defense.stage != "posthoc":
        return None

    def repair(extractor: FeatureExtractor) -> FeatureExtractor:
        repaired = defense.repair_encoder(extractor, setting.train.images, setting.train.labels, dctx)
        if not isinstance(repaired, FeatureExtractor):
            raise TypeError(f"{defense.id}.repair_encoder must return a benchmark.pretrain.FeatureExtractor, "
                            f"got {type(repaired).__name__}")
        return repaired

    return repair


def defense_entry(cell: Cell) -> dict[str, Any] | None:
    entry = cell.defense
    return None if entry.id == NO_DEFENSE else {"id": entry.id, "settings": entry.settings}


def victim_encoder(setting: PretrainSetting, cell: Cell, images: torch.Tensor,
                   poison: str | None) -> tuple[dict[str, Any], FeatureExtractor]:
    """The victim pre-trained on ``images`` under ``cell``'s defense (cached by poison and defense) and its
    cache key; without a defense and a poison this is the clean encoder."""
    defense = make_defense(cell)
    key = setting.variant_key({"poison": poison, "defense": defense_entry(cell)})
    if defense is None:
        return key, setting.encoder(key, images)
    dctx = defense_context(cell, setting.num_classes, setting.env.device)
    return key, setting.encoder(key, images, hooks=defense_hooks(defense, setting, dctx),
                                after=defense_after(defense, setting, dctx))


# ------------------------------------------------------------------------------------------ poison cache
def diagnostic_tensors(diagnostics: Mapping[str, float]) -> dict[str, torch.Tensor]:
    """An attack's diagnostics as cache entries ``diag.<name>``."""
    return {f"diag.{k}": torch.tensor(float(v)) for k, v in diagnostics.items()}


def diagnostics_of(tensors: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """The diagnostics stored by :func:`diagnostic_tensors`."""
    return {k[5:]: float(v) for k, v in tensors.items() if k.startswith("diag.")}


# ------------------------------------------------------------------------------------------ supervised
class SupervisedNet(nn.Module):
    """The encoder's backbone plus a linear layer, trained end to end (the supervised victim)."""

    def __init__(self, backbone: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Linear(backbone.feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.backbone(x))


def train_supervised(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, epochs: int = 5,
                     batch_size: int = 128, lr: float = 2e-3, seed: int = 0,
                     device: torch.device | None = None) -> nn.Module:
    """Adam + cross-entropy with random-crop (padding size/8) augmentation; returns the model in eval mode."""
    device = device or torch.device("cpu")
    seed_everything(seed)
    model = model.to(device).train()
    size = images.shape[-1]
    crop = K.RandomCrop((size, size), padding=max(1, size // 8)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    data, targets = images.to(device), labels.to(device)
    gen = torch.Generator().manual_seed(seed)
    steps = max(1, math.ceil(len(data) / batch_size))
    for _ in range(epochs):
        order = torch.randperm(len(data), generator=gen).to(device)
        for b in range(steps):
            idx = order[b * batch_size : (b + 1) * batch_size]
            loss = nn.functional.cross_entropy(model(crop(data[idx])), targets[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()


@torch.no_grad()
def classifier_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, device: torch.device) -> float:
    model.eval()
    preds = torch.cat([model(images[i : i + 1024].to(device)).argmax(1).cpu() for i in range(0, len(images), 1024)])
    return float((preds == labels.cpu()).float().mean())


def supervised_accuracy(setting: PretrainSetting, images: torch.Tensor, defense: Defense | None,
                        dctx: DefenseContext | None) -> float:
    """Test accuracy of the supervised victim trained on ``images`` with the pre-training labels."""
    epochs = int(setting.victim.get("supervised_epochs", 5))
    seed_everything(setting.seed)
    model = SupervisedNet(setting.recipe.build_model(setting.channels).backbone, setting.pre.num_classes)

    def train(m: nn.Module, x: torch.Tensor, y: torch.Tensor, **kwargs: Any) -> nn.Module:
        options = {"epochs": epochs, "seed": setting.seed, "device": setting.env.device, **kwargs}
        return train_supervised(m, x, y, **options)

    if defense is not None and dctx is not None and _overrides(defense, "fit_supervised"):
        model = defense.fit_supervised(model, images, setting.pre.labels, dctx, train)
    elif defense is not None and dctx is not None and defense.stage == "data":
        model = train(model, defense.transform_images(images, dctx), setting.pre.labels)
    else:
        model = train(model, images, setting.pre.labels)
    return classifier_accuracy(model, setting.test.images, setting.test.labels, setting.env.device)


def supervised_key(setting: PretrainSetting, poison: str | None, defense: Mapping[str, Any] | None) -> dict[str, Any]:
    enc = setting.encoder_spec
    return {"backbone": enc["backbone"], "cifar_stem": enc.get("cifar_stem", False), "norm": enc.get("norm", "batch"),
            "pretrain": setting.scenario["pretrain"], "downstream": setting.scenario["downstream"],
            "data": data_key(setting.data), "seed": setting.seed, "poison": poison, "defense": defense,
            "epochs": int(setting.victim.get("supervised_epochs", 5))}
