"""Pieces the two pre-training tracks share: the setting of one encoder/scenario/seed (data, clean
encoder, cached features, the probe's L2 weight), defense plumbing, and the supervised victim used for
cross-evaluation of availability poisons."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from benchmark.data import ImageDataset
from benchmark.plugins import catalogue
from benchmark.pretrain import FeatureExtractor
from benchmark.probe import LinearHead, fit_linear_head, head_accuracy
from benchmark.supervised import supervised_net, train_supervised
from benchmark.tracks.base import NO_DEFENSE, Cell, PretrainDataSpec, TrackSpec
from benchmark.tracks.common import (
    RunEnv,
    cached_features,
    data_key,
    encoder_key,
    extractor_from_tensors,
    extractor_spec,
    load_split,
    plain_tensor,
    plugin_call,
    pretrained_extractor,
    resolve_l2,
)
from benchmark.training import chunked
from benchmark.utils import config_hash, derive_seed
from benchmark.validation import validate_kept


class PretrainSetting:
    """What the cells of one (encoder, scenario, data, seed, victim) share; the clean encoder is the
    downstream track's (same cache key), so it is trained once for all tracks."""

    @classmethod
    def shared(cls, cell: Cell, env: RunEnv) -> PretrainSetting:
        """The setting of ``cell``, built once and reused by the next cells of both pre-training tracks."""
        spec = cell.spec
        key = {"track": "pretrain", **{k: spec[k] for k in ("encoder", "scenario", "data", "seed", "victim")}}
        return env.shared(key, lambda: cls(cell, env))

    def __init__(self, cell: Cell, env: RunEnv) -> None:
        self.env, self.seed = env, cell.seed
        self.encoder_spec = cell.spec["encoder"]  # the encoder's cache key and what a plugin process rebuilds
        self.victim, self.data, self.scenario, self.recipe = cell.victim, cell.data, cell.scenario, cell.encoder
        self.pre = load_split(self.scenario.pretrain, "train", self.data, subset=self.data.pretrain_subset)
        self.channels, self.size = self.pre.images.shape[1], self.pre.images.shape[-1]
        self.train = self._split("train")
        self.test = self._split("test")
        self.num_classes = self.train.num_classes
        # probe = poisoned (head trained on the poisoned pre-training images) needs their labels to be
        # labels of the downstream task: only when both are the same dataset
        self.same_data = self.scenario.pretrain == self.scenario.downstream
        self.clean_key = encoder_key(self.encoder_spec, self.scenario.pretrain, self.data, self.seed)
        self.clean = self.encoder(self.clean_key, self.pre.images)
        train_f = self.features(self.clean_key, self.clean, "train", self.train.images)
        self.l2, self.l2_scores = resolve_l2(self.victim, train_f, self.train.labels, self.num_classes)
        self._heads: dict[str, LinearHead] = {}

    def _split(self, split: str) -> ImageDataset:
        return load_split(self.scenario.downstream, split, self.data, subset=self.data.downstream_subset,
                          channels=self.channels, image_size=self.size)

    def variant_key(self, variant: Mapping[str, Any]) -> dict[str, Any]:
        """The encoder key of a victim pre-trained under ``variant`` (poison, defense); {} = clean."""
        variant = {k: v for k, v in variant.items() if v is not None}
        return encoder_key(self.encoder_spec, self.scenario.pretrain, self.data, self.seed, variant=variant)

    def encoder(self, key: Mapping[str, Any], images: torch.Tensor) -> FeatureExtractor:
        return pretrained_extractor(self.env, key, images)

    def features(self, key: Mapping[str, Any], extractor: FeatureExtractor, split: str, images: torch.Tensor,
                 extra: Mapping[str, Any] | None = None) -> torch.Tensor:
        fkey = {"encoder": dict(key), "downstream": self.scenario.downstream, "split": split, **(extra or {})}
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
                                poison: str | None, kept: torch.Tensor | None = None) -> float | None:
        """Probe trained on the (possibly poisoned) pre-training images' features and labels (those of
        ``kept`` only, when a sanitiser chose them)."""
        if not self.same_data:
            return None
        labels = self.pre.labels if kept is None else self.pre.labels[kept]
        if kept is not None:
            images = images[kept]
        feats = self.features(key, extractor, "pretrain", images, {"poison": poison})
        head = fit_linear_head(feats, labels.to(feats.device), self.num_classes, l2=self.l2)
        test_f = self.features(key, extractor, "test", self.test.images)
        return head_accuracy(head, test_f, self.test.labels.to(test_f.device))


