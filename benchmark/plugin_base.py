"""The track-independent half of the plugin API: configs and their validation, the poison-budget rule, the
frozen encoder's view, and the bases and registries of attacks and defenses. Plugins import all of it, and each
track's context, poison and attack base (its package's ``interface`` module), from :mod:`benchmark.api`."""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import math
import os
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import torch
from torch import nn

from benchmark.registry import Registry
from benchmark.tracks.info import track_names

# the one training loop and chunked map, for plugins too (re-exported)
from benchmark.training import chunked as chunked
from benchmark.training import epoch_batches as epoch_batches
from benchmark.training import fit as fit
from benchmark.training import shuffled_batches as shuffled_batches

DefenseStage = Literal["data", "sanitise", "training", "posthoc", "detect"]


# --------------------------------------------------------------------------------------------- configs
@dataclass(frozen=True, kw_only=True)
class MethodConfig:
    """Base of every method's ``Config``: keyword-only, frozen, JSON-serialisable fields."""

    def problems(self) -> list[str]:
        """Every problem with the values, as ``"field: what is wrong"``; empty when valid."""
        return []

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def config_problems(config_cls: type, settings: Any, where: str) -> list[str]:
    """Every problem with building ``config_cls(**settings)``, all at once: unknown keys (with a
    did-you-mean and the valid ones), values of the wrong type for the field's annotation (at every depth:
    nested dataclasses, lists, mappings, literals, optionals), then the config's own ``problems()`` ranges.
    ``config_cls`` is any dataclass; suites, recipes and every plugin's ``Config`` are checked by this."""
    if not isinstance(settings, Mapping):
        return [f"{where or 'the top level'}: expected a mapping, got {_type_name(settings)}"]
    fields = {f.name: f for f in dataclasses.fields(config_cls) if f.init}
    hints = typing.get_type_hints(config_cls)
    problems: list[str] = []
    for key in settings:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{where or 'the top level'}: unknown key {key!r}{hint}; valid: {', '.join(fields) or '(none)'}")
    typed: dict[str, Any] = {}  # the well-typed settings: their ranges are checked even when others are wrong
    for name, f in fields.items():
        if name in settings:
            wrong = value_problems(settings[name], hints[name], _join(where, name))
            problems += wrong
            if not wrong:
                typed[name] = settings[name]
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            problems.append(f"{_join(where, name)}: required")
    try:
        config = config_cls(**typed)
    except (TypeError, ValueError) as exc:
        return problems or [f"{where or 'the top level'}: {exc}"]
    own = config.problems() if hasattr(config, "problems") else []
    return problems + [_join(where, problem) for problem in own]


_Built = typing.TypeVar("_Built")


def build_config(config_cls: type[_Built], settings: Mapping[str, Any]) -> _Built:
    """``config_cls(**settings)`` with the nested dataclasses (in optionals, lists, tuples, mappings) built too, and
    YAML's lists turned into tuples where a field is a tuple. For settings :func:`config_problems` found valid."""
    hints = typing.get_type_hints(config_cls)
    return config_cls(**{key: _built(value, hints[key]) for key, value in settings.items()})


