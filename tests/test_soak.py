"""Back-to-back ``ddgsim execute`` launches (benchmarks/soak_executor.py, cheap part of its matrix) are all clean.

Ten real launches, each a fresh process tree (~10-20 s each on the 2-core dev machine):
an intermittent failure at start-up or teardown (an abort at exit, a stage process that
outlives the launcher, a missing output file) shows up here rather than once in a while
in the other executor tests.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAUNCHES = 10


def _soak() -> ModuleType:
    name = "soak_executor"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "soak_executor.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_back_to_back_launches_are_clean(tmp_path: Path) -> None:
    soak = _soak()
    cheap = [c for c in soak.matrix() if c.cheap]
    configs = soak.ordered(cheap, seed=0)[:LAUNCHES]
    # the balanced order covers the cheap matrix evenly: check that these launches do
    assert {c.model for c in configs} == {"mlp", "smallcnn"}
    assert {c.stages for c in configs} == {2, 3}
    assert {c.schedule for c in configs} == set(soak.SCHEDULES)
    for flag in ("checkpoint", "metrics", "trace", "eval"):
        assert {getattr(c, flag) for c in configs} == {False, True}, flag

    results = [soak.launch(c, tmp_path / f"run-{i}") for i, c in enumerate(configs)]
    failed = [r for r in results if not r.clean]
    assert not failed, f"{len(failed)}/{len(results)} launches failed:\n" + "\n".join(
        f"{r.label} ({r.seconds:.1f} s): {r.explain()}" for r in failed)