# ------------------------------------------------------------------------------------------ defenses
def defense_request(setting: PretrainSetting, cell: Cell) -> tuple[dict[str, Any], int]:
    """The defense context every call of ``cell``'s defense gets (plain data) and its seed."""
    seed = derive_seed(cell.seed, "defense", cell.defense.id, cell.defense.settings)
    return {"defense_context": {"track": cell.track, "num_classes": setting.num_classes, "seed": seed}}, seed


def defense_entry(cell: Cell) -> dict[str, Any] | None:
    entry = cell.defense
    return None if entry.id == NO_DEFENSE else {"id": entry.id, "settings": entry.settings}


def sanitised_indices(setting: PretrainSetting, cell: Cell, images: torch.Tensor, poison: str | None,
                      encoder: tuple[Mapping[str, Any], FeatureExtractor] | None = None) -> torch.Tensor:
    """The pre-training images a sanitising defense keeps of ``images`` (poisoned by ``poison``, or clean),
    chosen in its plugin process from the unlabeled images alone (and ``encoder``, the cache key and extractor
    of an encoder pre-trained on them, where the track grants one), checked, and cached."""
    env = setting.env
    context, seed = defense_request(setting, cell)
    key = {"pretrain": setting.scenario.pretrain, "data": data_key(setting.data), "seed": setting.seed,
           "poison": poison, "defense": defense_entry(cell)}
    request = {**context, "images": images}
    if encoder is not None:
        key["encoder"] = dict(encoder[0])
        request["extractor"] = extractor_spec(setting.encoder_spec, encoder[1], setting.channels)

    def build() -> dict[str, torch.Tensor]:
        answer = plugin_call(env, "keep_indices", "defense", cell.defense, request, rng_seed=seed)
        return {"kept": validate_kept(answer.get("kept"), len(images), cell.defense.id)}

    return env.cache.get_or_build("sanitised", key, build)["kept"]


def defense_stage(cell: Cell) -> str | None:
    return None if cell.defense.id == NO_DEFENSE else catalogue().get("defense", cell.defense.id).stage


def victim_encoder(setting: PretrainSetting, cell: Cell, images: torch.Tensor,
                   poison: str | None, extra_images: torch.Tensor | None = None) -> tuple[dict[str, Any], FeatureExtractor]:
    """The victim pre-trained on ``images`` (plus ``extra_images``: injected images of another shape, each
    view cropped from the whole image, see :func:`benchmark.pretrain.train_ssl`) under ``cell``'s defense
    (cached by poison and defense) and its cache key; without a defense and a poison this is the clean
    encoder. A defended victim is pre-trained (and repaired, for a post-hoc defense) in the defense's
    plugin process, which gets the pre-training images and the clean labeled downstream training set; the
    engine fits the released standardisation itself only for undefended victims (on ``images``). A post-hoc
    defense acts after pre-training, so its victim is the undefended one (cached, shared with the
    undefended cells) repaired in the defense's process."""
    key = setting.variant_key({"poison": poison, "defense": defense_entry(cell)})
    if cell.defense.id == NO_DEFENSE:
        return key, pretrained_extractor(setting.env, key, images, extra_images)
    if defense_stage(cell) == "sanitise":  # the victim's own pre-training, on the images the defense keeps
        kept = sanitised_indices(setting, cell, images, poison)
        return key, pretrained_extractor(setting.env, key, images[kept], extra_images)
    env = setting.env
    context, seed = defense_request(setting, cell)
    posthoc = defense_stage(cell) == "posthoc"

    def build() -> dict[str, torch.Tensor]:
        if posthoc:  # pre-training is the undefended victim's (cached, shared): only the repair is the defense's
            undefended_key = setting.variant_key({"poison": poison})
            undefended = pretrained_extractor(env, undefended_key, images, extra_images)
            request = {**context, "extractor": extractor_spec(setting.encoder_spec, undefended, setting.channels),
                       "images": setting.train.images, "labels": setting.train.labels}
            answer = plugin_call(env, "repair_encoder", "defense", cell.defense, request, rng_seed=seed)
        else:
            request = {**context, "recipe": setting.encoder_spec, "images": images, "extra_images": extra_images,
                       "seed": setting.seed, "train_images": setting.train.images, "train_labels": setting.train.labels,
                       "desc": f"pre-train {setting.recipe.method} under {cell.defense.name}"}
            answer = plugin_call(env, "pretrain_encoder", "defense", cell.defense, request, rng_seed=seed)
        return {k: plain_tensor(v, f"defended encoder tensor {k}") for k, v in answer["tensors"].items()}

    tensors = env.cache.get_or_build("encoder", key, build)
    return key, extractor_from_tensors(setting.recipe, setting.channels, tensors, env.device)