def _built(value: Any, annotation: Any) -> Any:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if value is None:
        return None
    if origin in (typing.Union, types.UnionType):
        arm = next((a for a in args if a is not type(None) and not value_problems(value, a, "")), None)
        return value if arm is None else _built(value, arm)
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation) and isinstance(value, Mapping):
        return build_config(annotation, value)
    if origin is tuple:
        items = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        return tuple(_built(v, a) for v, a in zip(value, items, strict=True))
    if origin in (list, collections.abc.Sequence) and args:
        return [_built(v, args[0]) for v in value]
    if origin in (dict, collections.abc.Mapping) and args:
        return {k: _built(v, args[1]) for k, v in value.items()}
    return value


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def value_problems(value: Any, annotation: Any, where: str) -> list[str]:
    """Problems with ``value`` as a value of type ``annotation`` (YAML's types: a list for a tuple)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return []
    if origin is Literal:
        return [] if value in args else [f"{where}: {value!r} must be one of {', '.join(map(repr, args))}"]
    if origin in (typing.Union, types.UnionType):
        real = [arm for arm in args if arm is not type(None)]
        if value is None and len(real) < len(args):
            return []
        if len(real) == 1:  # Optional[X]: X's own, detailed problems
            return value_problems(value, real[0], where)
        arms = [value_problems(value, arm, where) for arm in args]
        if any(not arm for arm in arms):
            return []
        return [f"{where}: {value!r} is not {' or '.join(_annotation_name(a) for a in args)}"]
    if origin in (list, tuple, collections.abc.Sequence) or annotation in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return [f"{where}: expected a list, got {_type_name(value)}"]
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                return [f"{where}: expected {len(args)} items, got {len(value)}"]
            return [p for i, (v, a) in enumerate(zip(value, args)) for p in value_problems(v, a, f"{where}[{i}]")]
        item = args[0] if args else Any
        return [p for i, v in enumerate(value) for p in value_problems(v, item, f"{where}[{i}]")]
    if origin in (dict, collections.abc.Mapping) or annotation in (dict, Mapping):
        if not isinstance(value, Mapping):
            return [f"{where}: expected a mapping, got {_type_name(value)}"]
        key_t, val_t = args if args else (Any, Any)
        return [p for k, v in value.items() for p in value_problems(k, key_t, f"{where} key") + value_problems(v, val_t, f"{where}.{k}")]
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        return config_problems(annotation, value, where)
    if annotation is bool:
        return [] if isinstance(value, bool) else [f"{where}: {value!r} is not a boolean (true/false)"]
    if annotation is int:
        return [] if isinstance(value, int) and not isinstance(value, bool) else [f"{where}: {value!r} is not an integer"]
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return [f"{where}: {value!r} is not a number"]
        return [] if math.isfinite(value) else [f"{where}: {value!r} is not a finite number"]
    if isinstance(annotation, type):
        return [] if isinstance(value, annotation) else [f"{where}: expected {annotation.__name__}, got {_type_name(value)}"]
    return []


def _type_name(value: Any) -> str:
    return "a mapping" if isinstance(value, Mapping) else "a list" if isinstance(value, list) else f"{type(value).__name__} {value!r}"


def _annotation_name(annotation: Any) -> str:
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def poison_count(fraction: float, n: int) -> int:
    """How many of ``n`` points a poison budget ``fraction`` allows, the one rule of every track and of the
    estimate: ⌊fraction · n⌋, robust to the float error of the product (0.29 × 100 is 28.999999999999996 in
    floating point, and 29 points here)."""
    return math.floor(fraction * n + 1e-9)


def check_range(problems: list[str], name: str, value: float, low: float, high: float,
                *, low_open: bool = False, high_open: bool = False) -> None:
    """Append ``name: ...`` to ``problems`` when ``value`` is outside the interval."""
    below = value <= low if low_open else value < low
    above = value >= high if high_open else value > high
    if below or above:
        lb, hb = ("(" if low_open else "["), (")" if high_open else "]")
        problems.append(f"{name}: {value!r} is outside {lb}{low}, {high}{hb}")


# --------------------------------------------------------------------------------------------- contexts
@dataclass(frozen=True)
class FeatureExtractorView:
    """The frozen, white-box feature extractor ``f`` of the downstream track.

    ``module`` maps images in [0, 1] to the features the victim head sees (it includes the encoder's
    frozen feature standardisation). Its parameters do not require grad; gradients w.r.t. inputs flow.
    """

    module: nn.Module
    feature_dim: int
    device: torch.device
    batch_size: int = 512

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        features: torch.Tensor = self.module(images)
        return features

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Features of ``images`` (any device), computed in batches; returned on ``self.device``."""
        if not len(images):
            return torch.empty(0, self.feature_dim, device=self.device)
        return chunked(lambda part: self.module(part.to(self.device)), images, size=self.batch_size)


