"""A validate folder measured with --reference-every: each run's speedup error against the one-process
run that opened each round only (the method before) and against it interpolated to each execution's moment.

    python benchmarks/results/validation-reference/openers_vs_interpolated.py DIR/validation.csv

Assumes 3 rounds (the default --repeats) and the one-process run the same number of times in each.
"""
import statistics
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from ddgsim.compare.accuracy import speedups
from ddgsim.compare.rows import run_label
from ddgsim.compare.validation_csv import read_csv

ROUNDS = 3
rows = read_csv(sys.argv[1])
ref_i = next(i for i, r in enumerate(rows) if r.K == 1)
ref = rows[ref_i]
per_round = len(ref.measured_all_ms) // ROUNDS  # its executions per round (the closing one left over)
openers = replace(ref, measured_all_ms=tuple(ref.measured_all_ms[j * per_round] for j in range(ROUNDS)),
                  measured_at_s=())
old = speedups([openers if i == ref_i else replace(r, measured_at_s=()) for i, r in enumerate(rows)])
new = speedups(rows)
for i in sorted(new):
    ratios = ", ".join(f"{c:.2f}" for c in rows[i].compute_ratio_all)
    print(f"{run_label(rows[i]):32s} opener {old[i].error_pct:+6.1f}%  interpolated {new[i].error_pct:+6.1f}%  "
          f"compute ratios {ratios}")
o = [abs(x.error_pct) for x in old.values()]
n = [abs(x.error_pct) for x in new.values()]
print(f"median/worst: round's opener only {statistics.median(o):.1f}/{max(o):.1f}; "
      f"interpolated {statistics.median(n):.1f}/{max(n):.1f}")
print("K=1:", ref.measured_all_ms)
