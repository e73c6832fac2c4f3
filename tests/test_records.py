"""The typed records of the plan and metrics files: ProfileRef, Prediction, Metrics.

Each reads and writes its JSON object exactly as before it was typed: the files under
``benchmarks/results`` read back to the same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ddgsim.execute.measure import Metrics, build_metrics
from ddgsim.plan import format as plan_file
from ddgsim.plan.build import plan_from_prediction
from ddgsim.plan.records import Prediction, ProfileRef
from ddgsim.predict.event_sim import simulate
from ddgsim.predict.scenario import ideal
from ddgsim.profile.format import Profile
from ddgsim.profile.format import load as load_profile

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted(p for p in (ROOT / "benchmarks").rglob("*.json")
               if p.stat().st_size < 5_000_000 and '"format": "ddgsim-' in p.read_text()[:200])


def test_a_profile_ref_is_built_once_and_written_as_before() -> None:
    prof = _profile()
    ref = ProfileRef.of(prof, Path("/p/mlp.json"), source="cache")
    assert list(ref.to_json()) == ["path", "model", "batch_size", "device", "threads", "source"]
    assert ref.to_json() == {"path": "/p/mlp.json", "model": prof.model, "batch_size": prof.batch_size,
                             "device": prof.device, "threads": prof.threads, "source": "cache"}
    assert ProfileRef.of(prof, None).to_json()["path"] == ""  # measured now and not written
    assert ProfileRef(model="m", batch_size=8).to_json() == {"model": "m", "batch_size": 8}
    assert ProfileRef(model="m", device="cuda", threads=None).to_json() == {"model": "m", "device": "cuda",
                                                                           "threads": None}
    odd = {"path": "x", "future": 1, "model": "m"}
    assert ProfileRef.from_json(odd).to_json() == {"path": "x", "model": "m", "future": 1}
    assert ProfileRef.from_json(ref.to_json()) == ref


def test_a_prediction_is_what_the_simulator_said() -> None:
    prof = _profile()
    sim = simulate(prof, [2], ideal(2), "ddg")
    pred = Prediction.of(sim, analytic_ms=1.5)
    data = pred.to_json()
    assert list(data) == ["iteration_ms", "analytic_iteration_ms", "samples_per_s", "speedup_vs_1_device",
                          "speedup_vs_bp", "busy_ms", "bubble_fraction", "staleness", "peak_memory_bytes",
                          "iterations_simulated"]
    assert data["staleness"] == list(sim.staleness) and data["peak_memory_bytes"] == sim.peak_memory_bytes
    assert "analytic_iteration_ms" not in Prediction.of(sim).to_json()
    assert Prediction.from_json(json.loads(json.dumps(data))) == pred
    assert pred and not Prediction() and Prediction().to_json() == {}
    plan = plan_from_prediction(prof, ProfileRef.of(prof, None), "ideal-2", "ddg", [2], sim)
    assert plan.predicted == Prediction.of(sim) and plan.to_json()["profile"] == ProfileRef.of(prof, None).to_json()


def test_a_plan_without_a_profile_or_prediction_writes_empty_objects(tmp_path: Path) -> None:
    plan = plan_file.Plan.for_split(model="mlp", split=[2], num_units=4, schedule="ddg", batch_size=8)
    data = plan.to_json()
    assert data["profile"] == {} and data["predicted"] == {}
    plan.save(tmp_path / "p.json")
    assert plan_file.load(tmp_path / "p.json") == plan


@pytest.mark.skipif(not FILES, reason="no plan or metrics files under benchmarks/")
def test_the_files_written_before_read_back_to_the_same_bytes() -> None:
    seen = set()
    for path in FILES:
        data = json.loads(path.read_text())
        if data.get("format") == plan_file.FORMAT:
            out = plan_file.from_json(data, str(path)).to_json()
        elif data.get("format") == "ddgsim-metrics/1":
            out = Metrics.from_json(data).to_json()
        else:
            continue
        seen.add(data["format"])
        assert json.dumps(out, indent=1) + "\n" == path.read_text(), path
    assert seen == {plan_file.FORMAT, "ddgsim-metrics/1"}


def test_one_builder_for_the_executor_and_another_runtime() -> None:
    plan = plan_file.Plan.for_split(model="mlp", split=[2], num_units=4, schedule="gpipe", batch_size=8,
                                    micro_batches=2, predicted=Prediction(iteration_ms=3.0))
    reports = [{"stage": k, "device": "cpu", "iterations": [0, 1, 2, 3], "step_ms": [9.0, 2.0, 4.0, 3.0]}
               for k in range(2)]
    m = build_metrics(plan, "p.json", 4, reports, data="synthetic", runtime="torch.distributed.pipelining", skip=1)
    data = m.to_json()
    assert list(data) == ["format", "runtime", "plan", "model", "schedule", "micro_batches", "stages", "split",
                          "batch_size", "steps", "data", "per_stage", "losses", "predicted", "summary"]
    assert data["summary"] == {"median_step_ms": 3.5, "samples_per_s": 8 / 3.5e-3}  # gaps 2, 4, 3 less the first
    assert data["predicted"] == {"iteration_ms": 3.0} and data["losses"] == [None] * 4
    assert Metrics.from_json(json.loads(json.dumps(data))) == m


def _profile() -> Profile:
    return load_profile(ROOT / "ddgsim" / "scenarios" / "profiles" / "resnet20-b128-cpu-t1.json")
