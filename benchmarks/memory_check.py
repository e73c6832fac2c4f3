"""Predicted vs measured peak memory per stage: ResNet-20, batch 128, ddg-pipelined K = 1..3 on this CPU.

Run: ``.venv/bin/python benchmarks/memory_check.py [--out benchmarks/results/memory/resnet20.csv]``

For each K: the planner's split on the bundled profile, a real ``ddgsim execute`` of 6 steps
(one gloo process per stage, synthetic data), each stage's measured peak from its metrics
(:mod:`ddgsim.execute.memwatch`), the simulator's prediction (``ddgsim.predict.memory``), and the
part of the prediction that counts one tensor twice: a unit boundary whose tensor the producer
saves as its output *and* the consumer saves as its input (a ReLU saving its result, the next
convolution its input). The saved storages are found as the profiler finds them (saved-tensor
hooks), on the model at the same batch; the in-flight count of each stage is the memory model's.
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

import torch  # noqa: E402

from ddgsim.models.registry import build_model, get_spec  # noqa: E402
from ddgsim.plan.format import load as load_plan  # noqa: E402
from ddgsim.predict.memory import stage_memory  # noqa: E402
from ddgsim.profile.measure import _count_saved, _state_ptrs  # noqa: E402
from ddgsim.profile.store import bundled_profile  # noqa: E402
from ddgsim.profile.units import split_units  # noqa: E402
from ddgsim.schedule import make_schedule  # noqa: E402

MIB = 2**20


def boundary_saves(model_name: str, batch: int) -> list[tuple[int, int]]:
    """Per unit: (bytes of its input among what it saves, bytes of its output among what it saves)."""
    spec = get_spec(model_name)
    model = build_model(spec).train()
    units = split_units(model, spec.io, batch_size=2)
    x = spec.io.example_input(batch, torch.Generator().manual_seed(0))
    out_rows = []
    for i, u in enumerate(units):
        saved: dict[int, int] = {}
        x_in = x.detach().requires_grad_(i > 0)
        with _count_saved(_state_ptrs(u.module), saved):
            y = u.module(x_in)
        out_rows.append((saved.get(x_in.untyped_storage().data_ptr(), 0), saved.get(y.untyped_storage().data_ptr(), 0)))
        x = y.detach()
    return out_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args()
    torch.set_num_threads(1)
    prof = bundled_profile("resnet20", 128, "cpu", 1)
    assert prof is not None
    profile = prof[1]
    saves = boundary_saves("resnet20", 128)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for K in (1, 2, 3):
            plan_path = Path(tmp) / f"k{K}.plan.json"
            env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
            subprocess.run([sys.executable, "-m", "ddgsim", "plan", "resnet20", "--gpus", str(K), "--stages", str(K),
                            "--replicas", "1", "--schedule", "ddg-pipelined", "--out", str(plan_path)],
                           env=env, check=True, capture_output=True)
            metrics = Path(tmp) / f"k{K}.metrics.json"
            subprocess.run([sys.executable, "-m", "ddgsim", "execute", str(plan_path), "--steps", str(args.steps),
                            "--data", "synthetic", "--no-eval", "--no-progress", "--backend", "gloo", "--metrics",
                            str(metrics)], env=env, check=True, capture_output=True)
            plan = load_plan(plan_path)
            measured = [s["peak_memory_bytes"] for s in json.loads(metrics.read_text())["per_stage"]]
            ranges = [tuple(s.units) for s in plan.stages]
            model = stage_memory(profile, ranges, make_schedule("ddg-pipelined", K, args.steps))
            for k, ((a, b), mem, got) in enumerate(zip(ranges, model, measured, strict=True)):
                twice = sum(min(saves[i - 1][1], saves[i][0]) for i in range(a + 1, b)) * mem.in_flight
                rows.append({"K": K, "stage": k, "units": f"{a}-{b}", "in_flight": mem.in_flight,
                             "predicted_mib": round(mem.total / MIB, 1), "measured_mib": round(got / MIB, 1),
                             "error_pct": round(100 * (mem.total - got) / got, 1),
                             "counted_twice_mib": round(twice / MIB, 1),
                             "error_without_it_pct": round(100 * (mem.total - twice - got) / got, 1)})
                print(rows[-1], flush=True)
    if args.out:
        with args.out.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()
