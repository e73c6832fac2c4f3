"""Predicted vs measured peak memory per stage: ResNet-20, batch 128, K = 1..3 on this CPU.

Run: ``.venv/bin/python benchmarks/memory_check.py [--out benchmarks/results/memory/resnet20.csv]``

For each schedule (ddg-pipelined; gpipe with 4 micro-batches) and K: the planner's split on the
bundled profile, a real ``ddgsim execute`` of 6 steps (one gloo process per stage, synthetic
data), each stage's measured peak from its metrics (:mod:`ddgsim.execute.memwatch`) and the
memory model's prediction (``ddgsim.predict.memory``: activations with every tensor counted
once, the receive window and the sends). ``before_mib`` is what the model said before it
counted boundary tensors once and the receive window (every unit's saved bytes summed, two
buffers per side), for comparison.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ddgsim.plan.format import load as load_plan  # noqa: E402
from ddgsim.predict.memory import stage_memory  # noqa: E402
from ddgsim.profile.format import Profile  # noqa: E402
from ddgsim.profile.store import bundled_profile  # noqa: E402
from ddgsim.schedule import make_schedule  # noqa: E402

MIB = 2**20


def run_one(profile: Profile, schedule: str, M: int, K: int, steps: int, tmp: Path) -> list[dict[str, object]]:
    plan_path = tmp / f"{schedule}-k{K}.plan.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-m", "ddgsim", "plan", "resnet20", "--gpus", str(K), "--stages", str(K),
                    "--replicas", "1", "--schedule", schedule, "--micro-batches", str(M), "--out", str(plan_path)],
                   env=env, check=True, capture_output=True)
    metrics = tmp / f"{schedule}-k{K}.metrics.json"
    subprocess.run([sys.executable, "-m", "ddgsim", "execute", str(plan_path), "--steps", str(steps),
                    "--data", "synthetic", "--no-eval", "--no-progress", "--backend", "gloo", "--metrics",
                    str(metrics)], env=env, check=True, capture_output=True)
    plan = load_plan(plan_path)
    measured = [s["peak_memory_bytes"] for s in json.loads(metrics.read_text())["per_stage"]]
    ranges = [tuple(s.units) for s in plan.stages]
    model = stage_memory(profile, ranges, make_schedule(schedule, K, steps, micro_batches=M))
    rows = []
    for k, ((a, b), mem, got) in enumerate(zip(ranges, model, measured, strict=True)):
        units = profile.units[a:b]
        n_in = profile.units[a - 1].output_bytes if k > 0 else 0
        n_out = units[-1].output_bytes if k < K - 1 else 0
        before = (mem.params + mem.grads + mem.optimizer + mem.stashed_weights
                  + round(mem.in_flight * sum(u.activation_bytes for u in units)) + round(2 * (n_in + n_out) / M))
        rows.append({"schedule": schedule, "M": M, "K": K, "stage": k, "units": f"{a}-{b}",
                     "in_flight": mem.in_flight, "activations_mib": round(mem.activations / MIB, 1),
                     "buffers_mib": round(mem.buffers / MIB, 1),
                     "predicted_mib": round(mem.total / MIB, 1), "measured_mib": round(got / MIB, 1),
                     "error_pct": round(100 * (mem.total - got) / got, 1),
                     "before_mib": round(before / MIB, 1), "before_error_pct": round(100 * (before - got) / got, 1)})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args()
    prof = bundled_profile("resnet20", 128, "cpu", 1)
    assert prof is not None
    profile = prof[1]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for schedule, M in (("ddg-pipelined", 1), ("gpipe", 4)):
            for K in (1, 2, 3):
                rows += run_one(profile, schedule, M, K, args.steps, Path(tmp))
    if args.out:
        with args.out.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()
