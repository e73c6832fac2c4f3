"""Benchmark: wall time of ``python -m ddgsim plan`` as a fresh process, and the planned gain.

    python benchmarks/bench_plan.py [--reps 5]

Reports the median wall time (fresh interpreter each run, so imports count) of the pure-pipeline
planner (``--replicas 1``: every K, both baselines confirmed in SimPy; the K × D search has its own
benchmark, ``bench_cluster_plan.py``):

* ``plan resnet110 --gpus 4`` on the bundled profile (target: < 2 s here);
* ``plan resnet1202 --gpus 8`` on the bundled profile if there is one (batch 128 or 32), else on a
  ResNet-1202-shaped profile built from ResNet-110's measured block costs
  (``bench_sim.resnet1202_like``) — said in the output;

and the predicted gain of the planned split over the authors' even split for each.
Not part of the test run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ddgsim.profile.store import find_profile


def time_command(argv: list[str], reps: int) -> tuple[float, list[float], dict]:
    walls = []
    out = ""
    for _ in range(reps):
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "ddgsim", *argv], capture_output=True, text=True, check=True)
        walls.append(time.perf_counter() - t0)
        out = res.stdout
    return statistics.median(walls), walls, json.loads(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    rows = []
    p110 = find_profile("resnet110", 128)
    assert p110 is not None, "bundled resnet110 profile missing"
    cases: list[tuple[str, list[str]]] = [("resnet110 --gpus 4", ["plan", "resnet110", "--gpus", "4", "--replicas", "1", "--json"])]
    tmp = Path(tempfile.mkdtemp())
    p1202 = next((b for b in (128, 32) if find_profile("resnet1202", b) is not None), None)
    if p1202 is not None:
        cases.append((f"resnet1202 --gpus 8 --batch-size {p1202} (bundled)",
                      ["plan", "resnet1202", "--gpus", "8", "--batch-size", str(p1202), "--replicas", "1", "--json"]))
    else:
        from bench_sim import (
            resnet1202_like,  # the same synthetic profile the simulator benchmark uses
        )

        synth = tmp / "resnet1202-like.json"
        resnet1202_like()[0].save(synth)
        cases.append(("resnet1202-like --gpus 8 (synthetic profile)", ["plan", "--profile", str(synth), "--gpus", "8", "--replicas", "1", "--json"]))
    for label, argv in cases:
        med, walls, plan = time_command(argv, args.reps)
        even = plan["extra"]["baselines"]["even"]
        rows.append((label, med, walls, plan["split"], plan["predicted"]["iteration_ms"], even["iteration_ms"], even["gap_pct"]))
    print(f"{'command':48} {'median s':>9} {'runs (s)':>30} {'planned ms':>11} {'even ms':>10} {'even slower by':>15}")
    for label, med, walls, _split, ms, even_ms, gap in rows:
        runs = ",".join(f"{w:.2f}" for w in walls)
        print(f"{label:48} {med:9.2f} {runs:>30} {ms:11.1f} {even_ms:10.1f} {gap:14.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
