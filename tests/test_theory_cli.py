"""``ddgsim stepsize`` and ``ddgsim theory-slack``."""

from __future__ import annotations

import argparse
import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from ddgsim import theory
from ddgsim.commands import stepsize, theory_slack
from ddgsim.errors import UserError


def parse(cmd: str, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    stepsize.add_parser(sub)
    theory_slack.add_parser(sub)
    return parser.parse_args([cmd, *argv])


def test_stepsize_json(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse("stepsize", ["--stages", "4", "--L", "2", "--M", "1", "--T", "1000", "--f0-gap", "3", "--json"])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["max_step"] == 0.5
    assert [r["staleness"] for r in out["per_stage"]] == [3, 2, 1, 0]
    assert [r["step_limit"] for r in out["per_stage"]] == pytest.approx(stepsize.stage_step_limits(4, 2.0))
    assert out["stable_step"] == pytest.approx(theory.levin_may_limit(3) / 2)
    assert out["M_K"] == theory.m_k(4, 1.0) == 119.0
    assert out["bound_at_max_step"] == pytest.approx(2 * 3 / (0.5 * 1000) + 0.5 * 2 * 119)
    assert out["bound_at_best_step"] <= out["bound_at_max_step"]


def test_stepsize_k1_text(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse("stepsize", ["--stages", "1", "--T", "10"])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "γ ≤ 1/L = 1" in text and "2.000000" in text


def test_stage_step_limits() -> None:
    lim = stepsize.stage_step_limits(3, 4.0)
    assert lim == pytest.approx([(math.sqrt(5) - 1) / 2 / 4, 1 / 4, 2 / 4])


@pytest.mark.parametrize("argv", [
    ["--stages", "0"], ["--stages", "2", "--L", "0"], ["--stages", "2", "--L", "-1"],
    ["--stages", "2", "--M", "-0.1"], ["--stages", "2", "--T", "0"], ["--stages", "2", "--L", "nan"],
])
def test_stepsize_bad_input(argv: list[str]) -> None:
    args = parse("stepsize", argv)
    with pytest.raises(UserError):
        args.func(args)


def test_stepsize_cli_exit_code_and_one_line_error() -> None:
    proc = subprocess.run([sys.executable, "-m", "ddgsim", "stepsize", "--stages", "0"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--stages" in proc.stderr
    # add_parser must not import torch
    code = "import sys, argparse; from ddgsim.commands import stepsize, theory_slack; " \
           "sub = argparse.ArgumentParser().add_subparsers(); stepsize.add_parser(sub); " \
           "theory_slack.add_parser(sub); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_theory_slack_k3(tmp_path: Path) -> None:
    out = tmp_path / "slack.csv"
    args = parse("theory-slack", ["--out", str(out), "--K-max", "3", "--iterations", "40", "--seeds", "2"])
    assert args.func(args) == 0
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == theory_slack.COLUMNS
    assert {int(r["K"]) for r in rows} == {1, 2, 3}
    for r in rows:
        assert float(r["slack_ratio"]) >= 1.0, r
    ours = {(r["K"], r["problem"]): float(r["bound_value"]) for r in rows if r["bound"] == "fixed_step_avg"}
    paper = {(r["K"], r["problem"]): float(r["bound_value"]) for r in rows
             if r["bound"] == "fixed_step_avg_paper_mk"}
    assert all(ours[key] <= paper[key] for key in ours)


def test_theory_slack_bad_input(tmp_path: Path) -> None:
    for argv in (["--K-max", "0"], ["--iterations", "3"]):
        args = parse("theory-slack", ["--out", str(tmp_path / "x.csv"), *argv])
        with pytest.raises(UserError):
            args.func(args)
    args = parse("theory-slack", ["--out", str(tmp_path / "missing" / "x.csv")])
    with pytest.raises(UserError):
        args.func(args)
    assert not (tmp_path / "x.csv").exists()
