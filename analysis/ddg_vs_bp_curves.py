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
# # DDG vs BP: training loss and test accuracy on real data
#
# The scikit-learn digits (8×8 images, 10 classes) trained with the executor's exact
# DDG math, in one process (`ddgsim.execute.runner.run_inprocess_job`, the engine the
# distributed runner matches bit for bit). `bp` is plain SGD; `ddg` updates stage k
# with a gradient K−1−k iterations old (`ddg-pipelined` computes the same weights
# as `ddg`, so it is not drawn twice). Same seed, same data order, same optimizer
# (SGD, momentum 0.9, Nesterov, weight decay 5e-4). Test accuracy is evaluated every
# `--eval-every` iterations from the weights the run recorded. With `--metrics`
# files from `ddgsim execute ... --data digits --metrics FILE` the distributed
# runs' loss curves are drawn instead (their accuracy only at the end).
#
#     python analysis/ddg_vs_bp_curves.py --out analysis/out [--model mlp] [--k 3] [--steps 400]

# %%
from __future__ import annotations

import _nb

args = _nb.options(__doc__, [
    ("model", "mlp", "digits-shaped model: mlp or smallcnn"),
    ("k", 3, "stages of the DDG run"),
    ("steps", 400, "iterations"),
    ("batch-size", 32, "samples per batch"),
    ("lr", 0.05, "learning rate"),
    ("eval-every", 25, "iterations between test-accuracy evaluations"),
    ("metrics", "", "comma-separated executor --metrics JSON files to draw instead of running the engine"),
])

# %%
import json
import tempfile
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch.nn.utils import vector_to_parameters

from ddgsim.profile.units import split_units
from ddgsim.models.registry import build_model, get_spec
from ddgsim.plan.format import Plan
from ddgsim.plan.split import even_split
from ddgsim.execute.config import RunConfig
from ddgsim.execute.runner import evaluate_stages, run_inprocess_job

torch.set_num_threads(1)


def run(schedule: str, K: int) -> dict:
    """Train with the in-process engine; losses per batch, accuracy every eval-every steps."""
    spec = get_spec(args.model)
    n_units = len(split_units(build_model(spec), spec.input_shape, batch_size=2))
    split = even_split(n_units, K)
    tmp = Path(tempfile.mkdtemp(prefix="curves-"))
    plan = tmp / "plan.json"
    Plan.for_split(model=args.model, split=split, num_units=n_units, schedule=schedule,
                   batch_size=args.batch_size).save(plan)
    res, job, ds = run_inprocess_job(RunConfig(plan=plan, steps=args.steps, data="digits", lr=args.lr))
    evals = list(range(0, args.steps + 1, args.eval_every))
    if evals[-1] != args.steps:
        evals.append(args.steps)
    acc = []
    for t in evals:
        for module, w in zip(job.stages, res.weights[t], strict=True):
            vector_to_parameters(w, [p for _, p in module.named_parameters()])
        acc.append(evaluate_stages(job.stages, ds, args.batch_size, job.spec.io)["accuracy"])
    return {"label": f"{schedule} K={K}", "losses": res.losses, "eval_at": evals, "accuracy": acc}


curves = []
if args.metrics:
    for path in _nb.csv_list(args.metrics):
        m = json.loads(Path(path).read_text())
        acc = m["summary"].get("test_accuracy")
        curves.append({"label": f"{m['schedule']} K={m['stages']} ({Path(path).name})", "losses": m["losses"],
                       "eval_at": [len(m["losses"])] if acc is not None else [],
                       "accuracy": [acc] if acc is not None else []})
else:
    curves = [run("bp", 1), run("ddg", args.k)]

# %%
def smooth(y, w: int = 10):
    y = np.asarray([np.nan if v is None else v for v in y], dtype=float)
    if len(y) < w:
        return y
    c = np.convolve(np.nan_to_num(y), np.ones(w) / w, mode="valid")
    return np.concatenate([np.full(w - 1, np.nan), c])


fig = make_subplots(rows=1, cols=2, subplot_titles=("training loss (moving average of 10)", "test accuracy"))
colors = ["#4C78A8", "#F58518", "#E45756", "#54A24B"]
for i, c in enumerate(curves):
    col = colors[i % len(colors)]
    fig.add_trace(go.Scatter(y=c["losses"], mode="lines", line={"color": col, "width": 1}, opacity=0.25,
                             showlegend=False, name=c["label"]), row=1, col=1)
    fig.add_trace(go.Scatter(y=smooth(c["losses"]), mode="lines", line={"color": col}, name=c["label"]),
                  row=1, col=1)
    fig.add_trace(go.Scatter(x=c["eval_at"], y=c["accuracy"], mode="lines+markers", line={"color": col},
                             name=c["label"], showlegend=False), row=1, col=2)
fig.update_xaxes(title_text="iteration")
fig.update_yaxes(title_text="cross-entropy", row=1, col=1)
fig.update_yaxes(title_text="accuracy", range=[0, 1], row=1, col=2)
fig.update_layout(title=f"DDG vs BP on digits: {args.model}, batch {args.batch_size}, lr {args.lr}", height=440)
for c in curves:
    if c["accuracy"]:
        print(f"{c['label']}: final loss {c['losses'][-1]:.4f}, final test accuracy {c['accuracy'][-1]:.3f}")
fig  # noqa: B018

# %%
_nb.save(fig, args.out, "ddg_vs_bp_curves", "DDG vs BP: loss and accuracy on digits", args.png,
         png_dir=args.png_dir)
