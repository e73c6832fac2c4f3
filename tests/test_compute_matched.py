"""The error with each execution's own compute speed: what the pipeline model gets wrong once the
machine's speed during that very execution (its stages' measured F + B + U time against the
predicted) is factored out. Figures by hand, the executor's metrics layout, the CSV, the summary."""

from __future__ import annotations

import dataclasses
import math
import statistics
from pathlib import Path

import pytest

from ddgsim.compare.accuracy import summarize
from ddgsim.compare.execution import measured_busy
from ddgsim.compare.rounds import compute_ratio
from ddgsim.compare.rows import CONTENTION, MACHINE_SPEED, MODEL_ERROR, WITHIN_TOLERANCE, Row
from ddgsim.compare.validation_csv import COLUMNS, read_csv, write_csv


def _row(K: int, pred: float, meas: tuple[float, ...], ratios: tuple[float, ...] = (), split: str = "3",
         runtime: str = "ddgsim") -> Row:
    m = statistics.median(meas)
    return Row(model="m", K=K, schedule="bp" if K == 1 else "gpipe", split="" if K == 1 else split,
               predicted_ms=pred, measured_ms=m, error_pct=100 * (pred - m) / m, batch_size=8, repeats=len(meas),
               measured_all_ms=meas, compute_ratio_all=ratios, runtime=runtime)


def test_each_repeat_is_scaled_by_its_own_compute_speed() -> None:
    # repeat 1 ran its compute 20 % slower than the profile and took 20 % longer: no pipeline error;
    # repeat 2 computed at the profile's speed and still took 10 % longer: -9.1 %; repeat 3 -1/1.05
    r = _row(2, 100.0, (120.0, 110.0, 105.0), (1.2, 1.0, 1.04))
    errs = [0.0, 100 * (100 - 110) / 110, 100 * (104 - 105) / 105]
    assert r.compute_matched_error_pct == pytest.approx(statistics.median(errs))
    assert math.isnan(_row(2, 100.0, (120.0, 110.0)).compute_matched_error_pct)  # not timed (torch's runtime)
    assert math.isnan(_row(2, 100.0, (120.0, 110.0), (1.2,)).compute_matched_error_pct)  # a repeat without one


def test_measured_busy_is_the_actions_windows_per_stage_after_the_warmup() -> None:
    metrics = {"per_stage": [
        {"stage": 0, "replica": 0, "forward_ms": [50, 10, 11, 12], "backward_ms": [50, 20, 21, 22],
         "update_ms": [5, 1, 1, 1]},
        {"stage": 0, "replica": 1, "forward_ms": [50, 12, 13, 14], "backward_ms": [50, 22, 23, 24],
         "update_ms": [5, 1, 1, 1]},
        {"stage": 1, "replica": 0, "forward_ms": [9, 3, 3, 3], "backward_ms": [9, 4, 4, 4], "update_ms": [1, 0, 0, 0]},
    ]}
    # stage 0: replica medians 33 and 37 after the first iteration, their mean 35; stage 1: 7
    assert measured_busy(metrics, 1) == pytest.approx((35.0, 7.0))
    assert measured_busy(metrics, 0) == pytest.approx((36.0, 7.0))  # the first iteration kept: medians 34 and 38
    assert measured_busy(metrics, 10)[1] == pytest.approx(7.0)  # never all of them dropped
    torch_like = {"per_stage": [{"stage": 0, "step_ms": [1.0, 2.0]}, {"stage": 1, "step_ms": [1.0, 2.0]}]}
    assert measured_busy(torch_like, 1) == ()
    assert compute_ratio((35.0, 7.0), (30.0, 5.0)) == pytest.approx(42 / 35)
    assert compute_ratio((), (30.0, 5.0)) is None and compute_ratio((35.0,), (30.0, 5.0)) is None
    assert compute_ratio((1.0, 1.0), (0.0, 0.0)) is None


def test_ratios_round_trip_through_the_csv_and_older_files_have_none(tmp_path: Path) -> None:
    rows = [_row(1, 100.0, (100.0, 90.0), (1.0, 0.9)), _row(2, 60.0, (66.0, 70.0), runtime="torch")]
    write_csv(rows, tmp_path / "v.csv")
    back = read_csv(tmp_path / "v.csv")
    assert back[0].compute_ratio_all == pytest.approx((1.0, 0.9)) and back[1].compute_ratio_all == ()
    assert back[0].compute_matched_error_pct == pytest.approx(rows[0].compute_matched_error_pct)
    assert "compute_ratio_all" in COLUMNS
    (tmp_path / "old.csv").write_text(",".join(COLUMNS[:7]) + "\nm,2,ddg,3,60,58,3.45\n")
    (old,) = read_csv(tmp_path / "old.csv")
    assert old.compute_ratio_all == () and math.isnan(old.compute_matched_error_pct)


