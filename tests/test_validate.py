"""Predicted vs measured: split choice, the measured step, the summary, failed runs, and real end-to-end runs."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from ddgsim.compare import execution, options, rounds
from ddgsim.compare.accuracy import summarize
from ddgsim.compare.inputs import profile_warning
from ddgsim.compare.options import Options
from ddgsim.compare.report import error_figure, scatter_figure
from ddgsim.compare.rounds import run_all
from ddgsim.compare.rows import Row, failure_line, run_label
from ddgsim.compare.selection import choose_splits, oversized, plan_runs
from ddgsim.compare.validation_csv import COLUMNS, read_csv, write_csv
from ddgsim.errors import UserError
from ddgsim.execute.launch import ExecutionFailed
from ddgsim.execute.measure import measured_step_ms
from ddgsim.plan.split import weighted_split
from ddgsim.predict.scenario import load_scenario
from ddgsim.profile.format import Profile, UnitProfile

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_steal_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process runs with a faked executor take microseconds: one clock tick of steal would read as
    100 % and re-measure. No steal reading here; the test of re-measuring scripts its own."""
    from ddgsim.profile import machine

    monkeypatch.setattr(machine, "cpu_jiffies", lambda: None)


def _profile(costs: list[float], meta: dict | None = None, model: str = "toy", batch_size: int = 8,
             machine: dict | None = None) -> Profile:
    """A profile of this machine (``machine`` overrides the fingerprint)."""
    from ddgsim.profile.machine import fingerprint

    units = [UnitProfile(name=f"u{i}", forward_ms=c / 3, backward_ms=2 * c / 3, output_bytes=4096,
                         param_bytes=1024, activation_bytes=4096) for i, c in enumerate(costs)]
    return Profile(model=model, batch_size=batch_size, input_shape=[4], device="cpu", threads=1, dtype="float32",
                   units=units, whole_model_ms=sum(costs), meta=meta or {},
                   machine=fingerprint() if machine is None else machine)


def test_weighted_split_gives_the_asked_shares() -> None:
    prof = _profile([1.0] * 12)
    assert weighted_split(prof, 2, [1, 1]) == [6]
    assert weighted_split(prof, 2, [2, 1]) == [8]
    assert weighted_split(prof, 3, [1, 1, 1]) == [4, 8]
    assert weighted_split(prof, 3, [1, 1, 100]) == [1, 2]  # stays a legal split


def test_choose_splits_planned_even_then_unbalanced_distinct() -> None:
    prof = _profile([1.0] * 12)
    runs = choose_splits(prof, load_scenario("ideal-2"), "ddg", 2, 4)
    splits = [r.split for r in runs]
    assert len(set(splits)) == len(splits) == 4
    labels = [r.label for r in runs]
    assert labels[0].startswith("planned")
    assert any("even" in lab for lab in labels)
    assert "front x2" in labels
    one = choose_splits(prof, load_scenario("ideal-2"), "ddg", 1, 3)
    assert [(r.stages, r.schedule, r.split) for r in one] == [(1, "bp", ())]


def test_measured_step_is_the_median_gap_of_the_slowest_stage_after_warmup() -> None:
    # stage ends: s0 at 10, 20, 30, 40, 52; s1 at 15, 25, 36, 47, 58
    metrics = {"per_stage": [
        {"iterations": [0, 1, 2, 3, 4], "step_ms": [10, 10, 10, 10, 12]},
        {"iterations": [0, 1, 2, 3, 4], "step_ms": [15, 10, 11, 11, 11]},
    ]}
    # run ends 15, 25, 36, 47, 58 -> gaps 10, 11, 11, 11
    assert measured_step_ms(metrics, 0) == pytest.approx(11.0)
    assert measured_step_ms(metrics, 3) == pytest.approx(11.0)
    with pytest.raises(UserError):
        measured_step_ms({"per_stage": [{"iterations": [0], "step_ms": [5]}]}, 0)


def _row(k: int, sched: str, split: str, pred: float, meas: float) -> Row:
    return Row(model="m", K=k, schedule=sched, split=split, predicted_ms=pred, measured_ms=meas,
               error_pct=100 * (pred - meas) / meas)


def test_summary_errors_tau_and_discordant_pairs() -> None:
    rows = [_row(1, "bp", "", 100, 104), _row(2, "ddg", "3", 60, 58), _row(2, "ddg", "4", 70, 75)]
    s = summarize(rows)
    assert s.median_abs_error_pct == pytest.approx(100 * 4 / 104)
    assert s.worst_abs_error_pct == pytest.approx(100 * 5 / 75)
    assert s.kendall_tau == pytest.approx(1.0)
    assert s.ranking_preserved
    swapped = [_row(2, "ddg", "3", 60, 80), _row(2, "ddg", "4", 70, 75), _row(2, "ddg", "5", 61, 50)]
    s2 = summarize(swapped)
    # 60 vs 61 is a tie within 5%; 60 vs 70 and 61 vs 70 are real
    assert ("K=2 ddg [3]", "K=2 ddg [4]") in s2.discordant
    assert not s2.ranking_preserved
    assert any("ranking preserved" in line and "no" in line for line in s2.lines())


def test_csv_round_trip(tmp_path: Path) -> None:
    rows = [_row(1, "bp", "", 100, 104), _row(2, "ddg-pipelined", "3,7", 60, 58)]
    write_csv(rows, tmp_path / "v.csv")
    with (tmp_path / "v.csv").open() as fh:
        assert tuple(next(csv.reader(fh))) == COLUMNS
    back = read_csv(tmp_path / "v.csv")
    assert [(r.K, r.schedule, r.split) for r in back] == [(1, "bp", ""), (2, "ddg-pipelined", "3,7")]
    assert back[1].predicted_ms == pytest.approx(60.0)


def _failed(k: int, sched: str, split: str, pred: float, error: str = "executor exit status 1, twice") -> Row:
    return Row(model="m", K=k, schedule=sched, split=split, predicted_ms=pred, measured_ms=math.nan,
               error_pct=math.nan, status="failed", error=error, attempts=2)


