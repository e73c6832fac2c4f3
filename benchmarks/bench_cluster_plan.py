"""Benchmark: how the layout planner's cost grows with units and devices, and the cluster plan's wall time.

    python benchmarks/bench_cluster_plan.py [--reps 3] [--out benchmarks/results/cluster-plan]

1. ``python -m ddgsim plan resnet1202 --gpus N --batch-size 32 --scenario cluster-<N/8>x8 --json`` as a
   fresh process (imports, profile load, search, confirmation), N = 64 and 1024: median and spread
   of ``--reps`` runs, and what it chose (K × D, predicted ms, margins over the best pure pipeline and
   pure data parallelism).
2. The search alone (``ddgsim.plan.layouts.search_layouts``, in process) for every bundled profile
   size (resnet20 b128: few units … resnet1202 b32: 606 units) × N = 8, 64, 256, 1024 devices: wall
   time, (K, D) candidates, how many were searched exactly, the best layout (per-stage D_k included)
   and how far it may be from the bound no layout beats.

Everything runs on the bundled profiles (CPU figures), so the plans are shapes, not GPU numbers.
Not part of the test run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from ddgsim.plan.layouts import LayoutResult, search_layouts
from ddgsim.predict.scenario import load_scenario
from ddgsim.profile.store import bundled_profile

PROFILES = [("resnet20", 128), ("resnet56", 128), ("resnet110", 128), ("resnet1202", 32)]
DEVICES = [8, 64, 256, 1024]


def layout_label(stages: int, replicas: list[int] | tuple[int, ...]) -> str:
    """``K=32 x D=2``, or ``K=50 x D_k=1-4`` when the stages' replica counts differ."""
    lo, hi = min(replicas), max(replicas)
    return f"K={stages} x D={hi}" if lo == hi else f"K={stages} x D_k={lo}-{hi}"


def best_label(r: LayoutResult) -> str:
    return layout_label(r.stages, r.replica_counts)


def fresh_plan(devices: int, reps: int) -> dict[str, object]:
    argv = [sys.executable, "-m", "ddgsim", "plan", "resnet1202", "--gpus", str(devices), "--batch-size", "32",
            "--scenario", f"cluster-{devices // 8}x8", "--json"]
    walls, data = [], {}
    for _ in range(reps):
        t0 = time.perf_counter()
        res = subprocess.run(argv, capture_output=True, text=True, check=True)
        walls.append(time.perf_counter() - t0)
        data = json.loads(res.stdout)
    found = data["extra"]["layouts"]
    best, pipe, dp = found["best"], found["pipeline"], found["data_parallel"]
    return {
        "command": " ".join(["python", "-m", "ddgsim", *argv[3:]]),
        "wall_s_median": statistics.median(walls), "wall_s_min": min(walls), "wall_s_max": max(walls),
        "chosen": f"{layout_label(best['stages'], best['replica_counts'])} ({best['mapping']})",
        "iteration_ms": data["predicted"]["iteration_ms"],
        "pipeline": f"K={pipe['stages']}: {pipe['iteration_ms']:.2f} ms" if pipe else None,
        "data_parallel": f"D={dp['replicas']}: {dp['iteration_ms']:.2f} ms" if dp else None,
        "faster_than_pipeline_pct": 100 * (1 - best["iteration_ms"] / pipe["iteration_ms"]) if pipe else None,
        "faster_than_data_parallel_pct": 100 * (1 - best["iteration_ms"] / dp["iteration_ms"]) if dp else None,
        "gap_bound_pct": 100 * found["gap_bound"],
        "bound_ms": found["any_layout_bound_ms"],
        "searched": f"{found['searched']} of {found['candidates']}",
    }


def growth(reps: int) -> list[dict[str, object]]:
    rows = []
    for model, batch in PROFILES:
        found = bundled_profile(model, batch, "cpu", 1)
        if found is None:
            continue
        profile = found[1]
        for n in DEVICES:
            scenario = load_scenario(f"cluster-{n // 8}x8")
            walls = []
            res = None
            for _ in range(reps):
                t0 = time.perf_counter()
                res = search_layouts(profile, scenario, "ddg-pipelined", n)
                walls.append(time.perf_counter() - t0)
            assert res is not None and res.best is not None
            rows.append({"model": model, "units": profile.num_units, "devices": n,
                         "search_s_median": statistics.median(walls), "search_s_max": max(walls),
                         "candidates": res.candidates, "searched": res.searched,
                         "best": best_label(res.best), "iteration_ms": res.best.iteration_ms,
                         "gap_bound_pct": 100 * res.gap})
            print(f"{model:>10} {profile.num_units:4d} units {n:5d} devices: {statistics.median(walls):7.3f} s "
                  f"(max {max(walls):.3f}), {res.searched:3d} of {res.candidates:5d} searched, "
                  f"best {best_label(res.best)}, within {100 * res.gap:.2f}% of the bound", flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", type=Path, help="folder for cluster-plan.json and cluster-plan.md")
    args = ap.parse_args()
    plans = []
    for n in (64, 1024):
        row = fresh_plan(n, args.reps)
        plans.append(row)
        print(json.dumps(row, indent=1), flush=True)
    rows = growth(args.reps)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "cluster-plan.json").write_text(json.dumps({"plans": plans, "growth": rows}, indent=1) + "\n")
        lines = ["| command | wall s (median, min–max) | chosen | ms/iteration | vs best pure pipeline | "
                 "vs pure data parallel | searched | within of the bound |",
                 "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for p in plans:
            lines.append(f"| `{p['command']}` | {p['wall_s_median']:.2f} ({p['wall_s_min']:.2f}–{p['wall_s_max']:.2f}) "
                         f"| {p['chosen']} | {p['iteration_ms']:.2f} | {p['pipeline']}, "
                         f"{p['faster_than_pipeline_pct']:.1f}% faster | {p['data_parallel']}, "
                         f"{p['faster_than_data_parallel_pct']:.1f}% faster | {p['searched']} | "
                         f"{p['gap_bound_pct']:.2f}% ({p['bound_ms']:.2f} ms) |")
        lines += ["", "| model | units | devices | search s (median) | (K, D) candidates | searched exactly | best | "
                  "within of the bound |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {r['model']} | {r['units']} | {r['devices']} | {r['search_s_median']:.3f} | {r['candidates']} | "
                  f"{r['searched']} | {r['best']} | {r['gap_bound_pct']:.2f}% |" for r in rows]
        (args.out / "cluster-plan.md").write_text("\n".join(lines) + "\n")
        print(f"wrote {args.out / 'cluster-plan.json'} and {args.out / 'cluster-plan.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
