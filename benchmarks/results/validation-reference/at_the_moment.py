"""Each run of a validation.csv: its error, noise, error against the one-process run of the same moment, speedup error.

    python benchmarks/results/validation-reference/at_the_moment.py DIR/validation.csv
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from ddgsim.compare.accuracy import speed_matched_errors, speedups
from ddgsim.compare.rows import run_label
from ddgsim.compare.validation_csv import read_csv

rows = read_csv(sys.argv[1])
sm = speed_matched_errors(rows)
up = speedups(rows)
nan = float("nan")
for i, r in enumerate(rows):
    print(f"{run_label(r):55s} err {r.error_pct:+6.1f}% noise ±{r.noise_pct:4.1f}%  at K=1 of the moment "
          f"{sm.get(i, nan):+6.1f}%  speedup err {up[i].error_pct if i in up else nan:+6.1f}%")
