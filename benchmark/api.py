"""The public plugin API: everything an attack or a defense module may import from the engine.

A method is one module in ``attacks/`` or ``defenses/`` that subclasses one of the base classes re-exported
below (the track-independent ones from :mod:`benchmark.plugin_base`; each track's attack base, context and poison
from its package's ``interface`` module: the shipped tracks' names are imported below, typed, and every name in a
track interface's ``__all__`` is found here too, so a track added as a package needs no edit to this file) and
decorates the class with :func:`register_attack` /
:func:`register_defense`. The module is discovered automatically (see :mod:`benchmark.plugins`); nobody edits a central list.

Hyper-parameters are a keyword-only frozen dataclass nested as ``Config`` in the method class, with the
paper's defaults as field defaults. ``Config.problems()`` returns every range problem at once (Opacus
style), so a suite file is validated before any compute starts.

What an attack receives is a *context* built, in its own plugin process (:mod:`benchmark.workers`), from
copies of what its threat model allows (the frozen encoder where the track is white-box, the clean
training data of its track, its budget, a seeded generator). Never test data, cache paths or engine
objects. What it returns is validated by the harness (its track's ``validate`` module).
"""

from __future__ import annotations

import importlib
from typing import Any

# what the shipped methods build on: the victim's head and its objective, augmentations, SSL recipes and
# training hooks, backbones, seeded randomness (a plugin imports these from here, never from the engine's modules)
from benchmark.augment import AugmentConfig as AugmentConfig
from benchmark.augment import build_augmentation as build_augmentation
from benchmark.augment import place_augmentation as place_augmentation
from benchmark.backbones import create_backbone as create_backbone
from benchmark.backbones import is_known_backbone as is_known_backbone
from benchmark.plugin_base import (
    ATTACKS as ATTACKS,
)
from benchmark.plugin_base import (
    DEFENSES as DEFENSES,
)
from benchmark.plugin_base import (
    Attack as Attack,
)
from benchmark.plugin_base import (
    CheckpointStore as CheckpointStore,
)
from benchmark.plugin_base import (
    ConfigT as ConfigT,
)
from benchmark.plugin_base import (
    Defense as Defense,
)
from benchmark.plugin_base import (
    DefenseContext as DefenseContext,
)
from benchmark.plugin_base import (
    DefenseStage as DefenseStage,
)
from benchmark.plugin_base import (
    Detection as Detection,
)
from benchmark.plugin_base import (
    DirectoryCheckpoints as DirectoryCheckpoints,
)
from benchmark.plugin_base import (
    FeatureExtractorView as FeatureExtractorView,
)
from benchmark.plugin_base import (
    HeadSpec as HeadSpec,
)
from benchmark.plugin_base import (
    MethodConfig as MethodConfig,
)
from benchmark.plugin_base import (
    TrackAttack as TrackAttack,
)
from benchmark.plugin_base import (
    check_range as check_range,
)
from benchmark.plugin_base import (
    config_problems as config_problems,
)
from benchmark.plugin_base import (
    poison_count as poison_count,
)
from benchmark.plugin_base import (
    register_attack as register_attack,
)
from benchmark.plugin_base import (
    register_defense as register_defense,
)
from benchmark.plugin_base import (
    value_problems as value_problems,
)
from benchmark.pretrain import FeatureExtractor as FeatureExtractor
from benchmark.pretrain import IndexedTransform as IndexedTransform
from benchmark.pretrain import SSLRecipe as SSLRecipe
from benchmark.pretrain import SSLTrainingHooks as SSLTrainingHooks
from benchmark.pretrain import make_extractor as make_extractor
from benchmark.pretrain import make_optimizer as make_optimizer
from benchmark.pretrain import train_ssl as train_ssl
from benchmark.probe import LinearHead as LinearHead
from benchmark.probe import fit_linear_head as fit_linear_head
from benchmark.probe import head_accuracy as head_accuracy
from benchmark.probe import head_objective as head_objective
from benchmark.probe import stratified_split as stratified_split
from benchmark.ssl import SSL_METHODS as SSL_METHODS
from benchmark.ssl import SSLMethod as SSLMethod
from benchmark.tracks._pretrain_interface import PretrainAttackContext as PretrainAttackContext
from benchmark.tracks.downstream.interface import DownstreamAttack as DownstreamAttack
from benchmark.tracks.downstream.interface import DownstreamAttackContext as DownstreamAttackContext
from benchmark.tracks.downstream.interface import DownstreamPoison as DownstreamPoison
from benchmark.tracks.info import track_infos
from benchmark.tracks.pretrain_availability.interface import AvailabilityPoison as AvailabilityPoison
from benchmark.tracks.pretrain_availability.interface import PretrainAvailabilityAttack as PretrainAvailabilityAttack
from benchmark.tracks.pretrain_targeted.interface import PretrainTargetedAttack as PretrainTargetedAttack
from benchmark.tracks.pretrain_targeted.interface import TargetedPoison as TargetedPoison
from benchmark.tracks.pretrain_targeted.interface import target_classes_of as target_classes_of
from benchmark.training import chunked as chunked
from benchmark.training import epoch_batches as epoch_batches
from benchmark.training import fit as fit
from benchmark.training import shuffled_batches as shuffled_batches
from benchmark.utils import derive_seed as derive_seed
from benchmark.utils import fast_layout as fast_layout
from benchmark.utils import fast_path as fast_path
from benchmark.utils import seed_everything as seed_everything


def __getattr__(name: str) -> Any:
    """A name that a track package's ``interface`` module lists in its ``__all__`` (PEP 562)."""
    for info in track_infos().values():
        module = importlib.import_module(f"{info.package}.interface")
        if name in getattr(module, "__all__", ()):
            return getattr(module, name)
    raise AttributeError(f"module 'benchmark.api' has no attribute {name!r} (nor does a track interface's __all__)")