def test_the_summary_tells_the_machines_speed_from_the_pipeline_models_error() -> None:
    # a slow spell: every run of the rounds, the one-process run included, computed 25 % slower
    rows = [_row(1, 100.0, (125.0, 126.0, 124.0), (1.25, 1.26, 1.24)),
            _row(2, 80.0, (100.0, 100.5, 99.5), (1.25, 1.25, 1.25)),
            _row(2, 70.0, (75.0, 74.0, 76.0), split="2", runtime="torch")]
    s = summarize(rows)
    assert s.compute_matched_runs == 2 and s.compute_matched_worst_pct == pytest.approx(0.0, abs=0.6)
    assert sorted(s.compute_ratios) == pytest.approx(sorted((1.25, 1.26, 1.24, 1.25, 1.25, 1.25)))
    # -20 %, against ±0.5 % of noise, yet all of it the machine's: told apart from a model error
    assert rows[1].verdict(5.0) == MACHINE_SPEED
    # still -20 % against the one-process run of the same moment: its processes slowed each other
    assert rows[1].verdict(5.0, -20.0) == CONTENTION and rows[1].verdict(5.0, 1.0) == MACHINE_SPEED
    # bp's stages take turns: off against that run, it met the machine at another speed, no contention
    turns = dataclasses.replace(rows[1], schedule="bp")
    assert not turns.stages_overlap and turns.verdict(5.0, -20.0) == MACHINE_SPEED
    assert dataclasses.replace(turns, replicas=2).verdict(5.0, -20.0) == CONTENTION  # replicas compute at once
    wrong = _row(2, 60.0, (100.0, 100.5, 99.5), (1.25, 1.25, 1.25), split="1")  # 75 at that speed: -25 %
    assert wrong.verdict(5.0) == MODEL_ERROR and _row(2, 80.0, (100.0, 100.5, 99.5)).verdict(5.0) == MODEL_ERROR
    text = "\n".join(s.lines())
    assert "with each execution's own compute speed" in text and "median 1.25x, 1.24-1.26x" in text
    assert ("2 within 5% at their own compute speed (the machine's speed of the moment), 0 within it at their own "
            "compute speed but not at the one-process run's of the same moment (contention: the processes slowed "
            "each other beyond the model), 1 model error") in text
    assert "  the machine's speed: K=2 gpipe [3] : error -20.0%, noise ±0.5%, at its own compute speed +0.0%" in text
    # the same run while the one-process run kept the profile's speed: its stages slowed each other
    alone = summarize([_row(1, 100.0, (100.0, 101.0, 99.0), (1.0, 1.01, 0.99)), rows[1]])
    assert set(alone.verdicts) == {WITHIN_TOLERANCE, CONTENTION}
    assert alone.verdicts[CONTENTION] == ["K=2 gpipe [3] : error -20.0%, noise ±0.5%, at its own compute speed "
                                          "+0.0%, at the one-process run's of the same moment -20.0%"]
    assert "1 within it at their own compute speed but not" in "\n".join(alone.lines())
    js = s.to_json()
    assert js["compute_matched_runs"] == 2 and js["compute_ratio_max"] == pytest.approx(1.26)
    assert js["compute_matched_worst_abs_error_pct"] == pytest.approx(s.compute_matched_worst_pct)
    # no run timed: no line, NaN figures
    plain = summarize([_row(1, 100.0, (100.0,)), _row(2, 80.0, (90.0,))])
    assert plain.compute_matched_runs == 0 and math.isnan(plain.to_json()["compute_ratio_median"])
    assert not any("own compute speed" in line for line in plain.lines())


def test_the_ratio_is_kept_only_where_compute_is_most_of_the_busy_time() -> None:
    from sim_helpers import chain, make_profile, with_overheads

    from ddgsim.compare.rounds import MIN_COMPUTE_SHARE, compute_share
    from ddgsim.predict.event_sim import simulate
    from ddgsim.predict.overheads import Overheads

    # one process, forward 1 + 1 ms, backward 2 + 2 ms, no parameters: 6 ms of compute per step
    profile = make_profile([1.0, 1.0], [2.0, 2.0])
    bare = chain(1)
    busy = simulate(profile, [], bare, "bp").busy_ms
    assert busy == pytest.approx((6.0,)) and compute_share(profile, [], bare, 1, None) == pytest.approx(1.0)
    # 1 ms more for each of its F, B and U (host time, as calibrate measures the executor's): 6 of 9 ms
    slow = with_overheads(bare, Overheads(forward_us=1000.0, backward_us=1000.0, update_us=1000.0))
    busy = simulate(profile, [], slow, "bp").busy_ms
    assert busy == pytest.approx((9.0,)) and compute_share(profile, [], slow, 1, None) == pytest.approx(6 / 9)
    assert compute_share(profile, [], slow, 1, None) < MIN_COMPUTE_SHARE <= 1.0
    # two stages computing at once at half speed: the slow-down is compute, not the executor's overheads
    # (with the predicted busy time as the denominator the share read 0.5 and the ratio was dropped)
    two = chain(2)
    shared = dataclasses.replace(two, concurrent_speed=0.5,
                                 devices=tuple(dataclasses.replace(d, host="h") for d in two.devices))
    assert max(simulate(profile, [1], shared, "ddg-pipelined").busy_ms) > 3.5  # the prediction is slowed ...
    assert compute_share(profile, [1], shared, 1, None) == pytest.approx(1.0)  # ... its compute share is not


