"""Simulator and max-plus-model speed (not a test).

Run: ``.venv/bin/python benchmarks/bench_sim.py [--iterations 1000] [--splits 20000]``

* SimPy: events per second and wall time to simulate N iterations of a ResNet-1202-like
  model (3 + 600 + 3 units) on K = 8 stages, for each DDG schedule.
  Wall and CPU time are both printed: on a shared machine CPU time is the steadier figure.
* Analytic: split evaluations per second of ``ddgsim.predict.max_plus.periods`` (vectorised over
  splits) for bp, ddg and ddg-pipelined at K = 8, and of building the costs.

The ResNet-1202 profile is synthetic: each residual block of stage g (g = 1, 2, 3) costs
the median measured ResNet-110 block of that stage (``ddgsim/scenarios/profiles/
resnet110-b128-cpu-t1.json``, same widths and feature-map sizes), the stem and head
copy ResNet-110's. Without that file, fixed figures of the same order are used.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from ddgsim.plan.split import even_split
from ddgsim.predict.event_sim import simulate
from ddgsim.predict.max_plus import costs_for_splits, periods
from ddgsim.predict.scenario import load_scenario
from ddgsim.profile import format as profile_format
from ddgsim.profile.format import Profile, UnitProfile

REAL = Path(__file__).resolve().parent.parent / "ddgsim/scenarios/profiles/resnet110-b128-cpu-t1.json"


def resnet1202_like() -> tuple[Profile, str]:
    if REAL.is_file():
        base = profile_format.load(REAL)
        head, blocks, tail = base.units[:3], base.units[3:-3], base.units[-3:]
        groups = [blocks[i * 18:(i + 1) * 18] for i in range(3)]
        source = f"scaled from {REAL.name}"
    else:
        def unit(name: str, f: float, b: float, out: int, par: int, act: int) -> UnitProfile:
            return UnitProfile(name=name, forward_ms=f, backward_ms=b, output_bytes=out, param_bytes=par, activation_bytes=act)
        head = [unit("conv1", 4, 3, 8 << 20, 1728, 1 << 20), unit("bn1", 4, 5, 8 << 20, 128, 8 << 20),
                unit("relu", 1, 1, 8 << 20, 0, 8 << 20)]
        groups = [[unit("b", 25 / 2**g, 45 / 2**g, (8 << 20) >> g, 18688 << (2 * g), 40 << 20 >> g)] for g in range(3)]
        tail = [unit("avgpool", 0.2, 0.5, 32768, 0, 0), unit("flatten", 0, 0, 32768, 0, 0), unit("fc", 0, 0, 5120, 2600, 32768)]
        source = "fixed synthetic figures (resnet110 profile absent)"
    units = list(head)
    for g, group in enumerate(groups):
        med = {k: statistics.median(getattr(u, k) for u in group) for k in ("forward_ms", "backward_ms")}
        rep = group[len(group) // 2]
        for i in range(200):
            units.append(UnitProfile(name=f"layer{g + 1}.{i}", forward_ms=med["forward_ms"], backward_ms=med["backward_ms"],
                                     output_bytes=rep.output_bytes, param_bytes=rep.param_bytes,
                                     activation_bytes=rep.activation_bytes))
    units += tail
    prof = Profile(model="resnet1202-synthetic", batch_size=128, input_shape=[3, 32, 32], device="cpu", threads=1,
                   dtype="float32", units=units, whole_model_ms=sum(u.compute_ms for u in units))
    return prof, source


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--splits", type=int, default=20000)
    ap.add_argument("--scenario", default="nvlink-8gpu")
    args = ap.parse_args()
    prof, source = resnet1202_like()
    K = 8
    scenario = load_scenario(args.scenario)
    split = even_split(prof.num_units, K)
    print(f"profile: {prof.num_units} units, {prof.sum_ms:.0f} ms per batch ({source}); K = {K}, "
          f"scenario {scenario.name}, split {split}")
    for name in ("ddg", "ddg-pipelined", "bp"):
        t0, c0 = time.perf_counter(), time.process_time()
        r = simulate(prof, split, scenario, name, iterations=args.iterations)
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"simpy {name:14s} {args.iterations} iterations: {r.events} events in {r.wall_s:.2f} s wall "
              f"({r.events / r.wall_s:,.0f} events/s); whole simulate() {total:.2f} s wall, {cpu:.2f} s CPU; "
              f"iteration {r.iteration_ms:.1f} ms, speedup vs 1 device {r.speedup_vs_1_device:.2f}")
    rng = np.random.default_rng(0)
    cuts = np.sort(np.stack([rng.choice(np.arange(1, prof.num_units), K - 1, replace=False)
                             for _ in range(args.splits)]), axis=1)
    c0 = time.process_time()
    costs = costs_for_splits(prof, cuts, scenario)
    build = time.process_time() - c0
    print(f"max-plus costs for {args.splits} splits: {build * 1e3:.1f} ms CPU ({args.splits / max(build, 1e-9):,.0f} splits/s)")
    for name in ("bp", "ddg", "ddg-pipelined"):
        periods(name, costs.row(0))  # compile the program once
        walls, cpus = [], []
        for _ in range(3):
            t0, c0 = time.perf_counter(), time.process_time()
            periods(name, costs)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
        wall, cpu = statistics.median(walls), statistics.median(cpus)
        one = costs.row(1)
        c0 = time.process_time()
        for _ in range(20):
            periods(name, one)
        single = (time.process_time() - c0) / 20
        print(f"max-plus {name:14s}: {args.splits / cpu:,.0f} splits/s per CPU second "
              f"({args.splits / wall:,.0f}/s wall; median of 3 runs of {args.splits}); one split alone: {single * 1e3:.2f} ms CPU")

if __name__ == "__main__":
    main()