# ------------------------------------------------------------------------------------------ poison cache
def diagnostic_tensors(diagnostics: Mapping[str, float]) -> dict[str, torch.Tensor]:
    """An attack's diagnostics as cache entries ``diag.<name>``."""
    return {f"diag.{k}": torch.tensor(float(v)) for k, v in diagnostics.items()}


def diagnostics_of(tensors: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """The diagnostics stored by :func:`diagnostic_tensors`."""
    return {k[5:]: float(v) for k, v in tensors.items() if k.startswith("diag.")}





@torch.no_grad()
def classifier_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, device: torch.device) -> float:
    model.eval()
    preds = chunked(lambda part: model(part.to(device)).argmax(1).cpu(), images, size=1024)
    return float((preds == labels.cpu()).float().mean())


def supervised_accuracy(setting: PretrainSetting, images: torch.Tensor, cell: Cell | None) -> float:
    """Test accuracy of the supervised victim trained on ``images`` with the pre-training labels; under
    ``cell``'s defense (if any) it is trained in the defense's plugin process, which returns its weights."""
    epochs = setting.victim.supervised_epochs
    model = supervised_net(setting.recipe, setting.channels, setting.pre.num_classes, setting.seed)
    if cell is None or cell.defense.id == NO_DEFENSE:
        model = train_supervised(model, images, setting.pre.labels, epochs=epochs, seed=setting.seed, device=setting.env.device)
    else:
        context, seed = defense_request(setting, cell)
        request = {**context, "recipe": setting.encoder_spec, "images": images, "labels": setting.pre.labels,
                   "num_classes": setting.pre.num_classes, "epochs": epochs, "seed": setting.seed}
        answer = plugin_call(setting.env, "supervised", "defense", cell.defense, request, rng_seed=seed)
        model = load_supervised(model, answer["state"]).to(setting.env.device)
    return classifier_accuracy(model, setting.test.images, setting.test.labels, setting.env.device)


def load_supervised(model: nn.Module, state: Any) -> nn.Module:
    """``model`` with a defense's returned weights: the victim's architecture, or its Opacus-fixed form
    (BatchNorm replaced by GroupNorm, as DP-SGD trains it). Anything else is an error."""
    if not isinstance(state, dict) or not all(isinstance(k, str) and type(v) is torch.Tensor for k, v in state.items()):
        raise TypeError("the defense returned supervised weights that are not a mapping of names to tensors")
    if set(state) != set(model.state_dict()):
        from opacus.validators import ModuleValidator

        model = ModuleValidator.fix(model)
    model.load_state_dict(state, strict=True)
    return model.eval()


def supervised_key(setting: PretrainSetting, poison: str | None, defense: Mapping[str, Any] | None) -> dict[str, Any]:
    enc = setting.encoder_spec
    return {"backbone": enc["backbone"], "cifar_stem": enc.get("cifar_stem", False), "norm": enc.get("norm", "batch"),
            "pretrain": setting.scenario.pretrain, "downstream": setting.scenario.downstream,
            "data": data_key(setting.data), "seed": setting.seed, "poison": poison, "defense": defense,
            "epochs": setting.victim.supervised_epochs}


@dataclass(frozen=True, kw_only=True)
class PretrainTrackSpec(TrackSpec):
    """A pre-training track's section: may shrink ``data`` and override the encoder ``recipe``."""

    data: PretrainDataSpec | None = None
    recipe: dict[str, Any] | None = None
