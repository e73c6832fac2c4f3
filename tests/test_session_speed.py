"""The machine's speed over a validation: the speed probe (a real whole-model step, timed as the
profile times its own), the factor it gives, the prediction at that speed, the verdict it adds, the
CSV columns and the rounds that read it."""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sim_helpers import make_profile

from ddgsim.compare import execution
from ddgsim.compare.accuracy import summarize
from ddgsim.compare.options import Options
from ddgsim.compare.rounds import at_session_speed, run_all
from ddgsim.compare.rows import (
    MACHINE_SPEED,
    MODEL_ERROR,
    SESSION_SPEED,
    WITHIN_NOISE,
    WITHIN_TOLERANCE,
    Row,
)
from ddgsim.compare.session import SessionSpeed, session_factor
from ddgsim.compare.validation_csv import read_csv, write_csv
from ddgsim.predict.event_sim import simulate
from ddgsim.predict.scenario import load_scenario
from ddgsim.profile.probe import SpeedProbe


def _row(pred: float, meas: tuple[float, ...], session_ms: float = math.nan, ratios: tuple[float, ...] = ()) -> Row:
    m = statistics.median(meas)
    return Row(model="m", K=2, schedule="gpipe", split="3", predicted_ms=pred, measured_ms=m,
               error_pct=100 * (pred - m) / m, batch_size=8, repeats=len(meas), measured_all_ms=meas,
               session_factor=1.1, predicted_session_ms=session_ms, compute_ratio_all=ratios)


def test_the_factor_is_the_median_reading_over_the_profiles_whole_step() -> None:
    reads = iter([110.0, 90.0, 130.0])
    speed = SessionSpeed(read=lambda: next(reads), profile_ms=100.0)
    assert math.isnan(speed.factor)
    for t in (1.0, 20.0, 40.0):
        speed.take(t)
    assert speed.factor == pytest.approx(1.1)
    assert [ms for _, ms in speed.readings] == [110.0, 90.0, 130.0]
    assert [round(t) for t, _ in speed.readings] == [1, 20, 40]
    assert "3 readings): median 1.100x the profile's 100.0 ms, 0.900-1.300x (first 1.100x)" in speed.line()
    assert speed.to_json()["factor"] == pytest.approx(1.1) and len(speed.to_json()["readings"]) == 3
    assert math.isnan(session_factor([], 100.0)) and math.isnan(session_factor([1.0], 0.0))
    assert SessionSpeed(read=lambda: 1.0, profile_ms=1.0).line().endswith("not probed")


def test_the_session_error_and_its_verdict() -> None:
    # measured 8 % slower than predicted, 1 % noise: beyond both, but at the session's speed 2 % off
    r = _row(100.0, (108.0, 109.0, 108.5), session_ms=106.0)
    assert r.session_error_pct == pytest.approx(100 * (106 - 108.5) / 108.5)
    assert r.verdict(5.0) == SESSION_SPEED
    # within tolerance or its own noise first
    assert _row(100.0, (103.0, 104.0, 102.0), session_ms=150.0).verdict(5.0) == WITHIN_TOLERANCE
    assert _row(100.0, (90.0, 130.0, 110.0), session_ms=150.0).verdict(5.0) == WITHIN_NOISE
    # still beyond at the session's speed: the checks after it decide
    off = _row(100.0, (120.0, 121.0, 120.5), session_ms=108.0, ratios=(1.0, 1.0, 1.0))
    assert off.verdict(5.0) == MODEL_ERROR
    assert _row(100.0, (120.0, 121.0, 120.5), session_ms=108.0, ratios=(1.2, 1.2, 1.2)).verdict(5.0) == MACHINE_SPEED
    # not probed: no session error, no such verdict
    assert math.isnan(_row(100.0, (108.0, 109.0, 108.5)).session_error_pct)
    assert _row(100.0, (108.0, 109.0, 108.5), ratios=(1.0, 1.0, 1.0)).verdict(5.0) == MODEL_ERROR
    s = summarize([r, off])
    assert s.verdicts.keys() == {SESSION_SPEED, MODEL_ERROR} and s.session_runs == 2
    assert s.session_factor == pytest.approx(1.1)
    assert any("1 within 5% or their noise at the machine's speed over the session" in x for x in s.lines())
    assert s.to_json()["session_median_abs_error_pct"] == pytest.approx(
        statistics.median([abs(r.session_error_pct), abs(off.session_error_pct)]))


