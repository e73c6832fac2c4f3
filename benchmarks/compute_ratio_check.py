"""Each execution's compute speed, read back from a validate folder's kept metrics files.

Run: ``.venv/bin/python benchmarks/compute_ratio_check.py VALIDATE_DIR [VALIDATE_DIR ...] [--write]``

``ddgsim validate`` records every execution's compute ratio (its stages' measured F + B + U time
per iteration over the busy time the prediction gives them, ``compute_ratio_all``) since
2026-12-04; for a folder measured before, this reads the same figure from the metrics files under
``runs/`` (``NAME.rR.metrics.json``, the plan's prediction inside) with the same functions
(:func:`ddgsim.compare.execution.measured_busy`, :func:`ddgsim.compare.rounds.compute_ratio`),
dropping the gaps validate dropped (:func:`ddgsim.compare.options.run_length` on the row's
measured time; K gaps for long steps) and the same gate (runs whose profile compute is under
:data:`~ddgsim.compare.rounds.MIN_COMPUTE_SHARE` of the predicted busy time have none), and prints
the summary's lines. A row re-measured for
steal (``redone`` > 0) may keep a metrics file of another execution than the one kept, and is left
without. ``--write`` rewrites the folder's ``validation.csv`` with the column filled in.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ddgsim.compare.accuracy import summarize  # noqa: E402
from ddgsim.compare.execution import measured_busy  # noqa: E402
from ddgsim.compare.options import Options, run_length  # noqa: E402
from ddgsim.compare.rounds import MIN_COMPUTE_SHARE, compute_ratio, compute_share  # noqa: E402
from ddgsim.compare.rows import Row  # noqa: E402
from ddgsim.compare.selection import RunSpec  # noqa: E402
from ddgsim.compare.validation_csv import read_csv, write_csv  # noqa: E402
from ddgsim.predict.scenario import load_scenario  # noqa: E402
from ddgsim.profile.format import load  # noqa: E402


def run_name(r: Row) -> str:
    """The run's file stem under ``runs/``."""
    return RunSpec(stages=r.K, schedule=r.schedule, split=tuple(int(x) for x in r.split.split(",") if x),
                   label=r.label, micro_batches=r.micro_batches, runtime=r.runtime, replicas=r.replicas).name


def ratios(folder: Path, r: Row) -> tuple[float, ...]:
    if not r.ok or r.runtime != "ddgsim" or r.redone or r.replicas != 1:
        return ()
    plan_path = folder / "runs" / f"{run_name(r)}.plan.json"
    if not plan_path.is_file():  # a folder kept without its runs/ (as the committed results)
        return ()
    plan = json.loads(plan_path.read_text())
    profile, scenario = load(plan["profile"]["path"]), load_scenario(plan["scenario"])
    split = [int(c) for c in plan["split"]]
    if compute_share(profile, split, scenario, r.micro_batches, None) < MIN_COMPUTE_SHARE:
        return ()  # as validate: the executor's fixed costs are too large a share of the busy time
    _, warm = run_length(r.measured_ms, r.K, Options(stages=[r.K], schedules=[r.schedule], steps=min(r.steps, 12)))
    out = []
    for rep in range(1, r.repeats + 1):
        metrics = json.loads((folder / "runs" / f"{run_name(r)}.r{rep}.metrics.json").read_text())
        ratio = compute_ratio(measured_busy(metrics, warm), metrics["predicted"]["busy_ms"])
        if ratio is None:
            return ()
        out.append(ratio)
    return tuple(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--write", action="store_true", help="rewrite each validation.csv with compute_ratio_all")
    args = ap.parse_args()
    for folder in args.folders:
        rows = [dataclasses.replace(r, compute_ratio_all=r.compute_ratio_all or ratios(folder, r))
                for r in read_csv(folder / "validation.csv")]
        print(f"== {folder}")
        for line in summarize(rows).lines():
            print(line)
        if args.write:
            write_csv(rows, folder / "validation.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
