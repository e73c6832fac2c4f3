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
# # Staleness and peak memory per stage
#
# For one model and K, every schedule on the same split: the staleness each stage
# observes in the simulator (updates of that stage between the forward of a batch
# and the update that uses its gradient; DDG promises K−1−k for code stage k) and
# the peak-memory breakdown of `ddgsim.predict.memory.stage_memory` (parameters,
# gradients, optimizer state, saved activations of the batches in flight, stashed
# weight versions, send/receive buffers).
#
#     python analysis/staleness_memory.py --out analysis/out [--model resnet110] [--k 4] [--split even|planned]

# %%
from __future__ import annotations

import _nb

args = _nb.options(__doc__, [
    ("model", "resnet110", "model with a bundled or cached profile"),
    ("batch-size", 128, "batch size"),
    ("k", 4, "number of stages"),
    ("schedules", "bp,ddg,ddg-pipelined,gpipe,1f1b", "schedules"),
    ("split", "even", "even (the authors' split) or planned (ddg-pipelined's optimum on ideal-K)"),
    ("micro-batches", 4, "M for gpipe and 1f1b"),
])

# %%
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ddgsim.plan import search as planner
from ddgsim.profile.store import get_profile
from ddgsim.predict.scenario import load_scenario
from ddgsim.predict.event_sim import simulate
from ddgsim.plan.split import even_split

prof, path, source = get_profile(args.model, args.batch_size, progress=False)
K = args.k
scenario = load_scenario(f"ideal-{K}")
if args.split == "planned":
    best = planner.search(prof, scenario, "ddg-pipelined", K).best
    assert best is not None
    split = best.split
else:
    split = even_split(prof.num_units, K)
schedules = _nb.csv_list(args.schedules)
results = {s: simulate(prof, split, scenario, s, micro_batches=args.micro_batches if s in ("gpipe", "1f1b") else 1)
           for s in schedules}
print(f"{args.model} b{args.batch_size} ({source} profile {path}), K={K}, split {split}")

# %%
from ddgsim.profile.machine import describe

stages = [f"stage {k}" for k in range(K)]
where = (f"Simulated on ideal-{K} with the {source} profile of {args.model} (batch {args.batch_size}), "
         f"measured on {describe(prof.machine)}.")
COLORS = {"bp": "#4C78A8", "ddg": "#F58518", "ddg-pipelined": "#E45756", "gpipe": "#54A24B", "1f1b": "#B279A2"}
stale = go.Figure()
for s, r in results.items():
    stale.add_trace(go.Bar(x=stages, y=list(r.staleness), name=s, marker_color=COLORS.get(s, "#777"),
                           text=[str(v) for v in r.staleness], textposition="outside", cliponaxis=False))
stale.add_trace(go.Scatter(x=stages, y=[K - 1 - k for k in range(K)], mode="markers", name="DDG's K−1−k",
                           marker={"symbol": "line-ew-open", "size": 40, "color": "black", "line": {"width": 2}}))
stale.update_layout(
    title=(f"{args.model}, K = {K}, split {split}: DDG's stages use gradients K−1−k iterations old; "
           f"bp, gpipe and 1f1b none (0)<br><sup>{where}</sup>"),
    barmode="group", xaxis_title="stage k", yaxis_title="staleness (iterations between a batch's F and U)",
    yaxis={"dtick": 1, "range": [-0.3, K - 0.4]}, height=460, width=1000, margin={"t": 100})
stale  # noqa: B018

# %%
PARTS = [("params", "#4C78A8"), ("grads", "#72B7B2"), ("optimizer", "#54A24B"), ("activations", "#F58518"),
         ("stashed_weights", "#E45756"), ("buffers", "#BAB0AC")]
cols = min(3, len(results))
rows = -(-len(results) // cols)
mem = make_subplots(rows=rows, cols=cols, subplot_titles=list(results), vertical_spacing=0.18,
                    horizontal_spacing=0.1)
for j, r in enumerate(results.values()):
    row, col = j // cols + 1, j % cols + 1
    for part, color in PARTS:
        mem.add_trace(go.Bar(x=stages, y=[getattr(m, part) / 2**20 for m in r.memory], name=part.replace("_", " "),
                             marker_color=color, legendgroup=part, showlegend=j == 0), row=row, col=col)
    mem.update_yaxes(title_text="peak MiB", matches="y", row=row, col=col)  # one scale: schedules compare
    mem.update_xaxes(title_text="stage k", row=row, col=col)
ratio = ""
if "ddg" in results and "bp" in results:
    ratio = f" ({results['ddg'].memory[0].total / results['bp'].memory[0].total:.1f}× bp's on stage 0)"
mem.update_layout(title=(f"{args.model}, K = {K}: peak memory is activations; DDG holds those of K−k batches on "
                         f"stage k{ratio}<br><sup>{where}</sup>"),
                  barmode="stack", height=340 * rows + 140, width=1150, margin={"t": 100},
                  legend={"title": {"text": "memory part"}})
mem  # noqa: B018

# %%
_nb.save([stale, mem], args.out, "staleness_memory", "Staleness and peak memory per stage", args.png,
         png_dir=args.png_dir)
