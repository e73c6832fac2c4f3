"""Is the slow mode of small gloo all-reduces the VM's idle-vCPU wake-up? Measure with and without busy vCPUs.

    .venv/bin/python benchmarks/allreduce_wakeup.py [--rounds 3] [--reps 150] [--out DIR]

On the development VM about half of the small 2-process all-reduces take 2–3.5 ms instead of
about 0.4 ms, and that share moves between 30 and 55 % from one measurement to the next, so the
mean of the same size differs by more than 10 % between runs. This alternates, ``--rounds``
times, calibrate's all-reduce measurement (:func:`ddgsim.calibrate.measure.measure_allreduce`:
two processes, one thread each, a barrier before each timed all-reduce) as it is and while one
busy loop per CPU runs at the lowest priority (``nice 19``): the busy loops take almost no time
from the measuring processes (the scheduler runs them only when nothing else is runnable), but
keep the CPUs from going idle — so a waiting process is woken on a running CPU, not a halted
one. Per size and setting: the share of repetitions over 1 ms, the median and the mean of the
middle 80 % (what calibrate records), over all rounds, and the spread of the rounds' means.
Writes ``wakeup.csv`` and ``summary.json`` to ``--out``. Not part of the test run.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ddgsim.calibrate.measure import measure_allreduce, trimmed_mean
from ddgsim.profile.machine import cpu_jiffies, loadavg, steal_pct

SIZES = (96, 4096, 65536, 786432)
SLOW_MS = 1.0


def spinners() -> list[subprocess.Popen[bytes]]:
    """One lowest-priority busy loop per CPU."""
    cmd = [sys.executable, "-c", "import os; os.nice(19)\nwhile True: pass"]
    procs = [subprocess.Popen(cmd) for _ in range(os.cpu_count() or 1)]
    time.sleep(0.5)
    return procs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=150)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    times: dict[str, dict[int, list[list[float]]]] = {s: {n: [] for n in SIZES} for s in ("idle", "busy")}
    cpu0 = cpu_jiffies()
    for r in range(args.rounds):
        for setting in ("idle", "busy") if r % 2 == 0 else ("busy", "idle"):
            procs = spinners() if setting == "busy" else []
            try:
                (got,) = measure_allreduce(SIZES, args.reps, 1)
            finally:
                for p in procs:
                    p.kill()
                    p.wait()
            for n in SIZES:
                times[setting][n].append(got[n])
            print(f"round {r + 1} {setting}: " + ", ".join(
                f"{n} B {trimmed_mean(got[n]):.3f} ms ({sum(t > SLOW_MS for t in got[n]) / len(got[n]):.0%} slow)"
                for n in SIZES), flush=True)
    rows = []
    for setting, per in times.items():
        for n, rounds in per.items():
            every = [t for r in rounds for t in r]
            means = [trimmed_mean(r) for r in rounds]
            rows.append({"cpus": setting, "bytes": n, "slow_share": sum(t > SLOW_MS for t in every) / len(every),
                         "median_ms": statistics.median(every), "trimmed_mean_ms": trimmed_mean(every),
                         "round_mean_low_ms": min(means), "round_mean_high_ms": max(means)})
    for row in rows:
        print(f"{row['cpus']:>4} {row['bytes']:>7} B: {row['slow_share']:.0%} over {SLOW_MS} ms, median "
              f"{row['median_ms']:.3f} ms, mean {row['trimmed_mean_ms']:.3f} ms "
              f"(rounds {row['round_mean_low_ms']:.3f}–{row['round_mean_high_ms']:.3f})")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        with open(args.out / "wakeup.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        summary = {"rounds": args.rounds, "reps": args.reps, "sizes": list(SIZES), "slow_ms": SLOW_MS,
                   "loadavg_after": loadavg(), "steal_pct": steal_pct(cpu0, cpu_jiffies()),
                   "slow_share": {s: statistics.mean(r["slow_share"] for r in rows if r["cpus"] == s)
                                  for s in ("idle", "busy")}}
        (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        print(f"wrote {args.out / 'wakeup.csv'} and {args.out / 'summary.json'}")


if __name__ == "__main__":
    main()
