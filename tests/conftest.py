"""Shared fixtures: a tiny suite that runs end to end in seconds, and quiet progress bars."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml

os.environ.setdefault("POISONBENCH_PROGRESS", "0")
os.environ.setdefault("POISONBENCH_SANDBOX", "off")  # tests/test_sandbox.py turns it on where it is tested
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

TINY_SUITE = {
    "name": "tiny",
    "tier": "custom",
    "seeds": [0],
    "data": {"image_size": 16, "pretrain_subset": 400, "downstream_subset": 400},
    "encoders": {
        "methods": ["simclr"],
        "backbones": ["cnn_micro"],
        "recipe": {"epochs": 2, "batch_size": 128, "optimizer": "adam", "lr": 0.002,
                   "augment": {"flip": False, "rotation_degrees": 10, "grayscale_prob": 0.0}},
        "method_settings": {"simclr": {"proj_hidden": 64, "proj_dim": 32}},
    },
    "scenarios": [
        {"name": "finetune", "pretrain": "mnist5k", "downstream": "mnist5k"},
        {"name": "transfer", "pretrain": "mnist5k", "downstream": "digits"},
    ],
    "tracks": {"downstream": {"budgets": [0.1], "attacks": ["none", "label_flip", "random_noise"],
                              "victim": {"kind": "convex", "l2": 0.001}}},
}


@pytest.fixture
def tiny_suite_dict() -> dict:
    import copy

    return copy.deepcopy(TINY_SUITE)


@pytest.fixture
def write_suite(tmp_path: Path):
    def write(raw: dict, name: str = "suite.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(raw))
        return path

    return write

# The fixture plugins (tests/plugins) join the registry in every plugin process; the marker folder for
# their call records is fixed before the first plugin process starts (they inherit the environment), one per
# pytest-xdist worker (a worker inherits the controller's environment: a shared folder would mix their calls).
os.environ.setdefault("POISONBENCH_PLUGINS", "tests.plugins.hooks,tests.plugins.hostile")
if os.environ.get("PYTEST_XDIST_WORKER") or "POISONBENCH_TEST_CALLS" not in os.environ:
    os.environ["POISONBENCH_TEST_CALLS"] = __import__("tempfile").mkdtemp(prefix="poisonbench-calls-")


@pytest.fixture
def restart_plugin_server():
    """Plugin processes see the environment their server (:mod:`benchmark.workers`) started with: a test that sets
    what they read calls this after setting it, and the server is stopped again after the test, so that the next
    test's starts from the plain environment."""
    from benchmark import workers

    yield workers._stop_server
    workers._stop_server()


@pytest.fixture(autouse=True)
def _no_sandbox_after_test():
    """A test that sandboxes plugin calls leaves the next test the plain plugin server."""
    yield
    from benchmark.workers import configure_sandbox, sandboxed

    if sandboxed():
        configure_sandbox("off")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The heavy tests first (a stable sort): the parallel workers (pytest-xdist, ``make test``) start on them and
    the short tests fill in around them, instead of one worker ending the run alone on a 30 s test."""
    items.sort(key=lambda item: item.get_closest_marker("heavy") is None)
