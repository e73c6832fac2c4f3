"""Predicted vs measured: split choice, the measured step, the summary, and one real end-to-end run."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ddgsim.errors import UserError
from ddgsim.profile import Profile, UnitProfile
from ddgsim.scenario import load_scenario
from ddgsim.validate import (
    COLUMNS,
    Row,
    choose_splits,
    measured_step_ms,
    profile_warning,
    read_csv,
    summarize,
    weighted_split,
    write_csv,
)

ROOT = Path(__file__).resolve().parents[1]


def _profile(costs: list[float], meta: dict | None = None) -> Profile:
    units = [UnitProfile(name=f"u{i}", forward_ms=c / 3, backward_ms=2 * c / 3, output_bytes=4096,
                         param_bytes=1024, activation_bytes=4096) for i, c in enumerate(costs)]
    return Profile(model="toy", batch_size=8, input_shape=[4], device="cpu", threads=1, dtype="float32",
                   units=units, whole_model_ms=sum(costs), meta=meta or {})


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


def test_profile_warning_on_load() -> None:
    assert profile_warning(_profile([1.0], {"loadavg_before": [0.1, 0.1, 0.1]})) is None
    w = profile_warning(_profile([1.0], {"loadavg_before": [50.0, 1, 1]}))
    assert w is not None and "under load" in w and "--threads 1" in w


def _validate(*argv: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    e = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **env}
    return subprocess.run([sys.executable, "-m", "ddgsim", "validate", *argv], cwd=ROOT, env=e,
                          capture_output=True, text=True, timeout=timeout)


def test_bad_arguments_fail_before_running(tmp_path: Path) -> None:
    env = {"DDGSIM_CACHE_DIR": str(tmp_path / "cache")}
    r = _validate("mlp", "--gpus", "2", "--schedules", "gpipe", "--out", str(tmp_path / "o"), env=env)
    assert r.returncode == 2 and "--schedules" in r.stderr
    r = _validate("mlp", "--gpus", "2", "--steps", "3", "--out", str(tmp_path / "o"), env=env)
    assert r.returncode == 2 and "--steps" in r.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_validate_end_to_end_on_mlp(tmp_path: Path) -> None:
    """K=1 bp and one K=2 ddg-pipelined run on real executor processes (no timing asserts)."""
    out = tmp_path / "val"
    r = _validate("mlp", "--gpus", "1,2", "--schedules", "ddg-pipelined", "--splits", "1", "--steps", "4",
                  "--batch-size", "16", "--scenario", "cpu-2core", "--out", str(out),
                  env={"DDGSIM_CACHE_DIR": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stderr[-3000:]
    rows = read_csv(out / "validation.csv")
    assert [(x.K, x.schedule) for x in rows] == [(1, "bp"), (2, "ddg-pipelined")]
    assert rows[1].label.startswith("planned")
    for x in rows:
        assert x.predicted_ms > 0 and x.measured_ms > 0
        # the CSV rounds times to 1 µs: sub-ms mlp steps shift the recomputed error a little
        assert x.error_pct == pytest.approx(100 * (x.predicted_ms - x.measured_ms) / x.measured_ms, abs=0.5)
    assert "median absolute error" in r.stdout and "Kendall tau" in r.stdout
    html = (out / "report.html").read_text()
    assert html.count("Plotly.newPlot") >= 3  # scatter, errors, at least one timeline
    summary = json.loads((out / "summary.json").read_text())
    assert summary["runs"] == 2
    runs = out / "runs"
    for name in ("k1-bp-all", f"k2-ddg-pipelined-{rows[1].split}"):
        for kind in ("plan", "metrics", "predicted.trace", "measured.trace"):
            assert (runs / f"{name}.{kind}.json").is_file(), f"{name}.{kind}.json"