@dataclass(frozen=True)
class HeadSpec:
    """How the victim trains its linear head: multinomial logistic regression with L2 weight ``l2``
    (mean loss + l2/2·‖W‖², bias unpenalised) on the features. White-box attackers may use it."""

    num_classes: int
    l2: float


class CheckpointStore(Protocol):
    """Named checkpoints of a long generation (CP), kept by the harness so that a killed run resumes.
    ``state`` holds tensors, numbers, strings and containers of them (read back with ``weights_only``)."""

    def load(self, name: str) -> dict[str, Any] | None: ...

    def save(self, name: str, state: Mapping[str, Any]) -> None: ...


class DirectoryCheckpoints:
    """A :class:`CheckpointStore` in a local folder (for tests and for running an attack by hand)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def load(self, name: str) -> dict[str, Any] | None:
        path = self.root / f"{name}.pt"
        return torch.load(path, map_location="cpu", weights_only=True) if path.exists() else None

    def save(self, name: str, state: Mapping[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{name}.pt.tmp"
        torch.save(dict(state), tmp)
        tmp.replace(self.root / f"{name}.pt")


# --------------------------------------------------------------------------------------------- attacks
ConfigT = typing.TypeVar("ConfigT", bound=MethodConfig)
"""A method's ``Config``: ``class MyAttack(DownstreamAttack[MyConfig])`` types ``self.config`` as ``MyConfig``."""


class Attack(ABC, typing.Generic[ConfigT]):
    """Base of every attack: an ``id``, a ``Config``; built with a validated config (generic over it).

    An attack implements one or more tracks by subclassing their bases (each track's ``interface`` module
    declares one, with the track's name as ``track``: :class:`~benchmark.api.DownstreamAttack`, …); ``tracks()``
    lists them.
    """

    id: ClassVar[str]
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    citation: ClassVar[str] = ""
    paper_url: ClassVar[str] = ""  # where a reader finds the paper (the board links it)
    # track → why this attack is expected to do nothing there (a null by design; the board says so)
    expected_null: ClassVar[Mapping[str, str]] = {}
    # pre-training availability track: the victim recipe's fields the attack reads (None: all of them). Its
    # context's recipe carries only these (the others at their defaults) and its poison is cached under
    # them, so recipes that agree on them share one poison (e.g. a supervised surrogate reads the backbone
    # only: one poison for SimCLR, MoCo v2 and BYOL victims of the same backbone, data and seed).
    recipe_fields: ClassVar[tuple[str, ...] | None] = None
    # setting → value → why: a suite entry whose settings match one of these is a control row (the board
    # labels it and does not rank it), e.g. PoisonedEncoder's decoy references
    control_settings: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    # per track, what the attack's own loops cost, for ``plan --estimate`` (:mod:`benchmark.cost_models`)
    cost: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, config: ConfigT | None = None) -> None:
        self.config: ConfigT = typing.cast(ConfigT, config if config is not None else self.Config())

    @classmethod
    def tracks(cls) -> tuple[str, ...]:
        return tuple(dict.fromkeys(str(vars(base)["track"]) for base in cls.__mro__ if isinstance(vars(base).get("track"), str)))

    @classmethod
    def track_base(cls, track: str) -> type[TrackAttack[Any]]:
        """The base through which this attack implements ``track``."""
        for base in cls.__mro__:
            if vars(base).get("track") == track and issubclass(base, TrackAttack):
                return base
        raise ValueError(f"{cls.id} does not implement track {track!r} (it implements {', '.join(cls.tracks()) or 'none'})")


