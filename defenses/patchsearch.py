"""PatchSearch (Tejankar, Sanjabi, Wang, Wang, Firooz, Pirsiavash, Tan, "Defending Against Patch-based Backdoor
Attacks on Self-Supervised Learning", CVPR 2023).

Threat model: the defender holds the unlabeled pre-training set (poisons unmarked) and an encoder pre-trained on it,
removes the images it finds poisoned, and the victim pre-trains again on the rest. Algorithm: k-means on the
L2-normalised features; Grad-CAM of each image's similarity to its cluster's mean on the encoder's last spatial map;
the ``window_fraction`` window of most heat is the candidate trigger, pasted at random places on ``test_images``
images (the nearest to each centroid): its poison score is how many more of them then fall in its cluster. Each round
scores ``samples_per_iteration`` random images of every remaining cluster and prunes the ``prune_fraction`` of clusters
with the lowest best score, until too few remain to prune. An ensemble of ``classifiers`` small CNNs then learns to
tell images with one of the ``top_k`` best-scored windows pasted (20–80/224 of the side) from images without, on the
images below the top ``top_share`` of scores, and the images they call poisoned are removed. Defaults: the reference
code's (ImageNet-100). Its re-training with i-CutMix is not applied: the victim re-trains with its own recipe.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from captum.attr import LayerAttribution, LayerGradCam
from sklearn.cluster import KMeans
from torch import nn

from benchmark.api import (
    Defense,
    DefenseContext,
    FeatureExtractorView,
    MethodConfig,
    check_range,
    chunked,
    create_backbone,
    epoch_batches,
    fit,
    is_known_backbone,
    paste_patch,
    random_locations,
    register_defense,
    shuffled_batches,
)


@dataclass(frozen=True, kw_only=True)
class PatchSearchConfig(MethodConfig):
    clusters: int = 1000  # k-means clusters (at most half the images)
    test_images: int = 1000  # flip-test images, the nearest to the centroids
    window_fraction: float = 60 / 224  # candidate trigger side / image side
    samples_per_iteration: int = 2  # images scored per remaining cluster and round
    prune_fraction: float = 0.25  # clusters dropped per round (lowest best score first)
    top_k: int = 20  # best-scored windows that the poison classifier pastes
    top_share: float = 0.10  # highest-scored share of images left out of the classifier's training set
    classifiers: int = 5
    classifier_steps: int = 2000
    classifier_batch: int = 32
    classifier_lr: float = 0.01
    classifier_backbone: str = "resnet10t"  # the reference's ResNet with one block per stage

    def problems(self) -> list[str]:
        problems: list[str] = []
        for name in ("clusters", "test_images", "samples_per_iteration", "top_k", "classifiers", "classifier_steps"):
            check_range(problems, name, getattr(self, name), 1, 10**7)
        check_range(problems, "classifier_batch", self.classifier_batch, 2, 10**5)
        check_range(problems, "window_fraction", self.window_fraction, 0.0, 1.0, low_open=True)
        check_range(problems, "prune_fraction", self.prune_fraction, 0.0, 1.0, low_open=True, high_open=True)
        check_range(problems, "top_share", self.top_share, 0.0, 1.0, high_open=True)
        check_range(problems, "classifier_lr", self.classifier_lr, 0.0, 10.0, low_open=True)
        if not is_known_backbone(self.classifier_backbone):
            problems.append(f"classifier_backbone: unknown backbone {self.classifier_backbone!r} (a tiny CNN id or a timm name)")
        return problems


class ClusterSimilarity(nn.Module):
    """Cosine similarity of the encoder's features to the cluster means: the k-means head Grad-CAM explains."""

    def __init__(self, encoder: nn.Module, means: torch.Tensor) -> None:
        super().__init__()
        self.encoder = encoder
        self.register_buffer("means", F.normalize(means, dim=1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.encoder(images), dim=1) @ self.means.T


def last_spatial_layer(module: nn.Module, sample: torch.Tensor) -> nn.Module:
    """The last leaf module whose output is a feature map larger than 1 × 1 (Grad-CAM's layer: a ResNet's last
    block's activation, a small CNN's last ReLU)."""
    seen: list[nn.Module] = []

    def record(layer: nn.Module, _inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor) and output.dim() == 4 and output.shape[-1] * output.shape[-2] > 1:
            seen.append(layer)

    hooks = [m.register_forward_hook(record) for m in module.modules() if not any(True for _ in m.children())]
    try:
        with torch.no_grad():
            module(sample)
    finally:
        for hook in hooks:
            hook.remove()
    if not seen:
        raise ValueError("PatchSearch needs an encoder with a spatial feature map (Grad-CAM on its last one)")
    return seen[-1]


def heat_windows(cam: LayerGradCam, images: torch.Tensor, clusters: torch.Tensor, side: int) -> torch.Tensor:
    """The ``side``-sided window of most Grad-CAM heat of each image (for its own cluster): (N, C, side, side)."""
    heat = cam.attribute(images, target=clusters, relu_attributions=True).detach()
    heat = LayerAttribution.interpolate(heat, tuple(images.shape[-2:]), interpolate_mode="bilinear")
    sums = F.avg_pool2d(heat, side, stride=1).flatten(1)
    corner = sums.argmax(1)
    columns = images.shape[-1] - side + 1
    return torch.stack([image[:, int(c) // columns:int(c) // columns + side, int(c) % columns:int(c) % columns + side]
                        for image, c in zip(images, corner)])


@register_defense
class PatchSearch(Defense[PatchSearchConfig]):
    id = "patchsearch"
    stage = "sanitise"
    tracks = ("pretrain-backdoor",)  # it needs an encoder pre-trained on the poisoned images and a patch trigger to find
    Config = PatchSearchConfig
    citation = "Tejankar et al., Defending Against Patch-based Backdoor Attacks on Self-Supervised Learning, CVPR 2023"
    paper_url = "https://arxiv.org/abs/2304.01482"
    # the victim's re-training on what it keeps; the search and the classifiers (about a tenth of a re-training at the
    # paper's scale) are not counted
    cost: ClassVar[Mapping[str, Any]] = {"pretrain-backdoor": {"ssl_factor": 1}}

    def keep_indices(self, extractor: FeatureExtractorView | None, images: torch.Tensor, labels: torch.Tensor | None,
                     ctx: DefenseContext) -> torch.Tensor:
        if extractor is None:
            raise ValueError("PatchSearch needs the encoder pre-trained on the images it sanitises")
        scores, bank = self.poison_scores(extractor, images, ctx.generator)
        poisoned = self.classify(images, scores, bank, ctx)
        kept = torch.nonzero(~poisoned).flatten()
        return kept if len(kept) else scores.argmin().reshape(1)

    # ------------------------------------------------------------------------------------------ the search
    def poison_scores(self, extractor: FeatureExtractorView, images: torch.Tensor,
                      gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Every image's poison score (0 where not visited) and the windows of the ``top_k`` best-scored images."""
        cfg, device, n = self.config, extractor.device, len(images)
        features = F.normalize(extractor.features(images), dim=1).cpu()
        k = max(2, min(cfg.clusters, n // 2))
        kmeans = KMeans(n_clusters=k, n_init=1, max_iter=20, random_state=int(torch.randint(2**31 - 1, (), generator=gen)))
        assigned = torch.as_tensor(kmeans.fit_predict(features.double().numpy()), dtype=torch.int64)
        centroids = torch.as_tensor(kmeans.cluster_centers_, dtype=torch.float32)
        means = torch.stack([features[assigned == c].mean(0) for c in range(k)])
        cam = LayerGradCam(ClusterSimilarity(extractor.module, means.to(device)),
                           last_spatial_layer(extractor.module, images[:2].to(device)))
        side = max(1, round(cfg.window_fraction * images.shape[-1]))

        def nearest(x: torch.Tensor) -> torch.Tensor:
            return torch.cdist(F.normalize(extractor.features(x), dim=1).cpu(), centroids).argmin(1)

        def windows_of(index: torch.Tensor) -> torch.Tensor:
            return chunked(lambda x, c: heat_windows(cam, x.to(device), c.to(device), side).cpu(), images[index],
                           assigned[index], size=64)

        test = self.flip_test_images(features, assigned, centroids)
        test_images, test_clusters = images[test], assigned[test]
        queues = [members[torch.randperm(len(members), generator=gen)].tolist()
                  for members in (torch.nonzero(assigned == c).flatten() for c in range(k))]
        scores, remaining = torch.zeros(n), list(range(k))
        while remaining:
            picked = [queues[c].pop(0) for c in remaining for _ in range(min(len(queues[c]), cfg.samples_per_iteration))]
            if not picked:
                break
            for i, window in zip(picked, windows_of(torch.tensor(picked))):
                locations = random_locations(len(test_images), tuple(test_images.shape), tuple(window.shape), gen)
                flipped = nearest(paste_patch(test_images, window, locations))
                scores[i] = float((flipped == assigned[i]).sum() - (test_clusters == assigned[i]).sum())
            best = {c: float(scores[assigned == c].max()) for c in remaining}
            ranked = sorted(remaining, key=lambda c: -best[c])
            drop = int(cfg.prune_fraction * len(ranked))
            remaining = ranked[:-drop] if drop else []  # the reference's loop: it ends when none can be pruned
        return scores, windows_of(scores.argsort(descending=True, stable=True)[: cfg.top_k])

    def flip_test_images(self, features: torch.Tensor, assigned: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
        """The images nearest each centroid, ``test_images`` in all (one per cluster if there are fewer)."""
        k = len(centroids)
        per_cluster = max(1, self.config.test_images // k)
        distance = (features - centroids[assigned]).norm(dim=1)
        chosen = [members[distance[members].argsort()[:per_cluster]]
                  for members in (torch.nonzero(assigned == c).flatten() for c in range(k))]
        return torch.cat(chosen)

    # ------------------------------------------------------------------------------------------ the classifier
    def classify(self, images: torch.Tensor, scores: torch.Tensor, bank: torch.Tensor, ctx: DefenseContext) -> torch.Tensor:
        """Whether each image is poisoned, by the ensemble's mean logits."""
        cfg, n = self.config, len(images)
        order = scores.argsort(descending=True, stable=True)
        pool = order[int(cfg.top_share * n): n - cfg.top_k] if n - cfg.top_k > int(cfg.top_share * n) else order[cfg.top_k:]
        models = [self.train_classifier(images[pool], bank, ctx) for _ in range(cfg.classifiers)]
        with torch.no_grad():
            logits = chunked(lambda x: torch.stack([m(x.to(ctx.device)) for m in models]).mean(0).cpu(), images, size=256)
        return logits.argmax(1) == 1

    def train_classifier(self, images: torch.Tensor, bank: torch.Tensor, ctx: DefenseContext) -> nn.Module:
        cfg, device, (channels, side) = self.config, ctx.device, (images.shape[1], images.shape[-1])
        backbone = create_backbone(cfg.classifier_backbone, in_chans=channels)
        model = nn.Sequential(backbone, nn.Linear(backbone.feature_dim, 2)).to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=cfg.classifier_lr, momentum=0.9, weight_decay=1e-4)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg.classifier_steps)
        crop = K.RandomResizedCrop((side, side), scale=(0.2, 1.0))
        after = [K.RandomHorizontalFlip()] + ([K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8), K.RandomGrayscale(p=0.2)]
                                              if channels == 3 else [])
        recolour = nn.Sequential(*after)
        batch = min(cfg.classifier_batch, len(images))
        epochs = -(-cfg.classifier_steps * batch // len(images))
        batches = itertools.islice(epoch_batches(epochs, lambda _: shuffled_batches(len(images), batch, ctx.generator,
                                                                                    min_size=2)), cfg.classifier_steps)

        def loss(index: torch.Tensor) -> torch.Tensor:
            x, target = crop(images[index]), (torch.rand(len(index), generator=ctx.generator) < 0.5).long()
            x = self.paste_bank(x, target.bool(), bank, ctx.generator)
            return F.cross_entropy(model(recolour(x).to(device)), target.to(device))

        model.train()
        fit(optimizer, batches, loss, after_step=lambda _: schedule.step())
        return model.eval()

    @staticmethod
    def paste_bank(images: torch.Tensor, chosen: torch.Tensor, bank: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """``images`` with a random window of ``bank``, resized to 20–80/224 of the side, pasted on the ``chosen``
        ones, 10/224 of the side from the edges (the reference's placement)."""
        out, side = images.clone(), images.shape[-1]
        low, high, margin = max(1, round(20 / 224 * side)), max(2, round(80 / 224 * side)), round(10 / 224 * side)
        for i in torch.nonzero(chosen).flatten().tolist():
            window = bank[int(torch.randint(len(bank), (), generator=gen))]
            size = int(torch.randint(low, min(high, side - 2 * margin), (), generator=gen))
            top, left = (int(torch.randint(margin, max(margin + 1, side - size - margin), (), generator=gen)) for _ in range(2))
            out[i, :, top:top + size, left:left + size] = F.interpolate(window[None], size=(size, size), mode="bilinear",
                                                                        align_corners=False)[0]
        return out
