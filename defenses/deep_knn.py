"""Peri, Gupta, Huang, Fowl, Zhu, Feizi, Goldstein, Dickerson, "Deep k-NN Defense against Clean-label
Data Poisoning Attacks", ECCV Workshops 2020.

Threat model: the downstream victim's labelled training set, clean and poisoned points unmarked, and the
frozen encoder. Keeps a training point when its label is the plurality label of its k nearest neighbours
(Euclidean, in the encoder's feature space; ties go to the lowest class) and drops it otherwise. The paper
sets k from the number of poisons per class (it reports k of 50–200 on CIFAR-10's 50k points); 10 is the
default here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from benchmark.api import Defense, DefenseContext, FeatureExtractorView, MethodConfig, register_defense


@dataclass(frozen=True, kw_only=True)
class DeepKnnConfig(MethodConfig):
    k: int = 10

    def problems(self) -> list[str]:
        return [] if self.k >= 1 else [f"k: {self.k} must be at least 1"]


@register_defense
class DeepKnn(Defense[DeepKnnConfig]):
    id = "deep_knn"
    stage = "sanitise"
    tracks = ("downstream",)  # it needs labels and a trained encoder
    Config = DeepKnnConfig
    citation = "Peri et al., Deep k-NN Defense against Clean-label Data Poisoning Attacks, ECCV Workshops 2020"
    paper_url = "https://arxiv.org/abs/1909.13374"
    cost: ClassVar[Mapping[str, Any]] = {"downstream": {"data": {"passes": "n"}}}  # one forward pass per point it looks at

    def keep_indices(self, extractor: FeatureExtractorView | None, images: torch.Tensor,
                     labels: torch.Tensor | None, ctx: DefenseContext) -> torch.Tensor:
        assert extractor is not None and labels is not None  # downstream: the encoder and the labels
        features, labels = extractor.features(images), labels.to(extractor.device)
        distances = torch.cdist(features, features).fill_diagonal_(float("inf"))
        k = min(self.config.k, len(images) - 1)
        neighbours = distances.topk(k, largest=False).indices
        votes = torch.nn.functional.one_hot(labels[neighbours], ctx.num_classes).sum(1)
        return torch.nonzero(votes.argmax(1) == labels).flatten().cpu()