class TrackAttack(Attack[ConfigT]):
    """The base of one track's attacks (declared in the track's ``interface`` module): the track's name, the
    method the harness calls and the poison type it must return, and how the plugin process builds the
    track's context from the plain data the harness sends (:meth:`context_from`)."""

    track: ClassVar[str]
    craft_method: ClassVar[str]
    poison_type: ClassVar[type]

    @classmethod
    @abstractmethod
    def context_from(cls, plain: Mapping[str, Any], *, generator: torch.Generator, device: torch.device,
                     cached: Any, checkpoints: CheckpointStore) -> tuple[Any, list[torch.Tensor]]:
        """The context from the harness's plain data, and the tensors the attack must not mutate."""


ATTACKS: Registry[type[Attack[Any]]] = Registry("attack")


AttackT = typing.TypeVar("AttackT", bound="type[Attack[Any]]")
DefenseT = typing.TypeVar("DefenseT", bound="type[Defense[Any]]")


def register_attack(cls: AttackT) -> AttackT:
    """Class decorator: register an attack under ``cls.id``."""
    if not getattr(cls, "id", None):
        raise ValueError(f"{cls.__name__} needs a class attribute `id`")
    ATTACKS.register(cls.id, cls)
    return cls


# --------------------------------------------------------------------------------------------- defenses
@dataclass(frozen=True)
class Detection:
    """A detector's answer about one encoder: ``score`` (higher = more likely backdoored; what a detection AUROC
    ranks), ``flagged`` (the method's own verdict at its own threshold) and its diagnostics (numbers)."""

    score: float
    flagged: bool
    diagnostics: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class DefenseContext:
    """What a defense sees: never which points are poisoned, never test labels."""

    track: str
    num_classes: int
    seed: int
    generator: torch.Generator
    device: torch.device


