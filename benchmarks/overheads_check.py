"""The executor's overheads in the model, checked on measurements: the same runs predicted with and without.

Run: ``.venv/bin/python benchmarks/overheads_check.py VALIDATE_DIR [VALIDATE_DIR ...] [--csv OUT.csv]``

Each ``VALIDATE_DIR`` is the ``--out`` of a ``ddgsim validate`` run (its plans under ``runs/``
name the profile and the calibrated scenario they were predicted with). Every run is predicted
again twice by the simulator — with the scenario as calibrated (its ``[overheads]``) and with
the overheads taken out — and both are compared with the same measurements: the median
|error| of the iteration time and of the speedup over K = 1 measured in the same round
(:func:`ddgsim.compare.accuracy.speedups`). Nothing is re-run: the two predictions face the
very same executions, so the difference is the model's, not the machine's.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ddgsim.compare.accuracy import speedups  # noqa: E402
from ddgsim.compare.rows import Row  # noqa: E402
from ddgsim.compare.validation_csv import read_csv  # noqa: E402
from ddgsim.predict.event_sim import simulate  # noqa: E402
from ddgsim.predict.overheads import Overheads  # noqa: E402
from ddgsim.predict.scenario import load_scenario  # noqa: E402
from ddgsim.profile.format import load  # noqa: E402


def _key(K: int, schedule: str, split: str, micro: int) -> tuple[int, str, str, int]:
    return K, schedule, split, micro


def repredict(folder: Path) -> list[tuple[Row, float, float]]:
    """(row, predicted with the overheads, predicted without) for every measured run of a validate folder."""
    rows = {_key(r.K, r.schedule, r.split, r.micro_batches): r for r in read_csv(folder / "validation.csv")
            if r.ok and r.runtime == "ddgsim" and r.replicas == 1}
    out = []
    for plan_path in sorted((folder / "runs").glob("*.plan.json")):
        plan = json.loads(plan_path.read_text())
        if plan.get("replicas") not in (None, [1] * len(plan["stages"])):
            continue
        split = [int(c) for c in plan["split"]]
        M = int(plan.get("micro_batches", 1))
        row = rows.get(_key(len(split) + 1, plan["schedule"], ",".join(map(str, split)), M))
        if row is None:
            continue
        profile = load(plan["profile"]["path"])
        with_o = load_scenario(plan["scenario"])
        without = dataclasses.replace(with_o, overheads=Overheads())
        out.append((row, *(simulate(profile, split, sc, plan["schedule"], micro_batches=M).iteration_ms
                           for sc in (with_o, without))))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--csv", type=Path, default=None, help="also write every run's three figures here")
    args = ap.parse_args()
    table = []
    print(f"{'model':<10} {'runs':>4}  {'|time error| median/worst':>27}  {'|speedup error| median/worst':>30}")
    for folder in args.folders:
        got = repredict(folder)
        if not got:
            print(f"{folder}: no measured run to predict again", file=sys.stderr)
            continue
        for label, idx in (("with", 1), ("without", 2)):
            rows = [dataclasses.replace(g[0], predicted_ms=g[idx],
                                        error_pct=100 * (g[idx] - g[0].measured_ms) / g[0].measured_ms) for g in got]
            errs = [abs(r.error_pct) for r in rows]
            ups = [abs(u.error_pct) for u in speedups(rows).values()]
            up = f"{statistics.median(ups):6.1f} % / {max(ups):6.1f} %" if ups else "–"
            print(f"{rows[0].model:<10} {len(rows):>4}  {label:>8} {statistics.median(errs):6.1f} % / "
                  f"{max(errs):6.1f} %  {up:>30}")
            table += [(folder.name, label, r.K, r.schedule, r.split, r.micro_batches, r.predicted_ms, r.measured_ms,
                       r.error_pct) for r in rows]
    if args.csv:
        with args.csv.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["folder", "overheads", "K", "schedule", "split", "micro_batches", "predicted_ms",
                        "measured_ms", "error_pct"])
            w.writerows(table)
        print(f"wrote {args.csv}")


if __name__ == "__main__":
    main()
