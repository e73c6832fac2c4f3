"""A plan exported to, and run under, PyTorch's own pipeline runtime (torch.distributed.pipelining)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from ddgsim.compare.torch_pipelining import launch
from ddgsim.errors import UserError
from ddgsim.execute.measure import load_metrics, measured_step_ms
from ddgsim.models.registry import build_model, get_spec
from ddgsim.plan.export import stage_modules
from ddgsim.plan.format import Plan

ROOT = Path(__file__).resolve().parents[1]


def _plan(tmp_path: Path, schedule: str = "gpipe", split: tuple[int, ...] = (3,), model: str = "mlp",
          micro: int = 2, batch: int = 16, units: int = 6) -> Path:
    path = tmp_path / f"{schedule}.plan.json"
    Plan.for_split(model=model, split=split, num_units=units, schedule=schedule, batch_size=batch,
                   micro_batches=micro).save(path)
    return path


@pytest.mark.parametrize("model,split", [("mlp", (3,)), ("smallcnn", (2, 5))])
def test_exported_stages_compose_to_the_model(model: str, split: tuple[int, ...], tmp_path: Path) -> None:
    from ddgsim.profile.units import split_units

    spec = get_spec(model)
    n = len(split_units(build_model(spec), spec.input_shape, batch_size=2))
    plan = _plan(tmp_path, split=split, model=model, units=n)
    stages = stage_modules(plan, seed=3)
    assert len(stages) == len(split) + 1
    x = torch.randn(4, *spec.input_shape)
    whole = build_model(spec, seed=3)
    for s in stages:
        s.eval()
    whole.eval()
    h = x
    for s in stages:
        h = s(h)
    assert torch.equal(h, whole(x))


def test_bad_plans_are_refused_before_any_process_starts(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="runs gpipe, 1f1b, not 'ddg'"):
        launch(_plan(tmp_path, schedule="ddg", micro=1), 4, tmp_path / "m.json")
    with pytest.raises(UserError, match="the plan splits 8 units but model 'mlp' has 6"):
        launch(_plan(tmp_path, units=8), 4, tmp_path / "m.json")


@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
def test_a_plan_runs_under_torch_pipelining(schedule: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two real gloo processes run the split under ScheduleGPipe / Schedule1F1B; the metrics read like the executor's."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    metrics = tmp_path / "m.json"
    assert launch(_plan(tmp_path, schedule=schedule, micro=4), 5, metrics) == 0
    data = load_metrics(metrics)  # the metrics schema, as validate reads it
    assert data["runtime"] == "torch.distributed.pipelining" and data["schedule"] == schedule
    assert [s["stage"] for s in data["per_stage"]] == [0, 1]
    assert all(s["iterations"] == list(range(5)) and len(s["step_ms"]) == 5 for s in data["per_stage"])
    assert measured_step_ms(data, 2) > 0
    assert not list(tmp_path.glob("m.json.rank*"))


def test_the_module_runs_as_a_command(tmp_path: Path) -> None:
    import subprocess

    r = subprocess.run([sys.executable, "-m", "ddgsim.compare.torch_pipelining", str(_plan(tmp_path, "bp", micro=1)),
                        "--metrics", str(tmp_path / "m.json")], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and r.stderr == "error: torch.distributed.pipelining runs gpipe, 1f1b, not 'bp'\n"
