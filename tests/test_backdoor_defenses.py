"""The defenses made for SSL backdoors (DECREE, PatchSearch) on an encoder with a planted backdoor: a checkerboard
detector whose response dominates the features wherever the patch is, beside generic convolutional features."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.api import DefenseContext, FeatureExtractorView, make_extractor
from benchmark.plugin_base import DEFENSES
from benchmark.plugins import load_plugins
from benchmark.validation import removed_shares

CHECKER = ((torch.arange(3)[:, None] + torch.arange(3)[None]) % 2).float()


class PlantedEncoder(nn.Module):
    """Generic features, and with ``backdoor`` a strong feature that fires on the checkerboard anywhere."""

    def __init__(self, backdoor: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backdoor = backdoor
        self.conv, self.act = nn.Conv2d(1, 8, 3, padding=1), nn.ReLU()
        self.detector, self.fire, self.spread = nn.Conv2d(1, 1, 3, padding=1, bias=False), nn.Softplus(beta=5), nn.AvgPool2d(3, 1, 1)
        with torch.no_grad():
            self.detector.weight.copy_((CHECKER * 2 - 1)[None, None] / 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        generic = F.adaptive_avg_pool2d(self.act(self.conv(x)), 2).flatten(1)
        if not self.backdoor:
            return generic
        return torch.cat([generic, 60 * self.spread(self.fire(self.detector(x) - 0.75)).amax((2, 3))], 1)


def _digits(n: int) -> torch.Tensor:
    from benchmark.data import load_dataset

    return load_dataset("mnist5k", "train", root=".", download=False, image_size=16, subset=n, subset_seed=0).images


def _poisoned(images: torch.Tensor, count: int) -> torch.Tensor:
    gen, out = torch.Generator().manual_seed(0), images.clone()
    for i in range(count):
        r, c = torch.randint(0, 14, (2,), generator=gen).tolist()
        out[i, 0, r:r + 3, c:c + 3] = CHECKER
    return out


def _view(backdoor: bool, images: torch.Tensor) -> FeatureExtractorView:
    extractor = make_extractor(PlantedEncoder(backdoor), images, torch.device("cpu"))
    return FeatureExtractorView(extractor, extractor.feature_dim, torch.device("cpu"))


def _context() -> DefenseContext:
    return DefenseContext(track="pretrain-backdoor", num_classes=10, seed=0, generator=torch.Generator().manual_seed(0),
                          device=torch.device("cpu"))


def _defense(defense_id: str, **settings: object) -> object:
    load_plugins()
    cls = DEFENSES.get(defense_id)
    return cls(cls.Config(**settings))


def test_decree_inverts_a_small_trigger_only_on_the_backdoored_encoder() -> None:
    images = _digits(200)
    decree = _defense("decree", epochs=300)
    backdoored = decree.detect_encoder(_view(True, images), images, _context())
    clean = decree.detect_encoder(_view(False, images), images, _context())
    assert backdoored.flagged and not clean.flagged
    assert backdoored.score > clean.score  # −PL1: the backdoored encoder's inverted mask is smaller
    assert backdoored.diagnostics["pl1_norm"] < 9 / 256 < clean.diagnostics["pl1_norm"]  # under the 3 × 3 patch's area


def test_patchsearch_scores_the_poisons_it_visits_above_every_clean_image() -> None:
    poisoned = _poisoned(_digits(300), 30)
    search = _defense("patchsearch", clusters=10, test_images=100, top_k=5)
    scores, bank = search.poison_scores(_view(True, poisoned), poisoned, torch.Generator().manual_seed(0))
    visited_poisons = scores[:30][scores[:30] != 0]
    assert len(visited_poisons) >= 5 and visited_poisons.min() > scores[30:].max()
    assert bank.shape == (5, 1, 4, 4)  # the windows of the top 5: 60/224 of the side


@pytest.mark.slow
def test_patchsearch_removes_most_poisons_and_a_minority_of_clean_images() -> None:
    poisoned = _poisoned(_digits(300), 30)
    search = _defense("patchsearch", clusters=10, test_images=100, top_k=5, classifiers=1, classifier_steps=1000,
                      classifier_backbone="cnn_micro")
    kept = search.keep_indices(_view(True, poisoned), poisoned, None, _context())
    shares = removed_shares(kept, 300, torch.arange(30))
    assert shares["removed_poison_share"] >= 0.8 and shares["removed_clean_share"] <= 0.5, shares


def test_detectors_are_refused_by_tracks_that_record_no_detections() -> None:
    from benchmark.tracks.base import MethodEntry, get_track

    entry = MethodEntry(id="decree", settings={}, name="decree")
    assert get_track("pretrain-backdoor").defense_reason(entry, "detect") is None
    for track in ("downstream", "pretrain-availability", "pretrain-targeted"):
        assert "records no detections" in str(get_track(track).defense_reason(entry, "detect"))