def test_failed_rows_round_trip_and_old_csvs_read_as_ok(tmp_path: Path) -> None:
    rows = [_row(1, "bp", "", 100, 104), _failed(2, "ddg", "3", 60, "executor exit status 1; then x, y")]
    write_csv(rows, tmp_path / "v.csv")
    with (tmp_path / "v.csv").open() as fh:
        recs = list(csv.DictReader(fh))
    assert (recs[1]["measured_ms"], recs[1]["error_pct"], recs[1]["status"]) == ("", "", "failed")
    assert (recs[0]["status"], recs[0]["error"], recs[0]["attempts"]) == ("ok", "", "1")
    back = read_csv(tmp_path / "v.csv")
    assert back[0].ok and not back[1].ok
    assert back[1].error == "executor exit status 1; then x, y" and back[1].attempts == 2
    assert math.isnan(back[1].measured_ms) and math.isnan(back[1].error_pct)
    assert back[1].predicted_ms == pytest.approx(60.0)
    # a validation.csv from before the status columns
    (tmp_path / "old.csv").write_text(",".join(COLUMNS[:11]) + "\nresnet56,1,bp,,1615.8,1494.26,8.13,one process,"
                                      "128,12,local\n")
    old = read_csv(tmp_path / "old.csv")
    assert len(old) == 1 and old[0].ok and old[0].error == "" and old[0].attempts == 1
    assert old[0].measured_ms == pytest.approx(1494.26)


def test_summary_and_figures_use_only_measured_rows() -> None:
    ok = [_row(1, "bp", "", 100, 104), _row(2, "ddg", "3", 60, 58), _row(2, "ddg", "4", 70, 75)]
    mixed = [ok[0], _failed(2, "ddg", "5", 10), *ok[1:]]
    s, s_ok = summarize(mixed), summarize(ok)
    for key in ("runs", "median_abs_error_pct", "worst_abs_error_pct", "kendall_tau", "discordant"):
        assert getattr(s, key) == getattr(s_ok, key), key
    assert s.failed == ["K=2 ddg [5] (executor exit status 1, twice)"]
    assert s.lines()[:2] == ["runs: 3, 1 failed (not counted below)", "  failed: K=2 ddg [5] (executor exit status 1, twice)"]
    assert failure_line(mixed) == "1 of 4 runs failed: m ddg K=2 split [5] (executor exit status 1, twice)"
    assert failure_line(ok) is None
    assert sum(len(t.x) for t in error_figure(mixed).data) == 3
    scatter_points = [t for t in scatter_figure(mixed).data if t.mode == "markers"]
    assert sum(len(t.x) for t in scatter_points) == 3
    # every run failed: no crash, nothing made up
    none = summarize([_failed(1, "bp", "", 100), _failed(2, "ddg", "3", 60, "boom")])
    assert none.runs == 0 and math.isnan(none.median_abs_error_pct) and math.isnan(none.kendall_tau)
    assert "median absolute error: n/a" in none.lines() and len(none.failed) == 2
    assert any("ranking preserved" in line and "n/a" in line for line in none.lines())
    scatter_figure([_failed(1, "bp", "", 100)])
    error_figure([_failed(1, "bp", "", 100)])


def _fake_metrics(path: Path, step_ms: float) -> None:
    """What the executor writes (the metrics schema), with every step taking ``step_ms``."""
    path.write_text(json.dumps({
        "format": "ddgsim-metrics/1", "plan": "p.json", "model": "mlp", "schedule": "bp", "stages": 1, "split": [],
        "batch_size": 8, "steps": 6, "per_stage": [{"stage": 0, "iterations": list(range(6)), "step_ms": [step_ms] * 6}],
        "losses": [None] * 6, "summary": {"median_step_ms": step_ms, "samples_per_s": 8e3 / step_ms}}))


