"""Check a calibrated scenario's all-reduce prediction against gloo at sizes it was not measured at.

Run (after ``python -m ddgsim calibrate --out local.toml``)::

    .venv/bin/python benchmarks/measure_allreduce.py --scenario local.toml --out DIR

Two CPU processes, one thread each, run ``dist.all_reduce`` of float32 tensors at held-out
sizes (default ``3·2^k`` bytes, 12 B to 24 MiB: half-way, in log scale, between calibrate's
powers of two) in ``--rounds`` interleaved rounds (every size once per round, so drift
hits all alike) of ``--reps`` timed repetitions each, interleaved over the sizes (the same
timing loop as calibrate: a barrier before each, 3 untimed first). Per size: the mean of
the middle 80 % of all repetitions (what calibrate writes; see ``AllreduceSample.mean_ms``),
the spread of the rounds' such means, and the prediction of ``ddgsim.predict.collective.allreduce_ms`` for two
devices of the scenario (its measured ``[[allreduce]]`` curve where it has one), with the
error; also the link model's prediction (a ring of 2 over the fitted link), for comparison.
Writes ``allreduce.csv`` and ``summary.json`` (median and worst |error|, load average and
hypervisor steal during the measurement) to ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ddgsim.calibrate.measure import measure_allreduce, trimmed_mean
from ddgsim.predict.collective import allreduce_ms, ring_ms
from ddgsim.predict.scenario import load_scenario
from ddgsim.profile.machine import cpu_jiffies, loadavg, steal_pct

HELD_OUT = tuple(3 * 2**k for k in range(2, 24))
"""12 B .. 24 MiB, none a power of two."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--scenario", required=True, help="a calibrated scenario (with [[allreduce]])")
    ap.add_argument("--sizes", default=",".join(map(str, HELD_OUT)), help="bytes, comma-separated multiples of 4")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    sc = load_scenario(args.scenario)
    devs = [d.name for d in sc.devices][:2]
    curve = sc.measured_allreduce(devs)
    print(f"scenario {sc.name}: {'measured curve' if curve else 'no measured curve: the link model'} for {devs}")
    load0, cpu0 = loadavg(), cpu_jiffies()
    rounds = measure_allreduce(sizes, args.reps, args.rounds)
    stolen, load1 = steal_pct(cpu0, cpu_jiffies()) or 0.0, loadavg()
    rows = []
    for n in sizes:
        meds = [trimmed_mean(r[n]) for r in rounds]
        measured = trimmed_mean([t for r in rounds for t in r[n]])
        pred = float(allreduce_ms(sc, devs, n))
        link = float(ring_ms(sc, devs, n))
        rows.append({"bytes": n, "measured_ms": measured, "round_low_ms": min(meds), "round_high_ms": max(meds),
                     "predicted_ms": pred, "error_pct": 100 * (pred - measured) / measured,
                     "link_model_ms": link, "link_model_error_pct": 100 * (link - measured) / measured})
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "allreduce.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    errs = [abs(r["error_pct"]) for r in rows]
    link_errs = [abs(r["link_model_error_pct"]) for r in rows]
    summary = {"scenario": args.scenario, "measured_curve": curve is not None, "sizes": len(rows),
               "rounds": args.rounds, "reps": args.reps,
               "median_abs_error_pct": statistics.median(errs), "worst_abs_error_pct": max(errs),
               "within_10pct": sum(e <= 10 for e in errs),
               "link_model_median_abs_error_pct": statistics.median(link_errs),
               "link_model_worst_abs_error_pct": max(link_errs),
               "loadavg_before": load0, "loadavg_after": load1, "steal_pct": stolen}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{'bytes':>10} {'measured':>9} {'rounds':>17} {'predicted':>9} {'error':>7} {'link model':>10} {'error':>7}")
    for r in rows:
        print(f"{r['bytes']:>10} {r['measured_ms']:>9.4f} {r['round_low_ms']:>8.4f}-{r['round_high_ms']:<8.4f} "
              f"{r['predicted_ms']:>9.4f} {r['error_pct']:>+6.1f}% {r['link_model_ms']:>10.4f} "
              f"{r['link_model_error_pct']:>+6.1f}%")
    print(f"median |error| {summary['median_abs_error_pct']:.1f}%, worst {summary['worst_abs_error_pct']:.1f}%, "
          f"{summary['within_10pct']}/{len(rows)} within 10% (link model: median "
          f"{summary['link_model_median_abs_error_pct']:.1f}%, worst {summary['link_model_worst_abs_error_pct']:.1f}%); "
          f"steal {stolen:.1f}%, load {load0} -> {load1}")


if __name__ == "__main__":
    main()
