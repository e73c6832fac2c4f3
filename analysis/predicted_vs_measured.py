# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Predicted vs measured iteration time
#
# Reads a `validation.csv` written by
# `python -m ddgsim validate MODEL --gpus 1,2 --out DIR` (one row per executor run)
# and draws the predicted vs measured scatter with the y = x line (±5% and ±10%
# bands) and the signed error of every run, with the median and worst absolute
# error and the ranking check in the title.
#
#     python analysis/predicted_vs_measured.py --out analysis/out \
#         [--csv benchmarks/results/validation-set/validation-set.csv]

# %%
from __future__ import annotations

import sys
from pathlib import Path

import _nb

args = _nb.options(__doc__, [
    ("csv", str(_nb.ROOT / "benchmarks" / "results" / "validation-set" / "validation-set.csv"),
     "validation.csv to read (default: the committed validation set, benchmarks/validation_set.py)"),
    ("tolerance", 5.0, "predictions closer than this (%) count as ties for the ranking check"),
])
if not Path(args.csv).is_file():
    sys.exit(f"error: {args.csv} does not exist; write one with "
             "`python -m ddgsim validate resnet56 --gpus 1,2 --out DIR` and pass --csv DIR/validation.csv")

# %%
from ddgsim.compare.accuracy import summarize
from ddgsim.compare.report import error_figure, scatter_figure
from ddgsim.compare.validation_csv import read_csv

rows = read_csv(args.csv)
summary = summarize(rows, args.tolerance)
print("\n".join(summary.lines()))
models = sorted({f"{r.model} b{r.batch_size}" for r in rows})
ranking = "preserved" if summary.ranking_preserved else "NOT preserved"
headline = (f"median |error| {summary.median_abs_error_pct:.1f}%, worst {summary.worst_abs_error_pct:.1f}%, "
            f"Kendall τ {summary.kendall_tau:.2f}, ranking {ranking}")
scatter = scatter_figure(rows, title=f"Predicted vs measured: {', '.join(models)}<br><sup>{headline}</sup>")
scatter  # noqa: B018

# %%
errors = error_figure(rows, title=f"Prediction error per run ({len(rows)} runs)")
errors  # noqa: B018

# %%
_nb.save([scatter, errors], args.out, "predicted_vs_measured", "Predicted vs measured", args.png,
         intro="\n".join(summary.lines()), png_dir=args.png_dir)
