"""``ddgsim compare-runs``: the same validation run two or more times, side by side.

    python -m ddgsim compare-runs v1 v2 [v3 ...] [--tolerance 6] [--json]

Each configuration measured in every run (matched by ``between_runs.KEY_FIELDS``): its
measured speedup over K = 1 and its measured time in each run, and the floor no prediction can
beat against all of them (:mod:`ddgsim.compare.between_runs`). A validation's noise figure is the
spread of its repeats, minutes apart; a machine whose state changes between runs moves them all
alike, and only another run shows it.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from ddgsim.commands._help import add_command
from ddgsim.errors import UserError


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(subparsers, "compare-runs", help="the same validation run twice or more, side by side",
                    description="Each configuration's measured speedup and time in every run of the same "
                                "validation, and the least worst error any prediction could have had "
                                "against all of them: where runs disagree by more than a tolerance, no "
                                "model meets it in every run.")
    p.add_argument("runs", nargs="+", metavar="DIR",  # one is refused with a message of its own
                   help="validate's --out folders (or their validation.csv), two or more")
    p.add_argument("--tolerance", type=float, default=5.0, metavar="PCT",
                   help="name the configurations whose runs disagree by more than this, and those where no "
                        "predicted time is within it, or the run's noise, of every run (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def _csv(arg: str) -> Path:
    path = Path(arg)
    csv = path / "validation.csv" if path.is_dir() else path
    if not csv.is_file():
        what = "does not exist" if not path.exists() else "has no validation.csv"
        raise UserError(f"run {arg!r} {what} (expected validate's --out folder, or its validation.csv)")
    return csv


def _fmt(values: tuple[float, ...], spec: str) -> str:
    return " ".join(format(v, spec) for v in values) or "-"


def _pct(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.1f}%"


def run(args: argparse.Namespace) -> int:
    from ddgsim.compare.between_runs import across, best_prediction, worst_floors
    from ddgsim.compare.validation_csv import read_csv

    if len(args.runs) < 2:
        raise UserError(f"need two or more runs to compare, got {len(args.runs)}: {args.runs[0]!r}")
    if not (math.isfinite(args.tolerance) and args.tolerance > 0):
        raise UserError(f"--tolerance must be a percentage above 0, got {args.tolerance:g}")
    paths = [_csv(a) for a in args.runs]
    same = [a for i, a in enumerate(args.runs) if any(paths[i].resolve() == q.resolve() for q in paths[:i])]
    if same:
        raise UserError(f"run {same[0]!r} is given twice: compare different runs of one validation")
    matched = across([read_csv(p) for p in paths], args.runs)
    table = matched.table
    up, tm = worst_floors(table)
    over = [a for a in table if a.speedup and a.speedup_floor_pct > args.tolerance]
    over_t = [a for a in table if a.time_floor_pct > args.tolerance]
    within = [a.time_within(args.tolerance) for a in table]
    never = [a for a, iv in zip(table, within, strict=True) if iv is None]
    per_run = [max((abs(a.speedup_error_pct[i]) for a in table if a.speedup), default=math.nan)
               for i in range(len(args.runs))]
    if args.json:
        out: dict[str, Any] = {
            "runs": list(args.runs), "tolerance_pct": args.tolerance, "left_out": matched.left_out,
            "speedup_worst_floor_pct": None if math.isnan(up) else up, "time_worst_floor_pct": tm,
            "predicted_speedup_worst_error_pct": [None if math.isnan(x) else x for x in per_run],
            "configurations": [{"label": a.label, "measured_ms": list(a.measured_ms),
                                "time_floor_pct": a.time_floor_pct, "noise_pct": list(a.noise_pct),
                                "time_within_tolerance_or_noise_ms": _interval(iv),
                                "speedup": list(a.speedup),
                                "speedup_predicted": list(a.speedup_predicted),
                                "speedup_floor_pct": a.speedup_floor_pct if a.speedup else None,
                                "best_speedup_prediction": best_prediction(a.speedup) if a.speedup else None}
                               for a, iv in zip(table, within, strict=True)]}
        print(json.dumps(out, indent=1))
        return 0
    from ddgsim.commands._table import Column, console, print_tables

    ms = ".1f" if min(m for a in table for m in a.measured_ms) >= 10 else ".3f"
    cols = [Column("configuration", "left"), Column("speedup, each run", part=1), Column("floor", part=1),
            Column("ms, each run", part=2), Column("floor", part=2), Column(f"{args.tolerance:g}%/noise", part=2)]
    rows = [[a.label, _fmt(a.speedup, ".3f"), _pct(a.speedup_floor_pct), _fmt(a.measured_ms, ms),
             _pct(a.time_floor_pct), "no" if iv is None else "yes"] for a, iv in zip(table, within, strict=True)]
    c = console()
    print_tables(c, f"{len(args.runs)} runs of one validation", cols, rows)
    notes = ["floor: (max - min) / (max + min), the best worst-case error any one prediction can have over the runs",
             f"{args.tolerance:g}%/noise: whether one predicted time is within {args.tolerance:g}% or the run's own "
             "noise, whichever is larger, of every run's measured time"]
    if matched.left_out:
        notes.append(f"left out, not measured in every run: {', '.join(matched.left_out)}")
    lines = [f"speedups: largest floor {_pct(up)}"
             + (f" ({_count(over)} above {args.tolerance:g}%: {', '.join(a.label for a in over)})" if over else ""),
             f"the model's worst speedup error, run by run: {', '.join(_pct(x) for x in per_run)}",
             f"times: largest floor {_pct(tm)}"
             + (f" ({_count(over_t)} above {args.tolerance:g}%: {', '.join(a.label for a in over_t)})" if over_t else ""),
             f"no predicted time within {args.tolerance:g}% or the run's own noise of every run: "
             + (f"{_count(never)} ({', '.join(a.label for a in never)})" if never else "none")]
    for line in notes + lines:
        c.print(line, highlight=False, markup=False)
    return 0


def _interval(iv: tuple[float, float] | None) -> list[float] | None:
    return None if iv is None else [iv[0], iv[1]]


def _count(items: list[Any]) -> str:
    return f"{len(items)} configuration{'s' if len(items) != 1 else ''}"