def test_the_csv_keeps_the_factor_and_the_session_prediction(tmp_path: Path) -> None:
    r = _row(100.0, (108.0, 109.0, 108.5), session_ms=106.0)
    write_csv([r, dataclasses.replace(r, session_factor=math.nan, predicted_session_ms=math.nan)], tmp_path / "v.csv")
    back = read_csv(tmp_path / "v.csv")
    assert back[0].session_factor == pytest.approx(1.1) and back[0].predicted_session_ms == pytest.approx(106.0)
    assert back[0].session_error_pct == pytest.approx(r.session_error_pct, abs=0.01)
    assert math.isnan(back[1].session_factor) and math.isnan(back[1].session_error_pct)


@settings(max_examples=30, deadline=None)
@given(factor=st.floats(0.5, 2.0), costs=st.lists(st.floats(0.5, 5.0), min_size=4, max_size=4),
       schedule=st.sampled_from(["bp", "ddg", "ddg-pipelined", "gpipe", "1f1b"]))
def test_a_machine_f_times_slower_takes_f_times_longer_where_only_compute_costs(
        factor: float, costs: list[float], schedule: str) -> None:
    """With free links and no fixed costs per action, every time is compute: dividing every device's
    speed by f multiplies the predicted iteration by f exactly."""
    profile = make_profile(costs, [2 * c for c in costs])
    scenario = load_scenario("ideal-2")
    slower = at_session_speed(scenario, factor)
    assert slower is not None and [d.speed for d in slower.devices] == pytest.approx(
        [d.speed / factor for d in scenario.devices])
    micro = 2 if schedule in ("gpipe", "1f1b") else 1
    base = simulate(profile, [2], scenario, schedule, micro_batches=micro).iteration_ms
    assert simulate(profile, [2], slower, schedule, micro_batches=micro).iteration_ms == pytest.approx(factor * base)
    assert at_session_speed(scenario, math.nan) is None


def test_rounds_read_the_probe_around_the_one_process_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine computes 25 % slower than profiled all along and the probe sees it: every row's error is
    -20 %, and 0 at the session's speed."""
    profile = make_profile([1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 8.0])
    opts = Options(stages=[1, 2], schedules=["ddg"], splits=1, steps=6, trace=False, repeats=2)

    def fake_execute(plan: Path, steps: int, threads: int, metrics: Path, trace: Path | None, device: str,
                     log_dir: Path | None = None) -> None:
        p = json.loads(plan.read_text())
        busy = p["predicted"]["busy_ms"]
        step = 1.25 * p["predicted"]["iteration_ms"]
        metrics.write_text(json.dumps({
            "format": "ddgsim-metrics/1", "plan": "p.json", "model": "mlp", "schedule": "bp", "stages": len(busy),
            "split": [], "batch_size": 8, "steps": 6, "losses": [None] * 6,
            "summary": {"median_step_ms": step, "samples_per_s": 8e3 / step},
            "per_stage": [{"stage": k, "iterations": list(range(6)), "step_ms": [step] * 6,
                           "forward_ms": [1.25 * b / 3] * 6, "backward_ms": [2.5 * b / 3] * 6, "update_ms": [0.0] * 6}
                          for k, b in enumerate(busy)]}))

    monkeypatch.setattr(execution, "run_plan", fake_execute)
    speed = SessionSpeed(read=lambda: 1.25 * 30.0, profile_ms=30.0)
    lines: list[str] = []
    rows, _ = run_all(profile, None, load_scenario("ideal-2"), "ideal-2", opts, tmp_path, log=lines.append,
                      speed=speed)
    # before the one-process run of each round, before the closing one, and after it
    assert len(speed.readings) == 4 and sum(x.startswith("[speed probe]") for x in lines) == 4
    assert all(r.error_pct == pytest.approx(-20.0) for r in rows)
    assert all(r.session_factor == pytest.approx(1.25) for r in rows)
    assert all(r.session_error_pct == pytest.approx(0.0, abs=1e-6) for r in rows)
    assert [r.verdict(5.0) for r in rows] == [SESSION_SPEED, SESSION_SPEED]
    assert read_csv(tmp_path / "validation.csv")[1].predicted_session_ms == pytest.approx(rows[1].predicted_session_ms)
    # without a probe, nothing of it
    rows, _ = run_all(profile, None, load_scenario("ideal-2"), "ideal-2", opts, tmp_path / "b", log=lambda m: None)
    assert all(math.isnan(r.session_error_pct) for r in rows)


