"""The same validation run twice or more: the floor no prediction can beat in every run, and the
table of configurations matched over the runs."""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ddgsim.cli import main
from ddgsim.compare.between_runs import across, best_prediction, floor_pct, within_all, worst_floors
from ddgsim.compare.rows import Row
from ddgsim.compare.validation_csv import write_csv
from ddgsim.errors import UserError

positive = st.floats(min_value=1e-3, max_value=1e4, allow_nan=False, allow_infinity=False)


def _worst_pct(p: float, values: list[float]) -> float:
    return max(100.0 * abs(p - v) / v for v in values)


@given(st.lists(positive, min_size=1, max_size=8), positive)
def test_no_prediction_beats_the_floor_and_the_best_one_reaches_it(values: list[float], p: float) -> None:
    floor = floor_pct(values)
    assert _worst_pct(p, values) >= floor - 1e-9 * max(1.0, floor)
    assert _worst_pct(best_prediction(values), values) == pytest.approx(floor, rel=1e-9, abs=1e-9)
    assert min(values) <= best_prediction(values) <= max(values)


@given(st.lists(st.tuples(positive, st.floats(min_value=0, max_value=50)), min_size=1, max_size=6), positive)
def test_within_all_is_exactly_the_predictions_within_every_width(runs: list[tuple[float, float]], p: float) -> None:
    measured, widths = [m for m, _ in runs], [w for _, w in runs]

    def fits(x: float) -> bool:
        return all(abs(x - m) <= w / 100 * m * (1 + 1e-9) + 1e-12 for m, w in runs)

    iv = within_all(measured, widths)
    if iv is None:
        assert not fits(p)
    else:
        assert fits(iv[0]) and fits(iv[1]) and fits((iv[0] + iv[1]) / 2)
        if fits(p):  # nothing outside the interval fits, everything inside does
            assert iv[0] * (1 - 1e-9) <= p <= iv[1] * (1 + 1e-9)
        if iv[0] < p < iv[1]:
            assert fits(p)


def test_the_floor_worked_by_hand() -> None:
    # 1.195 and 1.020 (one configuration's measured speedup in two runs): p = 1.1006 is 7.9 % off both
    assert floor_pct([1.195, 1.020]) == pytest.approx(100 * 0.175 / 2.215)
    assert best_prediction([1.195, 1.020]) == pytest.approx(2 * 1.195 * 1.020 / 2.215)
    assert floor_pct([3.0]) == 0.0
    for bad in ([], [1.0, 0.0], [-2.0]):
        with pytest.raises(UserError, match="positive"):
            floor_pct(bad)


def _row(K: int, schedule: str, split: str, times: tuple[float, ...]) -> Row:
    m = statistics.median(times)
    return Row(model="resnet20", K=K, schedule=schedule, split=split, predicted_ms=100.0 / K, measured_ms=m,
               error_pct=100 * (100.0 / K - m) / m, batch_size=128, scenario="local", repeats=len(times),
               measured_all_ms=times)


def test_configurations_are_matched_over_the_runs() -> None:
    one = [_row(1, "bp", "", (100.0, 100.0)), _row(2, "ddg", "6", (50.0, 50.0)), _row(2, "gpipe", "7", (60.0, 60.0))]
    two = [_row(1, "bp", "", (120.0, 120.0)), _row(2, "ddg", "6", (80.0, 80.0)), _row(2, "1f1b", "7", (70.0, 70.0))]
    matched = across([one, two])
    table = matched.table
    assert matched.left_out == ['resnet20 b128 K=2 1f1b [7]', 'resnet20 b128 K=2 gpipe [7]']
    assert [a.label for a in table] == ["K=1 bp [-]", "K=2 ddg [6]"]  # gpipe and 1f1b were not in both
    base, ddg = table
    assert base.speedup == () and base.measured_ms == (100.0, 120.0)
    assert ddg.speedup == pytest.approx((2.0, 1.5)) and ddg.speedup_predicted == pytest.approx((2.0, 2.0))
    assert ddg.speedup_floor_pct == pytest.approx(100 * 0.5 / 3.5)
    assert math.isnan(base.speedup_floor_pct)
    up, tm = worst_floors(table)
    assert up == pytest.approx(100 * 0.5 / 3.5) and tm == pytest.approx(100 * 30 / 130)


def test_fewer_than_two_runs_or_nothing_in_common_is_refused() -> None:
    with pytest.raises(UserError, match="two or more"):
        across([[_row(1, "bp", "", (1.0,))]])
    with pytest.raises(UserError, match="in common"):
        across([[_row(2, "ddg", "6", (1.0,))], [_row(2, "ddg", "7", (1.0,))]])


def _runs(tmp_path: Path) -> list[str]:
    def pipe(speedup: float) -> Row:  # predicted 1.18x
        return dataclasses.replace(_row(2, "1f1b", "5", (100 / speedup,) * 2), predicted_ms=100 / 1.18, micro_batches=2)

    one = [_row(1, "bp", "", (100.0, 100.0)), pipe(1.195)]
    two = [_row(1, "bp", "", (100.0, 100.0)), pipe(1.020)]
    dirs = []
    for name, rows in (("v1", one), ("v2", two)):
        (tmp_path / name).mkdir()
        write_csv(rows, tmp_path / name / "validation.csv")
        dirs.append(str(tmp_path / name))
    return dirs