def test_run_all_retries_once_then_records_the_failure_and_goes_on(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The executor is faked here (no processes): run 2 fails once, run 3 twice, runs 1 and 4 work."""
    prof = _profile([1.0] * 12)
    scenario = load_scenario("ideal-2")
    opts = Options(stages=[1, 2], schedules=["ddg"], splits=3, steps=6, trace=False, repeats=1)
    names = [s.name for s in plan_runs(prof, scenario, opts)]
    assert len(names) == 4
    out = tmp_path / "out"
    (out / "runs").mkdir(parents=True)
    _fake_metrics(out / "runs" / f"{names[2]}.r1.metrics.json", 1.0)  # stale: must not be read as a measurement
    calls: list[str] = []
    csv_seen: list[list[str]] = []

    def fake_execute(plan: Path, steps: int, threads: int, metrics: Path, trace: Path | None, device: str,
                     log_dir: Path | None = None) -> None:
        name = plan.name.removesuffix(".plan.json")
        calls.append(name)
        csv_seen.append([r.status for r in read_csv(out / "validation.csv")] if name == names[3] else [])
        if name == names[1] and calls.count(name) == 1:
            raise ExecutionFailed("executor exit status 1")
        if name == names[2]:
            if calls.count(name) == 1:
                return  # exit 0 but no metrics
            raise ExecutionFailed("executor exit status -9")
        _fake_metrics(metrics, 10.0)

    monkeypatch.setattr(execution, "run_plan", fake_execute)
    notes: list[str] = []
    rows, timelines = run_all(prof, None, scenario, "ideal-2", opts, out, log=lambda m: None, warn=notes.append)
    # the one-process run is measured once more at the end: the others' reference after them
    assert calls == [names[0], names[1], names[1], names[2], names[2], names[3], names[0]]
    assert [(r.status, r.attempts) for r in rows] == [("ok", 2), ("ok", 2), ("failed", 2), ("ok", 1)]
    assert [r.measured_ms for r in rows if r.ok] == [10.0, 10.0, 10.0]
    assert rows[2].error == (f"the executor exited 0 but wrote no {names[2]}.r1.metrics.json; "
                             "then executor exit status -9")
    assert rows[1].error == "1 failed execution(s): executor exit status 1"
    assert math.isnan(rows[2].measured_ms) and rows[2].predicted_ms > 0
    assert len(notes) == 3 and "retrying once" in notes[0] and "going on" in notes[2]
    assert notes[0] == (f"[1/1] [2/4] K=2 ddg split [{rows[1].split}] ({rows[1].label}): "
                        "failed (executor exit status 1); retrying once")
    assert csv_seen[calls.index(names[3])] == ["ok", "ok", "failed"]  # written after every run, before the next one
    assert [r.status for r in read_csv(out / "validation.csv")] == ["ok", "ok", "failed", "ok"]
    assert timelines == []


def test_repeats_are_interleaved_and_the_median_is_compared(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Repeat r of every run before repeat r + 1 of any; each row holds every repeat, median and spread."""
    prof = _profile([1.0] * 12)
    scenario = load_scenario("ideal-2")
    opts = Options(stages=[1, 2], schedules=["ddg", "gpipe"], splits=1, steps=6, trace=False, repeats=3,
                   micro_batches=(2, 4))
    specs = plan_runs(prof, scenario, opts)
    assert [(s.schedule, s.micro_batches) for s in specs] == [("bp", 1), ("ddg", 1), ("gpipe", 2), ("gpipe", 4)]
    assert specs[2].name.startswith("k2-gpipe-m2-")
    calls: list[str] = []
    step = {0: [10.0, 12.0, 11.0, 13.0], 1: [20.0, 30.0, 22.0], 2: [5.0, 5.0, 5.0], 3: [7.0, 8.0, 9.0]}

    def fake_execute(plan: Path, steps: int, threads: int, metrics: Path, trace: Path | None, device: str,
                     log_dir: Path | None = None) -> None:
        name = plan.name.removesuffix(".plan.json")
        i = [s.name for s in specs].index(name)
        _fake_metrics(metrics, step[i][sum(c == name for c in calls)])
        calls.append(name)
        assert metrics.name == f"{name}.r{calls.count(name)}.metrics.json"

    monkeypatch.setattr(execution, "run_plan", fake_execute)
    rows, _ = run_all(prof, None, scenario, "ideal-2", opts, tmp_path, log=lambda m: None, warn=lambda m: None)
    # three rounds, then the one-process run once more: it closes the last round
    assert calls == [s.name for s in specs] * 3 + [specs[0].name]
    assert [r.measured_all_ms for r in rows] == [tuple(step[i]) for i in range(4)]
    assert [r.measured_ms for r in rows] == [11.5, 22.0, 5.0, 8.0]
    assert [r.micro_batches for r in rows] == [1, 1, 2, 4] and [r.repeats for r in rows] == [4, 3, 3, 3]
    # every execution's moment, in the order they ran
    moments = sorted((t, i) for i, r in enumerate(rows) for t in r.measured_at_s)
    assert [i for _, i in moments] == [0, 1, 2, 3] * 3 + [0] and moments[0][0] >= 0
    assert rows[1].spread_pct == pytest.approx(100 * 10 / 22)
    assert rows[0].error_pct == pytest.approx(100 * (rows[0].predicted_ms - 11.5) / 11.5)
    again = read_csv(tmp_path / "validation.csv")
    assert [(r.measured_all_ms, r.micro_batches, r.repeats) for r in again] == \
        [(r.measured_all_ms, r.micro_batches, r.repeats) for r in rows]
    assert [r.measured_at_s for r in again] == [pytest.approx(r.measured_at_s, abs=0.06) for r in rows]
    summary = summarize(rows)
    assert summary.repeats == 3 and summary.worst_spread_pct == pytest.approx(100 * 10 / 22)
    assert summary.median_spread_pct == pytest.approx(statistics.median([r.spread_pct for r in rows]))
    # gpipe's micro-batches are in the plan the executor runs
    plan = json.loads((tmp_path / "runs" / f"{specs[3].name}.plan.json").read_text())
    assert plan["micro_batches"] == 4 and plan["schedule"] == "gpipe"



def test_the_one_process_run_comes_back_within_each_round_as_the_reference(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """``reference_every``: the one-process run again after every N others, and once more at the end."""
    from ddgsim.compare.rounds import round_order

    assert round_order(5, 0, 2) == [0, 1, 2, 0, 3, 4]
    assert round_order(5, 0, 4) == [0, 1, 2, 3, 4] and round_order(5, 0, 0) == [0, 1, 2, 3, 4]
    assert round_order(6, 0, 1) == [0, 1, 0, 2, 0, 3, 0, 4, 0, 5]
    assert round_order(3, None, 1) == [0, 1, 2]  # no one-process run: nothing to come back to
    prof = _profile([1.0] * 12)
    scenario = load_scenario("ideal-2")
    opts = Options(stages=[1, 2], schedules=["ddg", "gpipe"], splits=1, steps=6, trace=False, repeats=2,
                   micro_batches=(2, 4), reference_every=2)
    specs = plan_runs(prof, scenario, opts)
    calls: list[str] = []

    def fake_execute(plan: Path, steps: int, threads: int, metrics: Path, trace: Path | None, device: str,
                     log_dir: Path | None = None) -> None:
        name = plan.name.removesuffix(".plan.json")
        calls.append(name)
        assert metrics.name == f"{name}.r{calls.count(name)}.metrics.json"  # numbered by execution
        _fake_metrics(metrics, 10.0 * calls.count(name))

    monkeypatch.setattr(execution, "run_plan", fake_execute)
    lines: list[str] = []
    rows, _ = run_all(prof, None, scenario, "ideal-2", opts, tmp_path, log=lines.append, warn=lambda m: None)
    a, b, c, d = (s.name for s in specs)
    assert calls == [a, b, c, a, d] * 2 + [a]
    assert rows[0].measured_all_ms == (10.0, 20.0, 30.0, 40.0, 50.0) and rows[0].repeats == 5
    assert [r.repeats for r in rows[1:]] == [2, 2, 2]
    assert "the one-process run 2 times a round and once more at the end" in lines[0]
    assert lines[-1].startswith("[closing] K=1 bp")
    assert summarize(rows).repeats == 2

def test_executions_disturbed_by_the_hypervisor_are_measured_again(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """More than --max-steal % of the CPU stolen during an execution: measured again (3 at most), least
    disturbed kept; the steal and the re-measurements are recorded."""
    from ddgsim.profile import machine

    prof = _profile([1.0] * 12)
    scenario = load_scenario("ideal-2")
    opts = Options(stages=[1, 2], schedules=["ddg"], splits=1, steps=6, trace=False, repeats=1, max_steal_pct=3.0)
    # per execution: (stolen %, step ms). Run 1: stolen, then clean. Run 2: stolen three times.
    script = [(10.0, 50.0), (1.0, 10.0), (20.0, 90.0), (5.0, 30.0), (8.0, 40.0), (0.0, 12.0)]
    clock = {"steal": 0, "total": 0}
    executions: list[int] = []

    def jiffies() -> tuple[int, int]:
        return clock["steal"], clock["total"]

    def fake_execute(plan: Path, steps: int, threads: int, metrics: Path, trace: Path | None, device: str,
                     log_dir: Path | None = None) -> None:
        stolen, step = script[len(executions)]
        executions.append(1)
        clock["steal"] += int(stolen * 10)
        clock["total"] += 1000
        _fake_metrics(metrics, step)

    monkeypatch.setattr(machine, "cpu_jiffies", jiffies)
    monkeypatch.setattr(execution, "run_plan", fake_execute)
    notes: list[str] = []
    rows, _ = run_all(prof, None, scenario, "ideal-2", opts, tmp_path, log=lambda m: None, warn=notes.append)
    assert len(executions) == 6  # and the one-process run once more at the end, undisturbed
    assert [(r.measured_ms, r.steal_pct, r.redone, r.attempts) for r in rows] == [(11.0, 1.0, 1, 3),
                                                                                 (30.0, 5.0, 2, 3)]
    assert sum("the hypervisor stole" in n and "measuring again" in n for n in notes) == 3
    again = read_csv(tmp_path / "validation.csv")
    assert [(r.steal_pct, r.redone) for r in again] == [(1.0, 1), (5.0, 2)]


def test_speed_matched_errors_factor_out_the_machine_drift_round_by_round() -> None:
    from ddgsim.compare.accuracy import speed_matched_errors

    def row(K: int, pred: float, meas: tuple[float, ...], model: str = "m") -> Row:
        return Row(model=model, K=K, schedule="bp" if K == 1 else "ddg", split="" if K == 1 else "3",
                   predicted_ms=pred, measured_ms=statistics.median(meas), error_pct=0.0, batch_size=8,
                   repeats=len(meas), measured_all_ms=meas)

    rows = [row(1, 100.0, (110.0, 90.0, 100.0)), row(2, 50.0, (55.0, 45.0, 52.0)), row(2, 40.0, (40.0, 40.0)),
            row(2, 60.0, (60.0, 60.0, 60.0), model="other")]
    got = speed_matched_errors(rows)
    # rounds ran 1.1x, 0.9x, 1.0x slower than the profile: 55/55, 45/45, 50/52 -> median 0
    assert set(got) == {1} and got[1] == pytest.approx(0.0)
    summary = summarize(rows)
    assert summary.speed_matched_median_pct == pytest.approx(0.0)
    assert math.isnan(summarize(rows[1:]).speed_matched_median_pct)


def test_speedups_are_ratios_of_one_round_and_errors_are_told_from_noise() -> None:
    from ddgsim.compare.accuracy import speedups
    from ddgsim.compare.rows import MODEL_ERROR, WITHIN_NOISE, WITHIN_TOLERANCE

    def row(K: int, pred: float, meas: tuple[float, ...], split: str = "3") -> Row:
        m = statistics.median(meas)
        return Row(model="m", K=K, schedule="bp" if K == 1 else "ddg", split="" if K == 1 else split,
                   predicted_ms=pred, measured_ms=m, error_pct=100 * (pred - m) / m, batch_size=8,
                   repeats=len(meas), measured_all_ms=meas)

    # The machine runs round 2 twice as slow as round 1: the times move, the ratios do not.
    rows = [row(1, 100.0, (100.0, 200.0, 110.0)), row(2, 50.0, (50.0, 100.0, 55.0)),
            row(2, 40.0, (60.0, 120.0, 66.0), split="2"), row(2, 80.0, (80.0, 82.0, 79.0), split="1")]
    ups = speedups(rows)
    assert set(ups) == {1, 2, 3}
    assert ups[1].predicted == pytest.approx(2.0) and ups[1].measured == pytest.approx(2.0)
    assert ups[1].error_pct == pytest.approx(0.0)
    assert ups[2].predicted == pytest.approx(2.5) and ups[2].measured == pytest.approx(100 / 60)
    assert ups[2].error_pct == pytest.approx(50.0)
    # noise: half the spread of the repeats, in % of their median
    assert rows[1].noise_pct == pytest.approx(100 * 50 / 55 / 2)
    assert rows[1].verdict(5.0) == WITHIN_NOISE  # -9.1 % error, ±45 % noise
    assert rows[3].verdict(5.0) == WITHIN_TOLERANCE  # 0 %
    quiet = row(2, 40.0, (60.0, 61.0, 60.5), split="2")
    assert quiet.verdict(5.0) == MODEL_ERROR  # -34 % against ±0.8 %
    s = summarize([*rows[:3], quiet])
    assert {k: len(v) for k, v in s.verdicts.items()} == {WITHIN_NOISE: 3, MODEL_ERROR: 1}
    assert s.speedup_runs == 3 and s.speedup_worst_pct == pytest.approx(50.0)  # rows[2]: 2.5x predicted, 1.67x measured
    text = "\n".join(s.lines())
    assert "0 within 5%, 3 inside their noise, 1 model error" in text
    assert "model error: K=2 ddg [2]" in text and "speedup over K=1, predicted vs measured against the K=1 run of the same moment" in text



def test_each_execution_is_compared_with_the_one_process_run_of_its_moment(tmp_path: Path) -> None:
    """The one-process run opens every round and closes the last; an execution's reference is it
    interpolated to the execution's moment, so a machine slowing inside a round cancels."""
    from ddgsim.compare.accuracy import reference_ms, speed_matched_errors, speedups

    # K = 1 took 100 ms at 0 s and 10 s, then the machine slowed: 140 ms at 20 s (the closing run).
    ref = Row(model="m", K=1, schedule="bp", split="", predicted_ms=100.0, measured_ms=100.0, error_pct=0.0,
              batch_size=8, repeats=3, measured_all_ms=(100.0, 100.0, 140.0), measured_at_s=(0.0, 10.0, 20.0))
    # a run predicted twice as fast, at 5 s and at 15 s (halfway through the slowing: K = 1 would take 120)
    run = Row(model="m", K=2, schedule="ddg", split="3", predicted_ms=50.0, measured_ms=55.0, error_pct=-9.1,
              batch_size=8, repeats=2, measured_all_ms=(50.0, 60.0), measured_at_s=(5.0, 15.0))
    assert reference_ms(ref, run) == pytest.approx([100.0, 120.0])
    up = speedups([ref, run])[1]
    assert up.rounds == pytest.approx((2.0, 2.0)) and up.error_pct == pytest.approx(0.0)
    assert speed_matched_errors([ref, run]) == {1: pytest.approx(0.0)}
    # the round's opening run alone would read the second execution as 100/60: 20 % off
    opened = replace(ref, measured_all_ms=(100.0, 100.0), measured_at_s=(), repeats=2)
    assert speedups([opened, replace(run, measured_at_s=())])[1].error_pct == pytest.approx(10.0)
    # files without the moments pair repeat j with repeat j, or not at all when the counts differ
    assert reference_ms(replace(ref, measured_at_s=()), replace(run, measured_at_s=())) is None
    assert speedups([replace(ref, measured_at_s=()), run]) == {}
    # the moments go through validation.csv
    write_csv([ref, run], tmp_path / "v.csv")
    again = read_csv(tmp_path / "v.csv")
    assert [r.measured_at_s for r in again] == [(0.0, 10.0, 20.0), (5.0, 15.0)]
    assert speedups(again)[1].error_pct == pytest.approx(0.0)
    assert "measured_at_s_all" in (tmp_path / "v.csv").read_text().splitlines()[0]

def test_replicated_runs_are_planned_named_and_checked(tmp_path: Path) -> None:
    from ddgsim.predict.scenario import ideal

    prof = _profile([1.0, 2.0, 3.0, 4.0])
    opts = Options(stages=[1, 2], schedules=["ddg"], splits=1, replicas=(1, 2))
    specs = plan_runs(prof, ideal(4), opts)
    assert [(s.stages, s.replicas, s.schedule) for s in specs] == [(1, 1, "bp"), (1, 2, "bp"), (2, 1, "ddg"),
                                                                   (2, 2, "ddg")]
    assert specs[1].name == "k1-d2-bp-all" and specs[1].label == "data parallel, 2 processes"
    assert specs[3].layout(ideal(4)) is not None and specs[3].layout(ideal(4)).devices == (("dev0", "dev1"),
                                                                                             ("dev2", "dev3"))
    assert specs[0].layout(ideal(4)) is None and specs[3].name.startswith("k2-d2-ddg-")
    # the prediction is of the replicated run: two replicas of one stage halve its compute
    run = rounds._prepare(specs[1], prof, None, ideal(4), "ideal-4", tmp_path, replace(opts, trace=False))
    one = rounds._prepare(specs[0], prof, None, ideal(4), "ideal-4", tmp_path, replace(opts, trace=False))
    assert run.sim.iteration_ms < one.sim.iteration_ms
    assert json.loads(run.plan.read_text())["stages"][0]["replicas"] == ["dev0", "dev1"]
    with pytest.raises(UserError, match="stages 2 with replicas 2 needs 4 devices but scenario 'ideal-3' has 3"):
        plan_runs(prof, ideal(3), opts)
    # asked to, the pairs that do not fit are left out (validate does so when several pairs are asked for)
    assert oversized(ideal(3), opts) == [(2, 2)]
    fitting = plan_runs(prof, ideal(3), replace(opts, skip_oversized=True))
    assert [(s.stages, s.replicas) for s in fitting] == [(1, 1), (1, 2), (2, 1)]
    # 3 replicas of 8 samples hold 3, 3 and 2; 9 replicas would leave one without a sample
    (three,) = plan_runs(prof, ideal(4), Options(stages=[1], schedules=["ddg"], replicas=(3,)))
    assert three.replicas == 3
    with pytest.raises(UserError, match="stage 0 has 9 replicas but a micro-batch has 8 samples"):
        plan_runs(prof, ideal(9), Options(stages=[1], schedules=["ddg"], replicas=(9,)))


def test_replicas_round_trip_through_the_csv_and_drift_is_factored_out_for_them(tmp_path: Path) -> None:
    from ddgsim.compare.accuracy import speed_matched_errors

    rows = [Row(model="m", K=1, schedule="bp", split="", predicted_ms=100.0, measured_ms=100.0, error_pct=0.0,
                batch_size=8, repeats=2, measured_all_ms=(110.0, 90.0)),
            Row(model="m", K=1, schedule="bp", split="", predicted_ms=50.0, measured_ms=50.0, error_pct=0.0,
                batch_size=8, repeats=2, measured_all_ms=(55.0, 45.0), replicas=2)]
    write_csv(rows, tmp_path / "v.csv")
    again = read_csv(tmp_path / "v.csv")
    assert [r.replicas for r in again] == [1, 2]
    assert speed_matched_errors(again) == {1: pytest.approx(0.0)}  # scaled by the one-process run only
    assert run_label(again[1]) == "K=1×D=2 bp [-]"


def test_ctrl_c_during_a_run_stops_without_retry_and_keeps_the_earlier_rows(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import signal

    from torch.distributed.elastic.multiprocessing.api import SignalException

    prof = _profile([1.0] * 12)
    scenario = load_scenario("ideal-2")
    opts = Options(stages=[1, 2], schedules=["ddg"], splits=1, steps=6, trace=False)
    calls: list[Path] = []

    def fake_execute(plan: Path, steps: int, threads: int, metrics: Path, trace: Path | None, device: str,
                     log_dir: Path | None = None) -> None:
        calls.append(plan)
        if len(calls) > 1:
            raise SignalException("got signal: SIGINT", sigval=signal.SIGINT)
        _fake_metrics(metrics, 10.0)

    monkeypatch.setattr(execution, "run_plan", fake_execute)
    with pytest.raises(KeyboardInterrupt):
        run_all(prof, None, scenario, "ideal-2", opts, tmp_path, log=lambda m: None, warn=lambda m: None)
    assert len(calls) == 2
    assert [(r.K, r.status) for r in read_csv(tmp_path / "validation.csv")] == [(1, "ok")]


def test_validate_exits_1_and_keeps_everything_when_every_run_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from ddgsim.cli import main

    prof_path = tmp_path / "mlp.json"
    _profile([1.0] * 4, model="mlp", batch_size=16).save(prof_path)

    def always_fails(plan: Path, *args: object, **kwargs: object) -> None:
        raise ExecutionFailed("executor exit status 1")

    monkeypatch.setattr(execution, "run_plan", always_fails)
    out = tmp_path / "val"
    code = main(["validate", "mlp", "--gpus", "1,2", "--schedules", "ddg", "--splits", "1", "--steps", "4", "--repeats", "1",
                 "--batch-size", "16", "--scenario", "cpu-2core", "--profile", str(prof_path), "--out", str(out)])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    rows = read_csv(out / "validation.csv")
    assert [(r.K, r.status, r.error) for r in rows] == [(1, "failed", "executor exit status 1, twice"),
                                                        (2, "failed", "executor exit status 1, twice")]
    assert err[-1] == (f"error: 2 of 2 runs failed: mlp bp K=1 split [-] (executor exit status 1, twice); "
                       f"mlp ddg K=2 split [{rows[1].split}] (executor exit status 1, twice)")
    assert sum("retrying once" in line for line in err) == 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["runs"] == 0 and summary["runs_failed"] == 2
    html = (out / "report.html").read_text()
    assert "All runs (2 failed)" in html and html.count("Plotly.newPlot") == 1


def test_profile_warning_on_load() -> None:
    assert profile_warning(_profile([1.0], {"loadavg_before": [0.1, 0.1, 0.1]})) is None
    w = profile_warning(_profile([1.0], {"loadavg_before": [50.0, 1, 1]}))
    assert w is not None and "under load" in w and "--threads 1" in w and "not this machine" not in w
    foreign = _profile([1.0], machine={"cpu_model": "Other CPU", "cpu_count": 64})
    other = profile_warning(foreign, "p.json")
    assert other is not None and other.startswith(
        f"warning: profile of {foreign.model} at batch {foreign.batch_size}: the figures describe Other CPU, 64 CPUs")
    assert "(p.json), not this machine" in other
    micro = profile_warning(_profile([1.0]), "p.json", (2, 4))
    assert micro is not None and "no measured costs for 2, 4 micro-batches" in micro and "--micro-batches 2,4" in micro


def test_under_load_means_other_processes_were_busy_during_the_profile_itself() -> None:
    """The load average lags by a minute: right after validate's own calibration (two busy processes)
    it says 1.5 on a quiet 2-CPU machine. A profile records what other processes used meanwhile."""
    from ddgsim.profile.machine import busy_reading, other_load

    lagging = {"loadavg_before": [1.5, 1.2, 1.0], "other_load": 0.03}
    assert profile_warning(_profile([1.0], lagging)) is None
    w = profile_warning(_profile([1.0], {**lagging, "other_load": 0.9}))
    assert w is not None and "measured under load (other processes kept 0.9 of" in w
    # (busy CPU seconds of the machine, own CPU seconds, wall seconds): 3 s busy over 2 s, 1 s of it ours
    assert other_load((10.0, 1.0, 100.0), (13.0, 2.0, 102.0)) == pytest.approx(1.0)
    assert other_load((10.0, 1.0, 100.0), (10.0, 1.5, 101.0)) == 0.0  # clock granularity: never below 0
    assert other_load(None, (1.0, 1.0, 1.0)) is None
    # a real reading: this process computing alone counts as its own, not as other load
    before = busy_reading()
    if before is None:
        pytest.skip("no /proc/stat")
    t = time.perf_counter()
    while time.perf_counter() - t < 0.3:
        sum(range(1000))
    load = other_load(before, busy_reading())
    assert load is not None and 0.0 <= load < (os.cpu_count() or 1)


def _validate(*argv: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m ddgsim validate``. The end-to-end runs pass ``--max-steal 100``: whether the hypervisor
    steals CPU time during them is not up to the test (re-measuring is tested on its own, with a script)."""
    e = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **env}
    return subprocess.run([sys.executable, "-m", "ddgsim", "validate", *argv], cwd=ROOT, env=e,
                          capture_output=True, text=True, timeout=timeout)


def test_validate_says_when_it_calibrated_this_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --scenario on CPU: this machine's scenario (calibrated when missing, which it says), ideal-K on CUDA.
    The calibration itself runs for real in the tests below and in test_calibrate.py."""
    import ddgsim.calibrate.local_scenario as local
    from ddgsim.compare.inputs import default_scenario

    path = tmp_path / "local.toml"
    asked: list[tuple[int, bool]] = []
    for measured in (True, False):
        monkeypatch.setattr(local, "local_scenario",
                            lambda threads, recalibrate, m=measured: asked.append((threads, recalibrate)) or (path, m))
        said: list[str] = []
        assert default_scenario("cpu", 2, 3, measured, said.append) == str(path)
        assert said == ([f"calibrated this machine (links, all-reduce, contention); cached as {path}"] if measured
                        else [])
    assert asked == [(3, True), (3, False)]
    assert default_scenario("cuda", 4, 1, False, said.append) == "ideal-4" and len(asked) == 2


def test_bad_arguments_fail_before_running(tmp_path: Path) -> None:
    env = {"DDGSIM_CACHE_DIR": str(tmp_path / "cache")}
    r = _validate("mlp", "--gpus", "2", "--schedules", "pipedream", "--out", str(tmp_path / "o"), env=env)
    assert r.returncode == 2 and "--schedules: 'pipedream' is not one of" in r.stderr
    r = _validate("mlp", "--gpus", "2", "--micro-batches", "3", "--batch-size", "16", "--out", str(tmp_path / "o"),
                  env=env)
    assert r.returncode == 2 and "micro-batch count 3 must be >= 2 and divide the batch size 16" in r.stderr
    r = _validate("mlp", "--gpus", "2", "--runtimes", "jax", "--out", str(tmp_path / "o"), env=env)
    assert r.returncode == 2 and "--runtimes must be ddgsim and/or torch" in r.stderr
    r = _validate("mlp", "--gpus", "2", "--steps", "3", "--out", str(tmp_path / "o"), env=env)
    assert r.returncode == 2 and "--steps" in r.stderr
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def mlp_cache(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One profile cache for the end-to-end runs: mlp is profiled once."""
    return {"DDGSIM_CACHE_DIR": str(tmp_path_factory.mktemp("cache"))}


@pytest.mark.slow
def test_validate_end_to_end_on_mlp(tmp_path: Path, mlp_cache: dict[str, str]) -> None:
    """K=1 bp, a K=2 ddg-pipelined and a K=2 gpipe run on real executor processes, the gpipe split under
    torch.distributed.pipelining too; the profile of this machine is measured first (no timing asserts)."""
    out = tmp_path / "val"
    r = _validate("mlp", "--gpus", "1,2", "--schedules", "ddg-pipelined,gpipe", "--splits", "1", "--steps", "4",
                  "--batch-size", "16", "--scenario", "cpu-2core", "--repeats", "1", "--runtimes", "ddgsim,torch",
                  "--max-steal", "100", "--warmup-ms", "0", "--window-ms", "0",
                  "--out", str(out), env=mlp_cache)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "profiled mlp at batch 16 on this machine (and 2 micro-batches); cached as " in r.stderr
    rows = read_csv(out / "validation.csv")
    # the one-process run is measured once more at the end: every other execution lies between two of it
    assert [(x.K, x.schedule, x.micro_batches, x.runtime, x.status, x.attempts) for x in rows] == [
        (1, "bp", 1, "ddgsim", "ok", 2), (2, "ddg-pipelined", 1, "ddgsim", "ok", 1), (2, "gpipe", 2, "ddgsim", "ok", 1),
        (2, "gpipe", 2, "torch", "ok", 1)]
    assert [len(x.measured_at_s) for x in rows] == [2, 1, 1, 1]
    first, last = rows[0].measured_at_s
    assert all(first < x.measured_at_s[0] < last for x in rows[1:])
    assert "the one-process run once a round and once more at the end" in r.stdout
    assert (out / "runs" / "k1-bp-all.r2.metrics.json").is_file()
    assert rows[1].label.startswith("planned") and rows[2].split == rows[3].split
    for x in rows:
        assert x.predicted_ms > 0 and x.measured_ms > 0
        # the CSV rounds times to 1 µs: sub-ms mlp steps shift the recomputed error a little
        assert x.error_pct == pytest.approx(100 * (x.predicted_ms - x.measured_ms) / x.measured_ms, abs=0.5)
    assert "median absolute error" in r.stdout and "Kendall tau" in r.stdout
    # each execution's compute speed, from the executor's own action windows (torch's runtime times none)
    assert [len(x.compute_ratio_all) for x in rows] == [2, 1, 1, 0] and all(c > 0 for c in rows[0].compute_ratio_all)
    assert "with each execution's own compute speed" in r.stdout and "(3 runs; what is left" in r.stdout
    # peak memory per stage: predicted beside measured (the executor measures it, PyTorch's runtime does not)
    assert [(len(x.predicted_memory_mib), len(x.measured_memory_mib)) for x in rows] == [(1, 1), (2, 2), (2, 2), (2, 0)]
    assert all(m > 0 for x in rows for m in x.predicted_memory_mib)
    assert all(m >= 0 for x in rows for m in x.measured_memory_mib) and rows[0].measured_memory_mib[0] > 0
    memory = next(x for x in r.stdout.splitlines() if x.startswith("peak memory per stage, predicted vs measured"))
    assert sum(int(n) for n in re.findall(r"(\d+) stages? (?:of|under)", memory)) == 5, memory
    html = (out / "report.html").read_text()
    assert html.count("Plotly.newPlot") >= 3  # scatter, errors, at least one timeline
    summary = json.loads((out / "summary.json").read_text())
    assert summary["runs"] == 4
    runs = out / "runs"
    for name in ("k1-bp-all", f"k2-ddg-pipelined-{rows[1].split}", f"k2-gpipe-m2-{rows[2].split}"):
        for kind in ("plan", "r1.metrics", "predicted.trace", "measured.trace"):
            assert (runs / f"{name}.{kind}.json").is_file(), f"{name}.{kind}.json"
    torch_metrics = json.loads((runs / f"k2-gpipe-m2-torch-{rows[3].split}.r1.metrics.json").read_text())
    assert torch_metrics["runtime"] == "torch.distributed.pipelining" and len(torch_metrics["per_stage"]) == 2
    # validate a second time: this machine's profile is found in the cache, not measured again
    r2 = _validate("mlp", "--gpus", "1", "--steps", "4", "--batch-size", "16", "--repeats", "1",
                   "--scenario", "cpu-2core", "--out", str(tmp_path / "again"), env=mlp_cache)
    assert r2.returncode == 0 and "profiled" not in r2.stderr, r2.stderr[-2000:]
    # by default a run of short steps runs longer than --steps: 300 ms dropped, 500 ms measured
    (again,) = read_csv(tmp_path / "again" / "validation.csv")
    its = {it for st in json.loads((tmp_path / "again" / "runs" / "k1-bp-all.r1.metrics.json").read_text())[
        "per_stage"] for it in st["iterations"]}
    assert again.steps > 4 and len(its) > 4, (again.steps, len(its))


def _local_scenario(env: dict[str, str], recalibrate: bool = False) -> tuple[Path, bool]:
    """What ``validate`` calls for this machine's scenario, in a quick form (2 sizes, 2 repetitions), in a
    process set up as the CLI's (huge pages for malloc: they are part of the machine's key)."""
    from ddgsim.malloc import hugepage_env

    code = ("import json; from ddgsim.calibrate.local_scenario import local_scenario; "
            f"p, m = local_scenario(sizes=[4, 4096], reps=2, recalibrate={recalibrate}); print(json.dumps([str(p), m]))")
    e = hugepage_env({**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **env})
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=e, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    path, measured = json.loads(r.stdout.splitlines()[-1])
    return Path(path), measured


@pytest.mark.slow
def test_validate_end_to_end_with_replicas_on_this_machines_cached_scenario(tmp_path: Path,
                                                                           mlp_cache: dict[str, str]) -> None:
    """This machine's scenario is calibrated once (real gloo processes, the executor's overheads probed) and
    cached; validate without --scenario takes it from the cache for K=1 (one process) and K=1×D=2 (data
    parallel: two real processes and their gradient all-reduce); recalibrating measures it again."""
    path, measured = _local_scenario(mlp_cache)
    assert measured and path.is_file() and str(path).startswith(mlp_cache["DDGSIM_CACHE_DIR"])
    scenario = load_scenario(str(path))
    assert scenario.measured_allreduce(["cpu0", "cpu1"]) is not None and scenario.overheads.alone is not None
    stamp = path.stat().st_mtime_ns
    assert _local_scenario(mlp_cache) == (path, False) and path.stat().st_mtime_ns == stamp

    out = tmp_path / "dp"
    r = _validate("mlp", "--gpus", "1", "--replicas", "1,2", "--steps", "4", "--batch-size", "16", "--repeats", "1",
                  "--max-steal", "100", "--warmup-ms", "0", "--window-ms", "0", "--out", str(out), env=mlp_cache)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "calibrated this machine" not in r.stderr and path.stat().st_mtime_ns == stamp  # taken from the cache
    # ... and the two processes' contention measured on the model itself, cached beside its profile
    assert "two processes training mlp at batch 16 at once: each at " in r.stderr
    assert "predicting with concurrent_speed" in (out / "report.html").read_text()
    rows = read_csv(out / "validation.csv")
    assert all(x.scenario == "local" for x in rows)
    assert [(x.K, x.replicas, x.schedule, x.status) for x in rows] == [(1, 1, "bp", "ok"), (1, 2, "bp", "ok")]
    assert all(x.predicted_ms > 0 and x.measured_ms > 0 for x in rows)
    metrics = json.loads((out / "runs" / "k1-d2-bp-all.r1.metrics.json").read_text())
    assert [(s["stage"], s["replica"]) for s in metrics["per_stage"]] == [(0, 0), (0, 1)]
    assert "K=1×D=2" in r.stdout

    assert _local_scenario(mlp_cache, recalibrate=True) == (path, True) and path.stat().st_mtime_ns != stamp


@pytest.mark.slow
def test_validate_end_to_end_a_run_that_keeps_failing(tmp_path: Path, mlp_cache: dict[str, str]) -> None:
    """Real executor processes; DDGSIM_FAULT SIGKILLs stage 1 at step 2 of every K=2 launch (its retry too),
    the K=1 run has no stage 1 and is measured."""
    out = tmp_path / "val"
    r = _validate("mlp", "--gpus", "1,2", "--schedules", "ddg-pipelined", "--splits", "1", "--steps", "4",
                  "--batch-size", "16", "--scenario", "cpu-2core", "--repeats", "1", "--out", str(out),
                  "--max-steal", "100", "--warmup-ms", "0", "--window-ms", "0", env={**mlp_cache, "DDGSIM_FAULT": "1:2"})
    assert r.returncode == 1, r.stderr[-3000:]
    rows = read_csv(out / "validation.csv")
    assert [(x.K, x.status, x.attempts) for x in rows] == [(1, "ok", 1), (2, "failed", 2)]
    assert rows[0].measured_ms > 0 and math.isnan(rows[1].measured_ms) and rows[1].predicted_ms > 0
    # the reason names the failing stage and keeps its log (a SIGKILL leaves no line of its own)
    log = out.resolve() / "runs" / f"k2-ddg-pipelined-{rows[1].split}.r1.logs" / "rank1.log"
    reason = f"executor: stage 1 failed (exit code -9, SIGKILL); full log: {log}; the job was stopped"
    assert rows[1].error == f"{reason}, twice"
    assert log.is_file() and not (out / "runs" / "k1-bp-all.r1.logs").exists()  # kept only where a run failed
    err = r.stderr.strip().splitlines()
    assert err[-1] == f"error: 1 of 2 runs failed: mlp ddg-pipelined K=2 split [{rows[1].split}] ({reason}, twice)"
    assert sum("retrying once" in line for line in err) == 1
    assert "runs: 1, 1 failed" in r.stdout and "median absolute error" in r.stdout
    html = (out / "report.html").read_text()
    assert html.count("Plotly.newPlot") == 4  # scatter, errors, the runs table, the K=1 timeline
    assert "All runs (1 failed)" in html
    summary = json.loads((out / "summary.json").read_text())
    assert summary["runs"] == 1 and summary["runs_failed"] == 1
    assert (out / "runs" / "k1-bp-all.r1.metrics.json").is_file()


def test_short_steps_run_long_enough_to_settle_and_be_measured() -> None:
    """Twelve steps of a millisecond are 12 ms of a machine still warming up: validate runs such a run
    longer (at least min_warmup_ms dropped, min_window_ms measured), and long steps exactly --steps."""
    opts = Options(stages=[1, 2], schedules=["ddg"], steps=12)
    assert options.run_length(400.0, 2, opts) == (12, 2)  # long steps: as asked, K gaps dropped
    steps, warm = options.run_length(1.0, 2, opts)
    assert warm == 300 and steps == 1 + 300 + 500
    assert options.run_length(1.0, 2, replace(opts, warmup=3)) == (1 + 3 + 500, 3)  # an explicit --warmup stays
    assert options.run_length(1.0, 2, replace(opts, min_warmup_ms=0, min_window_ms=0)) == (12, 2)
    assert options.run_length(0.01, 2, opts)[0] == options.MAX_RUN_STEPS  # never more than the cap
    assert options.run_length(math.nan, 2, opts) == (12, 2)
