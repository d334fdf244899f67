"""A figure of poisoned examples per attack, as the papers show them: ``python -m benchmark examples``.

For every input-space attack of a suite (its settings there), the attack crafts poisons on a small slice
of the suite's first scenario through the harness (a plugin process, the track's validator), and the figure
shows clean images beside their poisoned versions: the base image and the poison for downstream attacks
(with its label when it changed), the clean and perturbed pre-training image for availability attacks, and
the target beside an injected image for targeted ones. Downstream attacks get a briefly pre-trained encoder
(white-box); the figure is an illustration of what each attack does to an image, not a measurement.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any

import torch

from benchmark.data import load_dataset
from benchmark.plugins import catalogue
from benchmark.pretrain import SSLRecipe, make_extractor, train_ssl
from benchmark.suite import encoder_specs
from benchmark.tracks.base import NO_ATTACK, MethodEntry
from benchmark.tracks.common import RunEnv
from benchmark.tracks.info import track_info

SHOWN = 4  # examples per attack


def _encoder(suite: Any, images: torch.Tensor) -> tuple[dict[str, Any], Any]:

    spec = {**encoder_specs(suite)[0], "epochs": 2}
    model = train_ssl(SSLRecipe(**spec), images, seed=0, device=torch.device("cpu"), desc="examples encoder")
    return spec, make_extractor(model.backbone, images, torch.device("cpu"))


def _pairs(suite: Any, track: str, entry: Any, data: Any, extractor: Any, spec: dict[str, Any]) -> list[tuple[Any, Any, str]]:
    """(clean image, poisoned image, caption) pairs from one attack's validated poison, drawn by the track's own
    ``examples`` module (none: the track shows no examples)."""
    info = track_info(track)
    module = f"{info.package}.examples" if info is not None else ""
    if not module or importlib.util.find_spec(module) is None:
        return []
    env = RunEnv(cache=None, device=torch.device("cpu"), plugin_seconds=suite.plugin_seconds)
    return list(importlib.import_module(module).pairs(suite, entry, data, extractor, spec, env, SHOWN))


def write_examples(suite: Any, output: Path, *, n: int = 300) -> Path:
    """Craft every input-space attack of ``suite`` on ``n`` images and draw clean/poisoned pairs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = suite.spec.data.image_size if suite.spec.data else None
    data = load_dataset(suite.spec.scenarios[0].pretrain, "train", image_size=size, subset=n, subset_seed=0)
    spec, extractor = _encoder(suite, data.images)
    rows: list[tuple[str, list[tuple[Any, Any, str]]]] = []
    for track, body in suite.tracks.items():
        for item in body["attacks"]:
            entry = MethodEntry(**({"id": item, "name": item} if isinstance(item, str) else
                                   {"id": item["id"], "name": item.get("name") or item["id"], "settings": item.get("settings") or {}}))
            if entry.id == NO_ATTACK or catalogue().get("attack", entry.id).space == "feature":
                continue
            rows.append((f"{entry.name}\n({track})", _pairs(suite, track, entry, data, extractor, spec)))
    fig, axes = plt.subplots(len(rows), 2 * SHOWN, figsize=(2 * SHOWN * 1.1, len(rows) * 1.3), squeeze=False)
    for r, (label, pairs) in enumerate(rows):
        for k in range(SHOWN):
            for j, which in enumerate(("clean", "poisoned")):
                ax = axes[r][2 * k + j]
                ax.set_xticks([]), ax.set_yticks([])
                if k < len(pairs):
                    image = pairs[k][j].permute(1, 2, 0).squeeze(-1).clamp(0, 1).numpy()
                    ax.imshow(image, cmap="gray", vmin=0, vmax=1)
                    ax.set_title(which if j == 0 else f"{which} {pairs[k][2]}", fontsize=6)
                else:
                    ax.axis("off")
        axes[r][0].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(f"Poisoned examples, suite `{suite.name}` ({suite.spec.scenarios[0].pretrain}, {size or 'native'} px): "
                 "clean | poisoned pairs per attack", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return output
