"""Shared test setup: seeds, hypothesis profiles, hardware markers."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import HealthCheck, settings

# Hypothesis profiles: "ci" (default, quick) and "thorough" (on demand:
# HYPOTHESIS_PROFILE=thorough pytest ...). Failing examples are kept in the
# example database (.hypothesis/) so a shrunk counterexample replays first.
settings.register_profile(
    "ci",
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    _heavy_modules_first(items)
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def _heavy_modules_first(items: list[pytest.Item]) -> None:
    """The modules with a test marked ``slow`` first, each kept whole (its module fixtures set up once),
    the rest after, each group in its own order. In two workers (``-n 2 --dist worksteal``) the first
    worker starts on the long process-launching tests while the other runs the quick ones and then takes
    the first's queue from its end: what is left for the end of the run is quick tests, not a 100-second
    one started while the other worker sits idle."""
    heavy = {item.module for item in items if item.get_closest_marker("slow") is not None}
    items.sort(key=lambda item: item.module not in heavy)  # stable: the order within each group stays


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    """Every test starts from the same RNG state (torchgpipe's manual_seed_zero)."""
    random.seed(0)
    try:
        import numpy as np

        np.random.seed(0)
    except ImportError:  # pragma: no cover
        pass
    try:
        import torch

        torch.manual_seed(0)
        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
