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
import os
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
fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                    subplot_titles=("every bound: bound / observed", f"{args.bound}: bound and observed value"))
series: dict[tuple[str, str], list[dict]] = {}
for r in rows:
    series.setdefault((r["bound"], r["problem"]), []).append(r)
PALETTE = ["#4C78A8", "#F58518", "#E45756", "#54A24B", "#B279A2", "#72B7B2", "#EECA3B", "#9D755D", "#FF9DA6"]
DASHES = ["solid", "dash", "dot", "dashdot", "longdash"]
bounds = sorted({b for b, _ in series})
problems = sorted({p for _, p in series})
bound_color = {b: PALETTE[i % len(PALETTE)] for i, b in enumerate(bounds)}
problem_dash = {p: DASHES[i % len(DASHES)] for i, p in enumerate(problems)}
lowest = math.inf
for (bound, problem), rs in sorted(series.items()):
    rs.sort(key=lambda r: r["K"])
    finite = [r for r in rs if math.isfinite(r["slack_ratio"]) and r["slack_ratio"] > 0]
    lowest = min([lowest, *(r["slack_ratio"] for r in finite)])
    fig.add_trace(go.Scatter(x=[r["K"] for r in finite], y=[r["slack_ratio"] for r in finite], mode="lines+markers",
                             name=f"{bound} / {problem}", showlegend=False,
                             line={"color": bound_color[bound], "dash": problem_dash[problem]},
                             hovertemplate=f"{bound}<br>{problem}<br>K=%{{x}}: %{{y:.3g}}<extra></extra>"),
                  row=1, col=1)
# The legend: one entry per bound (colour), one per problem (line style).
for b in bounds:
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=b, line={"color": bound_color[b], "width": 3},
                             legendgroup="bounds", legendgrouptitle_text="bound (colour)"))
for p in problems:
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=p, line={"color": "#444", "dash": problem_dash[p]},
                             legendgroup="problems", legendgrouptitle_text="problem (line style)"))
for problem in problems:
    rs = sorted(series.get((args.bound, problem), []), key=lambda r: r["K"])
    if not rs:
        continue
    fig.add_trace(go.Scatter(x=[r["K"] for r in rs], y=[r["bound_value"] for r in rs], mode="lines+markers",
                             name=f"{problem}: bound", line={"dash": problem_dash[problem], "color": "#E45756"},
                             marker={"symbol": "triangle-up"}, legendgroup="right",
                             legendgrouptitle_text=f"right: {args.bound}"), row=1, col=2)
    fig.add_trace(go.Scatter(x=[r["K"] for r in rs], y=[r["observed_value"] for r in rs], mode="lines+markers",
                             name=f"{problem}: observed", line={"color": "#4C78A8", "dash": problem_dash[problem]},
                             legendgroup="right"), row=1, col=2)
fig.add_hline(y=1, line={"color": "black", "dash": "dot"}, annotation_text="bound = observed",
              annotation_position="bottom right", row=1, col=1)
fig.update_yaxes(type="log", title_text="bound / observed (≥ 1: the bound holds)", row=1, col=1)
fig.update_yaxes(type="log", title_text="value (log)", row=1, col=2)
fig.update_xaxes(title_text="stages K (staleness up to K−1)", dtick=1)
fig.update_layout(title=(f"Every DDG convergence bound holds (bound/observed ≥ {lowest:.3g}) and loosens as K grows"
                         f"<br><sup>Measured by `ddgsim theory-slack` on small quadratic, least-squares and logistic "
                         f"problems (exact arithmetic, no hardware involved); data {os.path.basename(str(path))}</sup>"),
                  height=640, width=1350, margin={"t": 110})
fig  # noqa: B018

# %%
_nb.save(fig, args.out, "theory_slack", "Convergence bounds vs observed values", args.png,
         png_dir=args.png_dir)
