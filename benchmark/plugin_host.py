"""The child side of plugin isolation (see :mod:`benchmark.workers`): runs in a process forked from the
pristine server, imports exactly one plugin module, builds the plugin's context from the plain data it
was sent (what the track's threat model grants, nothing else), calls the plugin and sends back plain data.

One function per call kind (``FUNCTIONS``): ``describe`` and ``resolve`` read a module's registrations and
validate settings; ``craft`` runs an attack; ``transform_images``, ``fit_head``, ``repair_encoder``,
``pretrain_encoder`` and ``supervised`` run a defense's hooks. Nothing here is trusted by the scoring
process: it validates every answer itself.
"""

from __future__ import annotations

import importlib
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any

import torch
from tqdm import tqdm

from benchmark.api import (
    ATTACKS,
    DEFENSES,
    Defense,
    DefenseContext,
    Detection,
    FeatureExtractorView,
    HeadSpec,
    config_problems,
)
from benchmark.codec import decode, encode
from benchmark.pretrain import (
    FeatureExtractor,
    SSLRecipe,
    SSLTrainingHooks,
    extractor_from_spec,
    extractor_tensors,
    make_extractor,
    train_ssl,
)
from benchmark.sandbox import fresh_scratch
from benchmark.supervised import supervised_net, train_supervised
from benchmark.utils import seed_everything
from benchmark.validation import fingerprint, validate_kept


class Channel:
    """The child's end of the pipe: requests to the scoring process while the plugin runs."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def ask(self, message: dict[str, Any]) -> dict[str, Any]:
        self.conn.send_bytes(encode(message))
        return decode(self.conn.recv_bytes())

    def cached(self, kind: str, config: Mapping[str, Any], build: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        found = self.ask({"op": "cache_get", "kind": kind, "config": _plain(config)})["tensors"]
        if found is not None:
            return found
        tensors = {k: v.detach().cpu().contiguous() for k, v in build().items()}
        self.ask({"op": "cache_put", "kind": kind, "config": _plain(config), "tensors": tensors})
        return tensors


class BridgeCheckpoints:
    """:class:`benchmark.api.CheckpointStore` over the pipe: the scoring process stores the bytes."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    def load(self, name: str) -> dict[str, Any] | None:
        data = self.channel.ask({"op": "checkpoint_load", "name": name})["data"]
        return None if data is None else decode(data)

    def save(self, name: str, state: Mapping[str, Any]) -> None:
        self.channel.ask({"op": "checkpoint_save", "name": name, "data": encode(_plain(state))})


