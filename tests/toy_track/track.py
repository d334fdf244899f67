"""The toy track's cells: a nearest-class-mean classifier on the scenario's downstream pixels, trained on the
clean training set with and without the attacker's images; the metric is its test-accuracy drop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from benchmark.plugin_base import poison_count
from benchmark.tracks.base import NO_ATTACK, Cell, Track, TrackSpec, register_track
from benchmark.tracks.common import CellOutcome, RunEnv, load_split, plugin_call
from benchmark.validation import ThreatModelViolation, poison_from_answer
from tests.toy_track.info import INFO
from tests.toy_track.interface import ToyPoison
from tests.toy_track.validate import validate_toy


def nearest_mean_accuracy(images: torch.Tensor, labels: torch.Tensor, test_images: torch.Tensor,
                          test_labels: torch.Tensor, num_classes: int) -> float:
    flat = images.flatten(1).double()
    means = torch.stack([flat[labels == c].mean(0) for c in range(num_classes)])
    predicted = torch.cdist(test_images.flatten(1).double(), means).argmin(1)
    return float((predicted == test_labels).double().mean())  # a fraction, as every track records accuracies


@dataclass(frozen=True, kw_only=True)
class ToyTrackSpec(TrackSpec):
    """``tracks.toy-nearest-mean``: the keys every track has."""


@register_track
class ToyTrack(Track[ToyTrackSpec]):
    info = INFO
    Spec = ToyTrackSpec

    def add_work(self, work: Any, cell: Cell, sizes: Any) -> None:
        """A nearest-class-mean fit costs milliseconds: no counted work (the estimate's units are passes)."""

    def run(self, cell: Cell, env: RunEnv) -> CellOutcome:
        name = cell.scenario.downstream
        train = load_split(name, "train", cell.data, subset=cell.data.downstream_subset)
        test = load_split(name, "test", cell.data, subset=cell.data.downstream_subset)
        clean = nearest_mean_accuracy(train.images, train.labels, test.images, test.labels, train.num_classes)
        images, labels = train.images, train.labels
        if cell.attack.id != NO_ATTACK:
            budget = poison_count(cell.budget, len(train.images))
            context = {"images": train.images, "labels": train.labels, "num_classes": train.num_classes, "budget": budget}
            answer = plugin_call(env, "craft", "attack", cell.attack, {"track": INFO.name, "context": context},
                                 rng_seed=cell.seed)
            try:
                poison = poison_from_answer(answer, ToyPoison)
                validate_toy(poison, budget=budget, shape=tuple(train.images.shape[1:]), num_classes=train.num_classes)
            except ThreatModelViolation as exc:
                return CellOutcome(metrics={}, details={}, status="invalid", message=str(exc))
            images, labels = torch.cat([images, poison.images]), torch.cat([labels, poison.labels])
        poisoned = nearest_mean_accuracy(images, labels, test.images, test.labels, train.num_classes)
        metrics: dict[str, Any] = {"clean_accuracy": clean, "poisoned_accuracy": poisoned, "accuracy_drop": clean - poisoned,
                                   "n_poison": float(len(images) - len(train.images))}
        return CellOutcome(metrics=metrics, details={"n_train": len(train.images), "n_test": len(test.images)})