def test_validate_records_each_repeats_compute_ratio_where_compute_dominates(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """run_all with the executor faked (no processes): every execution's stages compute 1.5x (repeat 1)
    and 1.0x (repeat 2) the predicted busy time; with the executor's overheads most of the busy time,
    no ratio is kept."""
    import json

    from sim_helpers import make_profile

    from ddgsim.compare import execution
    from ddgsim.compare.options import Options
    from ddgsim.compare.rounds import run_all
    from ddgsim.predict.overheads import Overheads
    from ddgsim.predict.scenario import load_scenario

    profile = make_profile([1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 8.0])
    opts = Options(stages=[1, 2], schedules=["ddg"], splits=1, steps=6, trace=False, repeats=2)
    factor = iter([1.5, 1.5, 1.0, 1.0, 1.0])  # the runs of repeat 1, of repeat 2, then the closing one-process run

    def fake_execute(plan: Path, steps: int, threads: int, metrics: Path, trace: Path | None, device: str,
                     log_dir: Path | None = None) -> None:
        p = json.loads(plan.read_text())
        f = next(factor)
        busy = p["predicted"]["busy_ms"]
        step = f * p["predicted"]["iteration_ms"]
        metrics.write_text(json.dumps({  # what the executor writes (the metrics schema)
            "format": "ddgsim-metrics/1", "plan": "p.json", "model": "mlp", "schedule": "bp", "stages": len(busy),
            "split": [], "batch_size": 8, "steps": 6, "losses": [None] * 6,
            "summary": {"median_step_ms": step, "samples_per_s": 8e3 / step},
            "per_stage": [{"stage": k, "iterations": list(range(6)), "step_ms": [step] * 6,
                           "forward_ms": [f * b / 3] * 6, "backward_ms": [f * 2 * b / 3] * 6, "update_ms": [0.0] * 6}
                          for k, b in enumerate(busy)]}))

    monkeypatch.setattr(execution, "run_plan", fake_execute)
    scenario = load_scenario("ideal-2")
    rows, _ = run_all(profile, None, scenario, "ideal-2", opts, tmp_path / "a", log=lambda m: None)
    assert all(r.ok for r in rows), [r.error for r in rows]
    assert [r.compute_ratio_all for r in rows] == [pytest.approx((1.5, 1.0, 1.0)), pytest.approx((1.5, 1.0))]
    assert all(r.compute_matched_error_pct == pytest.approx(0.0, abs=1e-6) for r in rows)
    # 5 ms more per action than 1-8 ms of compute: the ratio would mix the two, and is left out
    factor = iter([1.5, 1.5, 1.0, 1.0, 1.0])
    costly = dataclasses.replace(scenario, overheads=Overheads(forward_us=5000.0, backward_us=5000.0))
    rows, _ = run_all(profile, None, costly, "ideal-2", opts, tmp_path / "b", log=lambda m: None)
    assert [r.compute_ratio_all for r in rows] == [(), ()] and all(r.measured_ms > 0 for r in rows)


def test_stages_under_a_mib_are_compared_in_mib_not_in_percent() -> None:
    # a head stage of 0.16 MiB predicted and 2.5 KiB measured is +6 500 %: the allocator's granularity
    big = dataclasses.replace(_row(2, 100.0, (100.0,)), predicted_memory_mib=(188.7, 0.1637),
                              measured_memory_mib=(188.0, 0.00248))
    tiny = dataclasses.replace(_row(2, 100.0, (100.0,)), predicted_memory_mib=(0.09, 0.25), measured_memory_mib=(0.0, 0.03))
    assert big.memory_errors_pct == pytest.approx([100 * 0.7 / 188.0])
    assert big.small_memory_errors_mib == pytest.approx([0.1637 - 0.00248])
    s = summarize([big, tiny])
    assert (s.memory_stages, s.memory_small_stages) == (1, 3)
    assert s.memory_worst_pct == pytest.approx(100 * 0.7 / 188.0) and s.memory_small_worst_mib == pytest.approx(0.22)
    line = next(x for x in s.lines() if x.startswith("peak memory"))
    assert line == ("peak memory per stage, predicted vs measured (1 stage of 1 MiB or more): median |error| 0.4%, "
                    "worst 0.4%; 3 stages under 1 MiB, within 0.22 MiB")
    only_small = summarize([tiny])
    assert next(x for x in only_small.lines() if x.startswith("peak memory")) == (
        "peak memory per stage, predicted vs measured: 2 stages under 1 MiB, within 0.22 MiB")
    assert only_small.to_json()["memory_small_stages"] == 2 and math.isnan(only_small.memory_median_pct)