def _plain(obj: Any) -> Any:
    """JSON-like data with tensors: tuples become lists, tensors move to the CPU."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    return obj


def serve_call(conn: Any, function: str, request_bytes: bytes) -> None:
    """Decode the request, run ``FUNCTIONS[function]`` and send its answer or the exception raised."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the user's interrupt of the scoring process counts
    start = time.perf_counter()
    try:
        request = decode(request_bytes)
        if request.get("threads"):  # the scoring process's setting: same reduction order, same numbers
            torch.set_num_threads(int(request["threads"]))
        seed_everything(int(request.get("rng_seed", 0)))
        value = FUNCTIONS[function](request, Channel(conn))
        payload = {"op": "result", "value": value, "seconds": time.perf_counter() - start}
    except BaseException as exc:
        payload = {"op": "error", "message": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    try:
        conn.send_bytes(encode(payload))
    except Exception as exc:
        conn.send_bytes(encode({"op": "error", "message": f"the plugin's answer is not plain data: {exc}",
                                "traceback": traceback.format_exc()}))


# --------------------------------------------------------------------------------------------- registry
def _plugin(request: Mapping[str, Any]) -> Any:
    importlib.import_module(request["module"])
    registry = ATTACKS if request["kind"] == "attack" else DEFENSES
    cls = registry.get(request["id"])
    return cls(cls.Config(**request["settings"]))


def describe(request: Mapping[str, Any], channel: Channel) -> list[dict[str, Any]]:
    """The attacks and defenses that ``request['module']`` registers, as plain metadata."""
    import inspect

    module = request["module"]
    doc = importlib.import_module(module).__doc__ or ""
    summary = " ".join(doc.strip().split("\n\n")[0].split())  # the module docstring's first paragraph: its paper
    out: list[dict[str, Any]] = []
    for kind, registry in (("attack", ATTACKS), ("defense", DEFENSES)):
        for name in registry.names():
            cls = registry.get(name)
            if cls.__module__ != module:
                continue
            entry = {"kind": kind, "id": name, "module": module, "citation": cls.citation, "paper_url": cls.paper_url,
                     "source": inspect.getfile(cls), "tracks": list(cls.tracks() if kind == "attack" else cls.applies_to()),
                     "doc": (inspect.getdoc(cls) or "").split("\n")[0], "summary": summary,
                     "cost": _plain(dict(cls.cost or {}))}
            if kind == "attack":
                fields = cls.recipe_fields
                entry |= {"space": getattr(cls, "space", None), "expected_null": dict(cls.expected_null),
                          "recipe_fields": None if fields is None else list(fields),
                          "control_settings": _plain({k: dict(v) for k, v in cls.control_settings.items()})}
            else:
                reference = cls.reference_settings
                entry |= {"stage": cls.stage, "reference_settings": None if reference is None else dict(reference)}
            out.append(entry)
    return out


def resolve(request: Mapping[str, Any], channel: Channel) -> dict[str, Any]:
    """Settings problems, resolved configs and ``unsupported`` reasons for entries of one module."""
    importlib.import_module(request["module"])
    entries = []
    for item in request["entries"]:
        cls = (ATTACKS if item["kind"] == "attack" else DEFENSES).get(item["id"])
        problems = config_problems(cls.Config, item["settings"], item["where"])
        out: dict[str, Any] = {"problems": problems, "config": None, "transform_test": False}
        if not problems:
            method = cls(cls.Config(**item["settings"]))
            out["config"] = _plain(method.config.to_dict())
            if item["kind"] == "defense":
                out["transform_test"] = bool(method.transform_test)
        entries.append(out)
    reasons = []
    for combo in request["combos"]:
        cls = DEFENSES.get(combo["id"])
        defense = cls(cls.Config(**combo["settings"]))
        reason = defense.unsupported(track=combo["track"], encoder=combo["encoder"], victim=combo["victim"])
        reasons.append(None if reason is None else str(reason))
    return {"entries": entries, "reasons": reasons}


# --------------------------------------------------------------------------------------------- attacks
def _fingerprint(tensors: list[torch.Tensor]) -> str:
    return fingerprint(*tensors)


def craft(request: Mapping[str, Any], channel: Channel) -> dict[str, Any]:
    """Run an attack on the context the track grants; the poison as plain tensors, or the violations
    that make it unusable (wrong type, mutated inputs)."""
    attack = _plugin(request)
    device = torch.device(request["device"])
    generator = torch.Generator().manual_seed(int(request["rng_seed"]))
    base = type(attack).track_base(request["track"])  # the track's attack base builds its context
    ctx, given = base.context_from(request["context"], generator=generator, device=device, cached=channel.cached,
                                   checkpoints=BridgeCheckpoints(channel))
    craft_fn, expected = getattr(attack, base.craft_method), base.poison_type
    before = _fingerprint(given)
    start = time.perf_counter()
    _reseed(request)
    poison = craft_fn(ctx)
    seconds = time.perf_counter() - start
    violations = [] if _fingerprint(given) == before else ["the attack mutated the training data it was given"]
    if type(poison) is not expected:
        return {"violations": violations + [f"expected a {expected.__name__}, got {type(poison).__name__}"], "seconds": seconds}
    fields = {name: getattr(poison, name) for name in expected.__dataclass_fields__ if name != "diagnostics"}
    diagnostics = poison.diagnostics if isinstance(poison.diagnostics, Mapping) else {}
    return {"violations": violations, "seconds": seconds, "fields": {k: _plain(v) for k, v in fields.items()},
            "diagnostics": {str(k): _number(v) for k, v in diagnostics.items()}}


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------------------------- defenses
def _reseed(request: Mapping[str, Any]) -> None:
    """Seed the global generators right before plugin code runs, so what a plugin draws from them does not
    depend on what the harness built before the call."""
    seed_everything(int(request["rng_seed"]))


def _defense_context(request: Mapping[str, Any]) -> DefenseContext:
    d = request["defense_context"]
    return DefenseContext(track=d["track"], num_classes=int(d["num_classes"]), seed=int(d["seed"]),
                          generator=torch.Generator().manual_seed(int(d["seed"])), device=torch.device(request["device"]))


def transform_images(request: Mapping[str, Any], channel: Channel) -> dict[str, Any]:
    defense = _plugin(request)
    dctx = _defense_context(request)
    _reseed(request)
    images = defense.transform_images(request["images"], dctx)
    return {"images": _plain(images)}


def keep_indices(request: Mapping[str, Any], channel: Channel) -> dict[str, Any]:
    """A sanitising defense's selection of the training points the victim keeps (checked by the caller)."""
    defense, device = _plugin(request), torch.device(request["device"])
    view = None
    if request.get("extractor") is not None:
        extractor = extractor_from_spec(request["extractor"], device)
        view = FeatureExtractorView(extractor, extractor.feature_dim, device)
    dctx = _defense_context(request)
    _reseed(request)
    kept = defense.keep_indices(view, request["images"], request.get("labels"), dctx)
    return {"kept": _plain(kept)}


def fit_head(request: Mapping[str, Any], channel: Channel) -> dict[str, Any]:
    defense, device = _plugin(request), torch.device(request["device"])
    extractor = extractor_from_spec(request["extractor"], device)
    view = FeatureExtractorView(extractor, extractor.feature_dim, device)
    dctx = _defense_context(request)
    _reseed(request)
    head = defense.fit_head(view, request["images"], request["labels"], HeadSpec(int(request["num_classes"]), float(request["l2"])), dctx)
    return {"weight": _plain(head.weight), "bias": _plain(head.bias), "privacy": _privacy(defense)}


def _privacy(defense: Defense) -> dict[str, float]:
    return {str(k): float(v) for k, v in (defense.privacy() or {}).items() if v is not None}


def repair_encoder(request: Mapping[str, Any], channel: Channel) -> dict[str, Any]:
    defense, device = _plugin(request), torch.device(request["device"])
    extractor = extractor_from_spec(request["extractor"], device)
    dctx = _defense_context(request)
    _reseed(request)
    repaired = _checked_extractor(defense, defense.repair_encoder(extractor, request["images"], request["labels"], dctx))
    return {"tensors": _plain(extractor_tensors(repaired))}


def detect_encoder(request: Mapping[str, Any], channel: Channel) -> dict[str, Any]:
    """A detector's verdict on the encoder sent (its score, flag and diagnostics as plain numbers)."""
    defense, device = _plugin(request), torch.device(request["device"])
    extractor = extractor_from_spec(request["extractor"], device)
    view = FeatureExtractorView(extractor, extractor.feature_dim, device)
    dctx = _defense_context(request)
    _reseed(request)
    detection = defense.detect_encoder(view, request["images"], dctx)
    if type(detection) is not Detection:
        raise TypeError(f"{defense.id}.detect_encoder must return a benchmark.api.Detection, got {type(detection).__name__}")
    diagnostics = detection.diagnostics if isinstance(detection.diagnostics, Mapping) else {}
    return {"score": float(detection.score), "flagged": bool(detection.flagged),
            "diagnostics": {str(k): _number(v) for k, v in diagnostics.items()}}


def _checked_extractor(defense: Defense, repaired: Any) -> FeatureExtractor:
    if not isinstance(repaired, FeatureExtractor):
        raise TypeError(f"{defense.id}.repair_encoder must return a benchmark.pretrain.FeatureExtractor, "
                        f"got {type(repaired).__name__}")
    return repaired


def ssl_hooks(defense: Defense, recipe: SSLRecipe, dctx: DefenseContext) -> SSLTrainingHooks | None:
    """SSL hooks of a data- or training-stage defense (a data-stage defense without its own hooks
    transforms every batch)."""
    if defense.stage in ("posthoc", "sanitise"):  # a sanitised victim pre-trains in the scoring process
        return None
    if type(defense).ssl_hooks is not Defense.ssl_hooks or defense.stage != "data":
        return defense.ssl_hooks(recipe, dctx)
    return SSLTrainingHooks(batch_transform=lambda x: defense.transform_images(x, dctx))


def pretrain_encoder(request: Mapping[str, Any], channel: Channel) -> dict[str, Any]:
    """SSL pre-training of the victim under a defense (its hooks, a data-stage defense's per-batch
    transform applied to the injected ``extra_images`` too), then its post-hoc repair on the clean labeled
    downstream training set. Returns the released extractor's tensors (standardisation fitted on ``images``)."""
    defense, device = _plugin(request), torch.device(request["device"])
    recipe, dctx, images = SSLRecipe(**request["recipe"]), _defense_context(request), request["images"]
    model = train_ssl(recipe, images, seed=int(request["seed"]), device=device, hooks=ssl_hooks(defense, recipe, dctx),
                      desc=str(request.get("desc", "pre-train")), extra_images=request.get("extra_images"))
    extractor = make_extractor(model.backbone, images, device)
    if defense.stage == "posthoc":
        _reseed(request)
        extractor = _checked_extractor(defense, defense.repair_encoder(extractor, request["train_images"],
                                                                       request["train_labels"], dctx))
    return {"tensors": _plain(extractor_tensors(extractor))}


def supervised(request: Mapping[str, Any], channel: Channel) -> dict[str, Any]:
    """A supervised victim (backbone + linear layer) trained under a defense; its weights."""
    defense, device = _plugin(request), torch.device(request["device"])
    recipe, dctx = SSLRecipe(**request["recipe"]), _defense_context(request)
    images, labels, epochs, seed = request["images"], request["labels"], int(request["epochs"]), int(request["seed"])
    model = supervised_net(recipe, images.shape[1], int(request["num_classes"]), seed)

    def train(m: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, **kwargs: Any) -> torch.nn.Module:
        return train_supervised(m, x, y, **{"epochs": epochs, "seed": seed, "device": device, **kwargs})

    if type(defense).fit_supervised is not Defense.fit_supervised:
        model = defense.fit_supervised(model, images, labels, dctx, train)
    elif defense.stage == "data":
        model = train(model, defense.transform_images(images, dctx), labels)
    elif defense.stage == "sanitise":

        kept = validate_kept(defense.keep_indices(None, images, labels, dctx), len(images), defense.id)
        model = train(model, images[kept], labels[kept])
    else:
        model = train(model, images, labels)
    return {"state": _plain(model.state_dict()), "privacy": _privacy(defense)}


FUNCTIONS: dict[str, Callable[[Mapping[str, Any], Channel], Any]] = {
    "describe": describe, "resolve": resolve, "craft": craft, "transform_images": transform_images,
    "keep_indices": keep_indices,
    "fit_head": fit_head, "repair_encoder": repair_encoder, "detect_encoder": detect_encoder, "pretrain_encoder": pretrain_encoder,
    "supervised": supervised,
}


def child_entry(conn: Any, function: str, request: bytes, sandboxed: bool) -> None:  # runs in the child
    if sandboxed:
        fresh_scratch()
    # tqdm's default lock is a multiprocessing RLock: a named semaphore that the ``os._exit`` below would
    # leave to the resource tracker (a "leaked semaphore" warning per call at shutdown). The child is one
    # process, so a thread lock is all its progress bars need.
    tqdm.set_lock(threading.RLock())
    serve_call(conn, function, request)
    conn.close()
    os._exit(0)  # skip interpreter teardown (and any atexit hook a plugin registered)
