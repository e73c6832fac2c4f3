"""Measured training speed of the executor: ResNet-110, batch 128, synthetic data, this machine.

Run: ``.venv/bin/python benchmarks/bench_executor.py [--steps 6] [--warmup 2] [--repeats 3]``

Configurations (each a real ``ddgsim execute`` run, ``--no-eval``):

* ``bp`` K=1 with 1 thread, and with 2 threads (one process);
* ``ddg`` and ``ddg-pipelined`` K=2, one thread per stage process, each at the split
  the planner picks for it on a profile of THIS machine (the bundled one when its
  fingerprint matches, else measured now and cached) and the ``cpu-2core`` scenario.

A run's step time is, per iteration, the gap between the moments the slowest stage
finished consecutive iterations (:func:`ddgsim.execute.measure.step_times`, as
``validate``); its figure is the median over the iterations after ``--warmup``; the
reported figure is the median over ``--repeats`` runs (interleaved), as samples/s,
with the speedup over BP with 1 thread and the prediction error. The machine is
shared: the load average is printed before and after. Beside each measurement: the
SimPy model's prediction of the same plan on the same profile and scenario (1-thread
profile, so no prediction for the 2-thread run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from itertools import accumulate
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ddgsim.plan.format import Plan  # noqa: E402
from ddgsim.profile import format as profile_mod  # noqa: E402

SCENARIO = "cpu-2core"


def this_machine_profile() -> profile_mod.Profile:
    from ddgsim.profile.store import get_profile

    prof, path, source = get_profile("resnet110", 128, this_machine=True)
    print(f"profile: {path} ({source})")
    return prof


def balanced_split(costs: list[float]) -> int:
    """Unit index u that minimises max(sum(costs[:u]), sum(costs[u:]))."""
    pre = list(accumulate(costs))
    total = pre[-1]
    return min(range(1, len(costs)), key=lambda u: max(pre[u - 1], total - pre[u - 1]))


def write_plan(d: Path, schedule: str, split: list[int], n_units: int) -> Path:
    path = d / f"{schedule}-k{len(split) + 1}-{'-'.join(map(str, split)) or 'all'}.json"
    Plan.for_split(model="resnet110", split=split, num_units=n_units, schedule=schedule, batch_size=128).save(path)
    return path


def predicted_samples_per_s(prof: profile_mod.Profile, plan: Path, threads: int) -> float | None:
    """The simulator's prediction for ``plan`` (profile measured with 1 thread)."""
    if threads != 1:
        return None
    from ddgsim.plan import format as plan_file
    from ddgsim.predict.event_sim import simulate
    from ddgsim.predict.scenario import load_scenario

    p = plan_file.load(plan)
    res = simulate(prof, p.split, load_scenario(SCENARIO), p.schedule,
                   devices=[s.device for s in p.stages])
    return res.samples_per_s


def run_once(plan: Path, steps: int, threads: int, warmup: int, metrics: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
    subprocess.run([sys.executable, "-m", "ddgsim", "execute", str(plan), "--steps", str(steps), "--data",
                    "synthetic", "--threads", str(threads), "--no-eval", "--no-progress", "--backend", "gloo",
                    "--metrics", str(metrics)],
                   cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    from ddgsim.execute.measure import measured_step_ms

    m: dict[str, Any] = json.loads(metrics.read_text())
    return 128 / (measured_step_ms(m, warmup) / 1e3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from ddgsim.plan import search as planner
    from ddgsim.predict.scenario import load_scenario

    prof = this_machine_profile()
    costs = [u.forward_ms + u.backward_ms for u in prof.units]
    best = {s: planner.search(prof, load_scenario(SCENARIO), s, 2).best for s in ("ddg", "ddg-pipelined")}
    cut = {s: c.split if c is not None else [balanced_split(costs)] for s, c in best.items()}
    print(f"load average before: {os.getloadavg()}; K=2 splits (planner, {SCENARIO}): {cut}")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        configs = [
            ("bp K=1, 1 thread", write_plan(d, "bp", [], len(costs)), 1),
            ("bp K=1, 2 threads", write_plan(d, "bp", [], len(costs)), 2),
            ("ddg K=2", write_plan(d, "ddg", cut["ddg"], len(costs)), 1),
            ("ddg-pipelined K=2", write_plan(d, "ddg-pipelined", cut["ddg-pipelined"], len(costs)), 1),
        ]
        results: dict[str, list[float]] = {name: [] for name, _, _ in configs}
        for rep in range(args.repeats):
            for name, plan, threads in configs:
                sps = run_once(plan, args.steps, threads, args.warmup, d / "m.json")
                results[name].append(sps)
                print(f"  repeat {rep}: {name:<20} {sps:7.2f} samples/s", flush=True)
        base = statistics.median(results[configs[0][0]])
        print(f"load average after: {os.getloadavg()}")
        print(f"{'config':<20} {'samples/s (median)':>18} {'range':>15} {'speedup':>8} {'predicted':>10} {'error':>7}")
        for name, plan, threads in configs:
            med = statistics.median(results[name])
            pred = predicted_samples_per_s(prof, plan, threads)
            spread = f"{min(results[name]):.1f}-{max(results[name]):.1f}"
            err = "-" if pred is None else f"{100 * (pred - med) / med:+.1f}%"
            print(f"{name:<20} {med:>18.2f} {spread:>15} {med / base:>8.2f} "
                  f"{'-' if pred is None else f'{pred:.2f}':>10} {err:>7}")


if __name__ == "__main__":
    main()