def test_the_command_prints_each_runs_measurements_and_the_floor(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    v1, v2 = _runs(tmp_path)
    assert main(["compare-runs", v1, v2 + "/validation.csv", "--tolerance", "6"]) == 0
    out = capsys.readouterr().out
    assert "1.195 1.020" in out and "7.9%" in out
    assert "(1 configuration above 6%: K=2 1f1b M=2 [5])" in " ".join(out.split())
    assert "the model's worst speedup error, run by run: 1.3%, 15.7%" in out  # the prediction 1.18x against 1.195x and 1.020x
    # times 83.7 and 98.0 ms, noise 0: no time is within 6 % of both
    assert "within 6% or the run's own noise of every run: 1 configuration (K=2 1f1b M=2 [5])" in " ".join(out.split())
    assert main(["compare-runs", v1, v2, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["speedup_worst_floor_pct"] == pytest.approx(100 * 0.175 / 2.215)
    [base, pipe] = data["configurations"]
    assert base["speedup"] == [] and pipe["best_speedup_prediction"] == pytest.approx(2 * 1.195 * 1.02 / 2.215)
    assert base["time_within_tolerance_or_noise_ms"] == [95.0, 105.0] and pipe["time_within_tolerance_or_noise_ms"] is None


@pytest.mark.parametrize(("argv", "message"), [
    (["{v1}"], "need two or more runs"),
    (["{v1}", "{tmp}/nowhere"], "nowhere' does not exist"),
    (["{v1}", "{tmp}"], "has no validation.csv"),
    (["{v1}", "{v2}", "--tolerance", "0"], "--tolerance must be a percentage above 0, got 0"),
    (["{v1}", "{v1}/validation.csv"], "is given twice"),
])
def test_bad_input_is_one_line_and_exit_2(argv: list[str], message: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    v1, v2 = _runs(tmp_path)
    assert main(["compare-runs", *(a.format(v1=v1, v2=v2, tmp=tmp_path) for a in argv)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("beyond", [True, False])
def test_validate_points_at_compare_runs_when_runs_are_beyond_their_noise(
        beyond: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from ddgsim.compare import validate
    from ddgsim.compare.accuracy import summarize

    base = _row(1, "bp", "", (100.0, 100.0, 100.0))
    pipe = _row(2, "ddg", "6", (60.0, 61.0, 59.0) if beyond else (50.0, 50.5, 49.5))  # predicted 50 ms
    rows = (base, pipe)

    def fake_run(config: object, **_: object) -> validate.ValidationReport:
        return validate.ValidationReport(rows=rows, summary=summarize(rows), header=(), csv_path=tmp_path / "v.csv",
                                         summary_path=tmp_path / "s.json", report_path=tmp_path / "r.html")

    monkeypatch.setattr(validate, "run", fake_run)
    assert main(["validate", "mlp", "--gpus", "1,2", "--out", str(tmp_path / "v") + "/"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    hint = f"then ddgsim compare-runs {tmp_path / 'v'} {tmp_path / 'v'}-again"
    assert (hint in out) == beyond
    if beyond:
        assert "1 run beyond 5% and their noise" in out


def test_a_validation_csv_with_a_bad_value_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    v1, v2 = _runs(tmp_path)
    text = (Path(v1) / "validation.csv").read_text().splitlines()
    cells = text[1].split(",")
    cells[4] = "abc"  # predicted_ms
    (Path(v1) / "validation.csv").write_text("\n".join([text[0], ",".join(cells), *text[2:]]) + "\n")
    assert main(["compare-runs", v1, v2]) == 2
    err = capsys.readouterr().err
    assert "validation.csv line 2 is not a validation run" in err and "'abc'" in err and len(err.splitlines()) == 1


def _write(tmp_path: Path, name: str, rows: list[Row]) -> str:
    (tmp_path / name).mkdir()
    write_csv(rows, tmp_path / name / "validation.csv")
    return str(tmp_path / name)


@pytest.mark.parametrize(("rows", "message"), [
    ([], "has no runs"),
    ([_row(1, "bp", "", (100.0, 0.0))], "needs positive, finite times"),
    ([_row(1, "bp", "", (100.0, math.nan))], "needs positive, finite times"),
    ([_row(1, "bp", "", (100.0,)), _row(1, "bp", "", (90.0,))], "holds resnet20 b128 K=1 bp [-] twice"),
])
def test_a_run_that_cannot_be_compared_is_refused_in_one_line(rows: list[Row], message: str, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    good = _write(tmp_path, "good", [_row(1, "bp", "", (100.0,))])
    assert main(["compare-runs", good, _write(tmp_path, "bad", rows)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.splitlines()) == 1


def test_runs_of_different_models_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _write(tmp_path, "a", [_row(1, "bp", "", (100.0,))])
    b = _write(tmp_path, "b", [dataclasses.replace(_row(1, "bp", "", (100.0,)), model="mlp")])
    assert main(["compare-runs", a, b]) == 2
    err = capsys.readouterr().err
    assert "run " + a + ": resnet20 at batch 128 on local; run " + b + ": mlp at batch 128 on local" in err


def test_a_binary_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    v1, _ = _runs(tmp_path)
    (tmp_path / "bin.csv").write_bytes(b"\x00\x01\xff\xfe")
    assert main(["compare-runs", v1, str(tmp_path / "bin.csv")]) == 2
    err = capsys.readouterr().err
    assert "bin.csv is not a validation.csv (a text CSV file)" in err and len(err.splitlines()) == 1
