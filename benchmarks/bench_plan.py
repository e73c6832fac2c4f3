"""Benchmark: wall time of ``python -m ddgsim plan`` as a fresh process, and the planned gain.

    python benchmarks/bench_plan.py [--reps 5]

Reports the median wall time (fresh interpreter each run, so imports count) of

* ``plan resnet110 --gpus 4`` on the bundled profile (target: < 2 s here);
* ``plan resnet1202 --gpus 8`` on the bundled profile if there is one (batch 128 or 32), else on a
  ResNet-1202-shaped profile built from ResNet-110's measured block costs
  (3 stem units, 600 blocks, 3 head units) — said in the output;

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

from ddgsim import profile as profile_format
from ddgsim.profile_store import find_profile


def resnet1202_like(p110: profile_format.Profile) -> profile_format.Profile:
    """3 stem units + 200 blocks per group + 3 head units, each block copied from the
    ResNet-110 block of the same group (ResNet-1202 = 6·200+2 layers)."""
    units = p110.units
    stem, blocks, head = units[:3], units[3:-3], units[-3:]
    per = len(blocks) // 3
    groups = [blocks[i * per:(i + 1) * per] for i in range(3)]
    new = list(stem)
    for g in groups:
        for i in range(200):
            src = g[min(i, len(g) - 1)] if i < len(g) else g[1 + (i % (len(g) - 1))]
            new.append(profile_format.UnitProfile(**{**src.__dict__, "name": f"{src.name.split('.')[0]}.{i}"}))
    new += list(head)
    return profile_format.Profile(**{**p110.__dict__, "model": "resnet1202-like", "units": new,
                                     "whole_model_ms": sum(u.compute_ms for u in new),
                                     "meta": {"synthetic": "ResNet-1202 shape from ResNet-110 block costs"}})


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
    cases: list[tuple[str, list[str]]] = [("resnet110 --gpus 4", ["plan", "resnet110", "--gpus", "4", "--json"])]
    tmp = Path(tempfile.mkdtemp())
    p1202 = next((b for b in (128, 32) if find_profile("resnet1202", b) is not None), None)
    if p1202 is not None:
        cases.append((f"resnet1202 --gpus 8 --batch-size {p1202} (bundled)",
                      ["plan", "resnet1202", "--gpus", "8", "--batch-size", str(p1202), "--json"]))
    else:
        synth = tmp / "resnet1202-like.json"
        resnet1202_like(profile_format.load(p110)).save(synth)
        cases.append(("resnet1202-like --gpus 8 (synthetic profile)", ["plan", "--profile", str(synth), "--gpus", "8", "--json"]))
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