class Defense(ABC, typing.Generic[ConfigT]):
    """Base of every defense. A defense never learns which points are poisoned.

    ``stage`` says where it acts; ``tracks`` which tracks it applies to. The engine calls the hooks of
    its stage (a defense overrides only those):

    * ``data``: :meth:`transform_images` maps the victim's whole training set (clean and poisoned alike)
      before the victim sees it (downstream: before features are computed; pre-training: via
      :meth:`ssl_hooks`, e.g. as an augmentation of every batch).
    * ``sanitise``: :meth:`keep_indices` picks the training points the victim keeps (downstream: the
      labelled training set, clean and poisoned alike; pre-training: the unlabeled pre-training images and
      the supervised victim's labelled set); the victim then trains as it would undefended, on those
      points only. The track records the share of poisons and of clean points removed.
    * ``training``: :meth:`fit_head` trains the downstream head in place of the plain convex fit;
      :meth:`ssl_hooks` changes SSL pre-training (loss, optimiser); :meth:`fit_supervised` trains a
      supervised victim.
    * ``posthoc``: :meth:`repair_encoder` repairs a trained encoder on clean labeled data.
    * ``detect``: :meth:`detect_encoder` inspects a trained encoder and says whether it is backdoored (a
      :class:`Detection`); the victim trains as it would undefended, and the track records the verdict.

    :meth:`unsupported` returns a reason when a combination is undefined; the plan lists it as skipped,
    and nothing else ever runs under the defense's name.
    """

    id: ClassVar[str]
    stage: ClassVar[DefenseStage]
    tracks: ClassVar[tuple[str, ...] | None] = None  # None: every track
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    citation: ClassVar[str] = ""
    paper_url: ClassVar[str] = ""  # where a reader finds the paper (the board links it)
    # Training stage: settings that switch the defense's mechanism off and keep its schedule (optimiser,
    # epochs, batches). The downstream track trains this same-schedule undefended victim beside the defended
    # one, and a defense's cost and what it restores are measured against it, not against a victim trained
    # differently. None: the undefended victim is the track's own (data and post-hoc defenses).
    reference_settings: ClassVar[Mapping[str, Any] | None] = None
    # per track and stage, what the defense's own loops cost, for ``plan --estimate`` (:mod:`benchmark.cost_models`)
    cost: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, config: ConfigT | None = None) -> None:
        self.config: ConfigT = typing.cast(ConfigT, config if config is not None else self.Config())

    @classmethod
    def applies_to(cls) -> tuple[str, ...]:
        """The tracks this defense applies to (``tracks``; None: every declared track)."""
        return cls.tracks if cls.tracks is not None else track_names()

    def unsupported(self, *, track: str, encoder: Mapping[str, Any], victim: str) -> str | None:
        """Why this defense cannot run in a combination, or None when it can. ``encoder`` is the cell's
        encoder spec (``method``, ``backbone``, ``norm``, …), ``victim`` the head kind."""
        if self.tracks is not None and track not in self.tracks:
            return f"{self.id} does not apply to track {track} (it applies to {', '.join(self.tracks)})"
        return None

    @property
    def transform_test(self) -> bool:
        """Data stage: whether the victim also applies :meth:`transform_images` to its test inputs at
        inference (a preprocessing defense such as ME-Net). The defense sees test images, never labels."""
        return False

    def privacy(self) -> dict[str, float]:
        """Privacy accounting of the last training call (DP-SGD: ``privacy_epsilon`` at δ = 1/N, …), recorded
        beside the cell's metrics; {} for defenses without a guarantee."""
        return {}

    # data stage
    def transform_images(self, images: torch.Tensor, ctx: DefenseContext) -> torch.Tensor:
        raise NotImplementedError(f"{self.id} has no data-stage transform")

    # sanitise stage
    def keep_indices(self, extractor: FeatureExtractorView | None, images: torch.Tensor, labels: torch.Tensor | None,
                     ctx: DefenseContext) -> torch.Tensor:
        """The indices of the training points the victim keeps: a 1-D integer tensor of distinct indices
        into ``images`` (at least one). ``labels`` is None for unlabeled pre-training images; ``extractor``
        is the victim's frozen encoder in the downstream track; in pre-training it is None (a sanitiser that
        needs a model trains its own), except where the track grants the encoder pre-trained on the
        unfiltered images (the backdoor track: find the poisons with it, then the victim re-trains)."""
        raise NotImplementedError(f"{self.id} does not sanitise training data")

    # training stage
    def fit_head(self, extractor: FeatureExtractorView, images: torch.Tensor, labels: torch.Tensor,
                 head: HeadSpec, ctx: DefenseContext) -> Any:
        """Train the downstream linear head (returns ``benchmark.probe.LinearHead``)."""
        raise NotImplementedError(f"{self.id} does not train heads")

    def ssl_hooks(self, ssl: Any, ctx: DefenseContext) -> Any:
        """``benchmark.pretrain.SSLTrainingHooks`` that change SSL pre-training of recipe ``ssl``."""
        raise NotImplementedError(f"{self.id} does not change pre-training")

    def fit_supervised(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, ctx: DefenseContext,
                       train: Callable[..., nn.Module]) -> nn.Module:
        """Train a supervised victim; ``train(model, images, labels, ...)`` is the plain trainer to wrap."""
        raise NotImplementedError(f"{self.id} does not train supervised victims")

    # detection stage
    def detect_encoder(self, extractor: FeatureExtractorView, images: torch.Tensor, ctx: DefenseContext) -> Detection:
        """Whether the frozen encoder ``extractor`` is backdoored, from it and clean unlabeled ``images``."""
        raise NotImplementedError(f"{self.id} does not inspect encoders")

    # post-hoc stage
    def repair_encoder(self, extractor: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                       ctx: DefenseContext) -> nn.Module:
        """Return a repaired copy of ``extractor`` (images in [0, 1] → features) trained on clean data."""
        raise NotImplementedError(f"{self.id} does not repair encoders")


DEFENSES: Registry[type[Defense[Any]]] = Registry("defense")


def register_defense(cls: DefenseT) -> DefenseT:
    """Class decorator: register a defense under ``cls.id``."""
    if not getattr(cls, "id", None):
        raise ValueError(f"{cls.__name__} needs a class attribute `id`")
    DEFENSES.register(cls.id, cls)
    return cls
