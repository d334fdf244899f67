"""The downstream track's poisoned examples (``python -m benchmark examples``): each poison beside the clean
training image it starts from, with its label when it changed."""

from __future__ import annotations

from typing import Any

import torch

from benchmark.tracks.common import RunEnv, extractor_spec, plugin_call
from benchmark.tracks.downstream.info import INFO
from benchmark.tracks.downstream.interface import DownstreamPoison
from benchmark.validation import poison_from_answer


def pairs(suite: Any, entry: Any, data: Any, extractor: Any, spec: dict[str, Any], env: RunEnv,
          shown: int) -> list[tuple[Any, Any, str]]:
    """(clean image, poisoned image, caption) pairs from one attack's validated poison."""
    with torch.no_grad():
        features = extractor(data.images)
    context = {"extractor": extractor_spec(spec, extractor, data.images.shape[1]), "train_images": data.images,
               "train_labels": data.labels, "train_features": features, "num_classes": data.num_classes,
               "budget": shown * 4, "input_epsilon": None, "l2": 1e-3}
    poison = poison_from_answer(plugin_call(env, "craft", "attack", entry, {"track": INFO.name, "context": context},
                                            rng_seed=0), DownstreamPoison)
    base = poison.base_indices if poison.base_indices is not None else torch.arange(len(poison.labels))
    return [(data.images[b], poison.images[i], f"{int(data.labels[b])}→{int(poison.labels[i])}")
            for i, b in enumerate(base[:shown].tolist())]
