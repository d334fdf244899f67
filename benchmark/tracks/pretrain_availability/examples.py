"""The availability track's poisoned examples (``python -m benchmark examples``): each perturbed pre-training
image beside its clean original."""

from __future__ import annotations

from typing import Any

from benchmark.tracks.common import RunEnv, plugin_call
from benchmark.tracks.pretrain_availability.info import INFO
from benchmark.tracks.pretrain_availability.interface import AvailabilityPoison
from benchmark.validation import poison_from_answer


def pairs(suite: Any, entry: Any, data: Any, extractor: Any, spec: dict[str, Any], env: RunEnv,
          shown: int) -> list[tuple[Any, Any, str]]:
    """(clean image, poisoned image, caption) pairs from one attack's validated poison."""
    n = len(data.images)
    context = {"images": data.images, "labels": data.labels, "num_classes": data.num_classes,
               "epsilon": float(suite.tracks[INFO.name].get("epsilon", 8 / 255)), "poison_fraction": 1.0, "budget": n,
               "recipe": spec}
    answer = plugin_call(env, "craft", "attack", entry, {"track": INFO.name, "context": context}, rng_seed=0)
    poison = poison_from_answer(answer, AvailabilityPoison)
    return [(data.images[j], poison.images[i], "perturbed") for i, j in enumerate(poison.indices[:shown].tolist())]
