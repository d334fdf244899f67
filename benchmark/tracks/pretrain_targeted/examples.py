"""The targeted track's poisoned examples (``python -m benchmark examples``): each injected image beside the
target it is meant to pull."""

from __future__ import annotations

from typing import Any

from benchmark.tracks.common import RunEnv, plugin_call
from benchmark.tracks.pretrain_targeted.info import INFO
from benchmark.tracks.pretrain_targeted.interface import TargetedPoison, target_classes_of
from benchmark.validation import poison_from_answer


def pairs(suite: Any, entry: Any, data: Any, extractor: Any, spec: dict[str, Any], env: RunEnv,
          shown: int) -> list[tuple[Any, Any, str]]:
    """(target image, injected image, caption) pairs from one attack's validated poison."""
    n, budget = len(data.images), shown * 2
    context = {"images": data.images, "labels": data.labels, "num_classes": data.num_classes, "epsilon": 1.0,
               "poison_fraction": budget / n, "budget": budget, "recipe": spec}
    answer = plugin_call(env, "craft", "attack", entry, {"track": INFO.name, "context": context}, rng_seed=0)
    poison = poison_from_answer(answer, TargetedPoison)
    classes = target_classes_of(poison)
    return [(poison.target_images[i % len(classes)], poison.images[i], f"target→{int(classes[i % len(classes)])}")
            for i in range(min(shown, len(poison.images)))]