def test_the_probe_times_the_models_whole_step_on_the_profiles_clock() -> None:
    from ddgsim.profile.store import measure

    prof = measure("mlp", 16, reps=3, progress=False, clock="thread")
    threads = torch.get_num_threads()
    probe = SpeedProbe(prof)
    assert probe.clock == "thread"
    ms = probe.read()
    assert 0 < ms < 1000 and torch.get_num_threads() == threads
    assert probe.model.training and all(p.grad is None for p in probe.model.parameters())
    half = SpeedProbe(dataclasses.replace(prof, dtype="bfloat16"))  # a profile measured in another dtype
    assert {p.dtype for p in half.model.parameters()} == {torch.bfloat16} and half.x.dtype == torch.bfloat16
    assert half.read() > 0


def test_a_validation_probes_only_what_it_can_build_and_compare(tmp_path: Path) -> None:
    from ddgsim.commands.validate import _config
    from ddgsim.compare.config import ValidateConfig
    from ddgsim.compare.inputs import Inputs
    from ddgsim.compare.validate import session_speed
    from ddgsim.profile.store import measure

    prof = measure("mlp", 16, reps=3, progress=False)
    inputs = Inputs(profile=prof, profile_path=None, source="measured", scenario=load_scenario("ideal-2"),
                    scenario_ref="ideal-2")
    notes: list[str] = []
    speed = session_speed(ValidateConfig(model="mlp", out=tmp_path), inputs, notes.append)
    assert speed is not None and speed.profile_ms == prof.whole_model_ms and notes == []
    assert session_speed(ValidateConfig(model="mlp", out=tmp_path, speed_probe=False), inputs, notes.append) is None
    assert notes == []
    unmeasured = dataclasses.replace(inputs, profile=dataclasses.replace(prof, whole_model_ms=0.0))
    assert session_speed(ValidateConfig(model="mlp", out=tmp_path), unmeasured, notes.append) is None
    assert notes == ["note: no speed probe: the profile of mlp has no whole-model step measured on cpu to compare with"]
    other_input = dataclasses.replace(inputs, profile=dataclasses.replace(prof, input_shape=[4]))
    assert session_speed(ValidateConfig(model="mlp", out=tmp_path), other_input, notes.append) is None
    assert notes[-1].startswith("note: no speed probe: mlp does not run at the profile's input (RuntimeError: mat1")
    import argparse

    from ddgsim.commands import validate as command

    parser = argparse.ArgumentParser()
    command.add_parser(parser.add_subparsers())
    args = parser.parse_args(["validate", "mlp", "--out", str(tmp_path), "--no-speed-probe"])
    assert _config(args).speed_probe is False
    assert _config(parser.parse_args(["validate", "mlp", "--out", str(tmp_path)])).speed_probe is True
