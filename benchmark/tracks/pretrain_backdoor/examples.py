"""The backdoor track's examples (``python -m benchmark examples``): each poisoned pre-training image beside the
clean image it was made from, and a test image of another class with the trigger as the harness applies it."""

from __future__ import annotations

from typing import Any

from benchmark.tracks.common import RunEnv, plugin_call
from benchmark.tracks.pretrain_backdoor.info import INFO
from benchmark.tracks.pretrain_backdoor.interface import BackdoorPoison
from benchmark.tracks.pretrain_backdoor.track import triggered
from benchmark.validation import poison_from_answer


def pairs(suite: Any, entry: Any, data: Any, extractor: Any, spec: dict[str, Any], env: RunEnv,
          shown: int) -> list[tuple[Any, Any, str]]:
    """(clean image, poisoned image, caption) pairs from one attack's validated poison, then (image, triggered)."""
    n, budget, target = len(data.images), shown * 2, 0
    context = {"images": data.images, "labels": data.labels, "num_classes": data.num_classes, "epsilon": 1.0,
               "poison_fraction": budget / n, "budget": budget, "recipe": spec, "target_class": target}
    answer = plugin_call(env, "craft", "attack", entry, {"track": INFO.name, "context": context}, rng_seed=0)
    poison = poison_from_answer(answer, BackdoorPoison)
    out: list[tuple[Any, Any, str]] = []
    if poison.indices is not None:
        out += [(data.images[int(i)], poison.images[k], f"poison (class {target})")
                for k, i in enumerate(poison.indices[: shown // 2].tolist())]
    others = data.images[data.labels != target][: shown - len(out)]
    test = triggered(poison, others, seed=0)
    return out + [(others[k], test[k], "test + trigger") for k in range(len(others))]
