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

from ddgsim.commands import stepsize, theory_slack
from ddgsim.errors import UserError


def parse(cmd: str, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    stepsize.add_parser(sub)
    theory_slack.add_parser(sub)
    return parser.parse_args([cmd, *argv])


def test_stepsize_json(capsys: pytest.CaptureFixture[str]) -> None:
    """K = 4, L = 2, M = V = 1, T = 1000, f(w⁰) − f* = 3; every figure worked out here by hand
    from docs/theory.md, not by calling the functions the command uses."""
    args = parse("stepsize", ["--stages", "4", "--L", "2", "--M", "1", "--T", "1000", "--f0-gap", "3", "--json"])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["max_step"] == 0.5  # γ ≤ 1/L
    assert [r["staleness"] for r in out["per_stage"]] == [3, 2, 1, 0]  # d_k = K − 1 − k
    # Levin–May: x_{t+1} = x_t − γL·x_{t−τ} is stable iff γL < 2cos(τπ/(2τ+1)); per stage τ = 3, 2, 1, 0
    limits = [2 * math.cos(tau * math.pi / (2 * tau + 1)) / 2 for tau in (3, 2, 1, 0)]
    assert limits[1] == pytest.approx((math.sqrt(5) - 1) / 2 / 2)  # τ = 2: 2cos(2π/5) = (√5 − 1)/2
    assert [r["step_limit"] for r in out["per_stage"]] == pytest.approx(limits)
    assert out["stable_step"] == pytest.approx(limits[0])  # the most delayed stage sets it
    s_k = 3**2 + 2**2 + 1**2 + 0**2  # Σ_k d_k² = 14
    noise = (1 + (1 + 1) * (4 - 1)) * 1  # (1 + (1+σ)(K−1))·V, σ = 1
    delay = 2 * 1 * 4 * 1 * s_k  # 2σ·K·M·S_K
    assert out["M_K"] == noise + delay == 119
    gamma = 0.5
    assert out["bound_at_max_step"] == pytest.approx(2 * 3 / (gamma * 1000) + gamma * 2 * 119)
    # the best constant step minimises 2Δ/(γT) + γLM_K: γ* = sqrt(2Δ/(T·L·M_K)), capped at 1/L
    best = min(math.sqrt(2 * 3 / (1000 * 2 * 119)), gamma)
    assert out["bound_at_best_step"] == pytest.approx(2 * 3 / (best * 1000) + best * 2 * 119)
    assert out["bound_at_best_step"] < out["bound_at_max_step"]


def test_stepsize_k1_text(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse("stepsize", ["--stages", "1", "--T", "10"])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "γ ≤ 1/L = 1" in text and "2.000000" in text


def test_stage_step_limits() -> None:
    """K = 3, L = 4: τ = 2 → 2cos(2π/5)/L = (√5 − 1)/2/L; τ = 1 → 2cos(π/3)/L = 1/L; τ = 0 → 2/L."""
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
