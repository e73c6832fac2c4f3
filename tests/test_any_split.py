"""Every split the planner can choose runs, under the executor and under torch.distributed.pipelining.

Stages may hold no parameters (mlp's ``flatten``, a ReLU between two cuts): the planner is free
to choose them when the costs say so, and both runtimes must run them. The validate end-to-end
test takes the planner's choice from a profile measured at test time; these tests cover every
choice it could make for mlp at K = 2 (and a parameter-free middle stage at K = 3).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from launch_helpers import (
    ROOT,
    assert_clean,
    assert_same,
    engine_weights,
    execute,
    final_weights,
    write_plan,
)

from ddgsim.cli import main
from ddgsim.compare.torch_pipelining import launch as launch_torch
from ddgsim.execute.measure import load_metrics
from ddgsim.plan.format import load as load_plan
from ddgsim.profile.format import Profile, UnitProfile

MLP_UNITS = ("flatten", "fc1", "relu1", "fc2", "relu2", "fc3")
MLP_PARAMS = (0, 4160 * 4, 0, 2080 * 4, 0, 330 * 4)


def _mlp_profile(path: Path, costs: list[float]) -> Path:
    """An mlp profile at batch 16 with the given per-unit compute costs (ms)."""
    units = [UnitProfile(name=n, forward_ms=c / 3, backward_ms=2 * c / 3, output_bytes=16 * 64 * 4,
                         param_bytes=pb, activation_bytes=16 * 64 * 4)
             for n, c, pb in zip(MLP_UNITS, costs, MLP_PARAMS, strict=True)]
    Profile(model="mlp", batch_size=16, input_shape=[1, 8, 8], device="cpu", threads=1, dtype="float32",
            units=units, whole_model_ms=sum(costs), meta={}).save(path)
    return path


@pytest.fixture
def pythonpath(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["gpipe", "ddg-pipelined"])
def test_a_planned_stage_without_parameters_runs_under_both_runtimes(schedule: str, tmp_path: Path, pythonpath: None,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A profile whose ``flatten`` costs as much as the rest: the planner cuts right after it, so stage 0
    holds no parameter. The executor runs the plan bit-identically to the in-process engine; gpipe runs
    under torch.distributed.pipelining too."""
    prof = _mlp_profile(tmp_path / "prof.json", [10.0, 2.0, 1.0, 2.0, 1.0, 2.0])
    plan_path = tmp_path / "plan.json"
    assert main(["plan", "--profile", str(prof), "--gpus", "2", "--stages", "2", "--replicas", "1",
                 "--schedule", schedule, "--scenario", "cpu-2core", "--out", str(plan_path), "--no-progress"]) == 0
    capsys.readouterr()
    plan = load_plan(plan_path)
    assert plan.split == [1]  # stage 0 is `flatten` alone
    common = ["--steps", "4", "--data", "digits", "--lr", "0.05", "--seed", "2"]
    r = execute(str(plan_path), *common, "--final-weights", str(tmp_path / "w"))
    assert r.returncode == 0, r.stderr
    assert_clean(r.stderr)
    assert_same(final_weights(tmp_path / "w", 2), engine_weights([str(plan_path), *common]))
    if schedule == "gpipe":
        metrics = tmp_path / "m.json"
        assert launch_torch(plan_path, 4, metrics) == 0
        assert [s["stage"] for s in load_metrics(metrics)["per_stage"]] == [0, 1]


@pytest.mark.slow
@pytest.mark.parametrize("split", [(1,), (2,), (3,), (4,), (5,), (2, 3)])
def test_torch_pipelining_runs_every_split_of_mlp(split: tuple[int, ...], tmp_path: Path, pythonpath: None) -> None:
    """Every K = 2 split of mlp (the planner's choices in the validate end-to-end test) and a K = 3 split
    whose middle stage is a lone ReLU, under ScheduleGPipe with 2 micro-batches."""
    plan = write_plan(tmp_path / "p.json", "mlp", list(split), "gpipe", micro=2)
    metrics = tmp_path / "m.json"
    assert launch_torch(plan, 3, metrics) == 0
    data = load_metrics(metrics)
    assert [s["stage"] for s in data["per_stage"]] == list(range(len(split) + 1))
    assert all(len(s["step_ms"]) == 3 for s in data["per_stage"])


@pytest.mark.slow
def test_the_executor_runs_a_parameter_free_middle_stage(tmp_path: Path) -> None:
    """mlp split [2, 3]: stage 1 is `relu1` alone, with nothing to update; bit-identical to the engine."""
    plan = write_plan(tmp_path / "p.json", "mlp", [2, 3], "ddg-pipelined")
    common = ["--steps", "5", "--data", "digits", "--lr", "0.05", "--seed", "1"]
    r = execute(str(plan), *common, "--final-weights", str(tmp_path / "w"))
    assert r.returncode == 0, r.stderr
    assert_clean(r.stderr)
    assert_same(final_weights(tmp_path / "w", 3), engine_weights([str(plan), *common]))
