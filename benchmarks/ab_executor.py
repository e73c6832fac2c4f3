"""Executor throughput, two code trees side by side: each plan run by tree A and tree B in turn, repeated.

Run: ``.venv/bin/python benchmarks/ab_executor.py --a OLD_CHECKOUT --b . --plans p1.json p2.json --rounds 5``

Each run is a real ``ddgsim execute --data synthetic --no-eval`` (one process per stage, gloo, 1
thread each) with the tree's own code first on ``PYTHONPATH``; its figure is the median step time
of its metrics (the slowest stage's gap between iterations, after the first ``--warmup``). Runs
alternate A, B, A, B … so the machine's speed drift falls on both; the ratio B/A is taken round by
round and its median reported with the spread.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ddgsim.execute.measure import measured_step_ms


def run(tree: Path, plan: Path, steps: int, warmup: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        metrics = Path(tmp) / "m.json"
        env = {**os.environ, "PYTHONPATH": str(tree.resolve()), "OMP_NUM_THREADS": "1"}
        subprocess.run([sys.executable, "-m", "ddgsim", "execute", str(plan.resolve()), "--steps", str(steps), "--data",
                        "synthetic", "--no-eval", "--no-progress", "--backend", "gloo", "--metrics", str(metrics)],
                       env=env, check=True, capture_output=True, cwd=tree)
        data = json.loads(metrics.read_text())
    return measured_step_ms(data, warmup)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", type=Path, required=True)
    ap.add_argument("--b", type=Path, required=True)
    ap.add_argument("--plans", type=Path, nargs="+", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=14)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--csv", type=Path, default=None)
    args = ap.parse_args()
    rows = []
    for r in range(args.rounds):
        for plan in args.plans:
            a = run(args.a, plan, args.steps, args.warmup)
            b = run(args.b, plan, args.steps, args.warmup)
            rows.append({"round": r + 1, "plan": plan.name, "a_ms": round(a, 2), "b_ms": round(b, 2),
                         "b_over_a": round(b / a, 4)})
            print(rows[-1], flush=True)
    for plan in args.plans:
        ratios = [x["b_over_a"] for x in rows if x["plan"] == plan.name]
        a_ms = [x["a_ms"] for x in rows if x["plan"] == plan.name]
        b_ms = [x["b_ms"] for x in rows if x["plan"] == plan.name]
        print(f"{plan.name}: A median {statistics.median(a_ms):.1f} ms, B median {statistics.median(b_ms):.1f} ms, "
              f"B/A median {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f}, "
              f"{len(ratios)} rounds)")
    if args.csv:
        with args.csv.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()
