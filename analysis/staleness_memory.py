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
stages = [f"stage {k}" for k in range(K)]
stale = go.Figure()
for s, r in results.items():
    stale.add_trace(go.Bar(x=stages, y=list(r.staleness), name=s))
stale.add_trace(go.Scatter(x=stages, y=[K - 1 - k for k in range(K)], mode="markers", name="DDG promise K−1−k",
                           marker={"symbol": "line-ew-open", "size": 30, "color": "black"}))
stale.update_layout(title=f"{args.model}, K={K}, split {split}: observed staleness per stage (simulator)",
                    barmode="group", yaxis_title="updates between F and U of a batch", height=420)
stale  # noqa: B018

# %%
PARTS = [("params", "#4C78A8"), ("grads", "#72B7B2"), ("optimizer", "#54A24B"), ("activations", "#F58518"),
         ("stashed_weights", "#E45756"), ("buffers", "#BAB0AC")]
mem = make_subplots(rows=1, cols=len(results), subplot_titles=list(results), shared_yaxes=True)
for j, r in enumerate(results.values(), start=1):
    for part, color in PARTS:
        mem.add_trace(go.Bar(x=stages, y=[getattr(m, part) / 2**20 for m in r.memory], name=part,
                             marker_color=color, legendgroup=part, showlegend=j == 1), row=1, col=j)
mem.update_layout(title=f"{args.model} batch {args.batch_size}, K={K}: peak memory per stage (MiB)",
                  barmode="stack", height=460, width=max(700, 260 * len(results)))
mem.update_yaxes(title_text="MiB", row=1, col=1)
mem  # noqa: B018

# %%
_nb.save([stale, mem], args.out, "staleness_memory", "Staleness and peak memory per stage", args.png,
         png_dir=args.png_dir)
