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
# # Convergence bounds vs observed values over K
#
# Reads the CSV of `python -m ddgsim theory-slack --out FILE.csv` (one row per K,
# bound and problem: the bound's value, the observed value, their ratio) or, without
# `--csv`, generates a small one (K ≤ `--k-max`, `--iterations` iterations). Left: the
# slack ratio bound/observed per bound (log scale; 1 would be a tight bound, below 1
# a violated one). Right: bound and observed side by side for one bound.
#
#     python analysis/theory_slack.py --out analysis/out [--csv slack.csv] [--k-max 4]

# %%
from __future__ import annotations

import _nb

args = _nb.options(__doc__, [
    ("csv", "", "CSV written by `python -m ddgsim theory-slack --out FILE.csv`"),
    ("k-max", 4, "largest K when generating"),
    ("iterations", 60, "iterations per run when generating"),
    ("seeds", 2, "mini-batch seeds when generating"),
    ("bound", "fixed_step_avg", "bound drawn against its observed value on the right"),
])

# %%
import csv
import math
from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots

path = Path(args.csv) if args.csv else Path(args.out) / "theory_slack.csv"
if not args.csv:
    from ddgsim.cli import main as ddgsim_main

    assert ddgsim_main(["theory-slack", "--out", str(path), "--K-max", str(args.k_max),
                        "--iterations", str(args.iterations), "--seeds", str(args.seeds)]) == 0
with path.open(newline="") as fh:
    rows = list(csv.DictReader(fh))
for r in rows:
    for key in ("bound_value", "observed_value", "slack_ratio"):
        r[key] = float(r[key])
    r["K"] = int(r["K"])
print(f"{len(rows)} rows from {path}")

# %%
fig = make_subplots(rows=1, cols=2, subplot_titles=("slack ratio bound / observed (log)",
                                                    f"{args.bound}: bound vs observed"))
series: dict[tuple[str, str], list[dict]] = {}
for r in rows:
    series.setdefault((r["bound"], r["problem"]), []).append(r)
PALETTE = ["#4C78A8", "#F58518", "#E45756", "#54A24B", "#B279A2", "#72B7B2", "#EECA3B", "#9D755D", "#FF9DA6"]
problem_color = {p: PALETTE[i % len(PALETTE)] for i, p in enumerate(sorted({r["problem"] for r in rows}))}
for i, ((bound, problem), rs) in enumerate(sorted(series.items())):
    rs.sort(key=lambda r: r["K"])
    finite = [r for r in rs if math.isfinite(r["slack_ratio"]) and r["slack_ratio"] > 0]
    fig.add_trace(go.Scatter(x=[r["K"] for r in finite], y=[r["slack_ratio"] for r in finite],
                             mode="lines+markers", name=f"{bound} / {problem}", legendgroup="slack",
                             legendgrouptitle_text="slack ratio" if i == 0 else None), row=1, col=1)
for problem, color in problem_color.items():
    rs = sorted(series.get((args.bound, problem), []), key=lambda r: r["K"])
    if not rs:
        continue
    fig.add_trace(go.Scatter(x=[r["K"] for r in rs], y=[r["bound_value"] for r in rs], mode="lines+markers",
                             name=f"bound ({problem})", line={"dash": "dash", "color": color},
                             legendgroup=problem, legendgrouptitle_text=f"{args.bound}: {problem}"), row=1, col=2)
    fig.add_trace(go.Scatter(x=[r["K"] for r in rs], y=[r["observed_value"] for r in rs], mode="lines+markers",
                             name=f"observed ({problem})", line={"color": color}, legendgroup=problem),
                  row=1, col=2)
fig.add_hline(y=1, line={"color": "black", "dash": "dot"}, row=1, col=1)
fig.update_yaxes(type="log", row=1, col=1)
fig.update_yaxes(type="log", row=1, col=2)
fig.update_xaxes(title_text="K", dtick=1)
fig.update_layout(title="Theory vs observation: slack of the DDG convergence bounds over K", height=620, width=1300)
fig  # noqa: B018

# %%
_nb.save(fig, args.out, "theory_slack", "Convergence bounds vs observed values", args.png,
         png_dir=args.png_dir)
