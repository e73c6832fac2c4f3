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
# # One DDG iteration: simulated vs measured timeline
#
# Gantt chart (one row per device and per link direction) of steady-state
# iterations. The measured side comes from an executor trace
# (`ddgsim execute PLAN --trace FILE`); the simulated side re-runs the simulator on
# that trace's plan. Without `--trace`: `--run` launches a tiny executor run itself
# (mlp, K=2, ddg, a few seconds plus process start-up), otherwise only the simulated
# timeline is shown, with a note.
#
#     python analysis/gantt.py --out analysis/out [--trace run.trace.json] [--run]

# %%
from __future__ import annotations

import _nb

args = _nb.options(__doc__, [
    ("trace", "", "measured Chrome trace written by the executor (--trace)"),
    ("plan", "", "plan of that trace (default: the path recorded in the trace's metadata)"),
    ("run", "no", "yes: without --trace, run a tiny executor job (mlp, K=2, ddg) and use its trace"),
    ("model", "resnet110", "model simulated when there is no plan"),
    ("k", 2, "stages simulated when there is no plan"),
    ("schedule", "ddg", "schedule simulated when there is no plan"),
    ("iterations", 2, "iterations shown"),
])

# %%
import json
import tempfile
from pathlib import Path

from ddgsim.plan import format as plan_file
from ddgsim.profile import format as profile_format
from ddgsim.compare.figures import batch_of, events_from_trace, gantt, gantt_pair, steady_window
from ddgsim.profile.store import get_profile
from ddgsim.predict.scenario import load_scenario
from ddgsim.predict.event_sim import simulate
from ddgsim.plan.split import even_split
from ddgsim.trace import load_trace

trace_path = args.trace
plan_path = args.plan
if not trace_path and args.run == "yes":
    from ddgsim.cli import main as ddgsim_main
    from ddgsim.plan.format import Plan

    tmp = Path(tempfile.mkdtemp(prefix="gantt-"))
    plan_path = str(tmp / "plan.json")
    Plan.for_split(model="mlp", split=[3], num_units=6, schedule="ddg", batch_size=32,
                   scenario="cpu-2core").save(plan_path)
    trace_path = str(tmp / "measured.trace.json")
    assert ddgsim_main(["execute", plan_path, "--steps", "8", "--data", "digits", "--no-eval", "--no-progress",
                        "--trace", trace_path]) == 0

measured = None
if trace_path:
    data = load_trace(trace_path)
    measured = events_from_trace(data)
    plan_path = plan_path or data.get("metadata", {}).get("plan", "")
plan = plan_file.load(plan_path) if plan_path and Path(plan_path).is_file() else None
if plan is not None:
    ref = plan.profile_ref.path if plan.profile_ref is not None else ""
    prof = (profile_format.load(ref) if ref and Path(ref).is_file()
            else get_profile(plan.model, plan.batch_size, progress=False)[0])
    split, schedule, K = plan.split, plan.schedule, plan.num_stages
    scenario = load_scenario(plan.scenario or f"ideal-{K}")
    devices = [s.device for s in plan.stages]
    if any(d not in {x.name for x in scenario.devices} for d in devices):
        devices = None
else:
    prof = get_profile(args.model, 128, progress=False)[0]
    K, schedule = args.k, args.schedule
    split = even_split(prof.num_units, K)
    scenario = load_scenario("cpu-2core" if K <= 2 else f"ideal-{K}")
    devices = None
sim = simulate(prof, split, scenario, schedule, devices=devices)
pred, span_p = steady_window(sim.timeline, sim.iterations // 2, args.iterations)
what = f"{prof.model} b{prof.batch_size}, {schedule}, K={K}, split {split}, scenario {scenario.name}"
print(what)
from ddgsim.profile.machine import describe

where = f"predicted from a profile measured on {describe(prof.machine)}" + (
    "; measured by the executor (its trace)" if trace_path else "")

# %%
if measured is not None:
    n_meas = 1 + max((batch_of(e.name) or 0 for e in measured if e.cat == "F"), default=0)
    meas, span_m = steady_window(measured, max(0, n_meas // 2 - 1), args.iterations)
    fig = gantt_pair(pred, meas, f"{what}: {args.iterations} steady-state iterations<br><sup>{where}</sup>",
                     max(span_p, span_m))
    note = ""
else:
    note = ("No measured trace given (--trace FILE, or --run yes to make one): simulated timeline only. "
            "Measure with: python -m ddgsim execute PLAN --steps 8 --trace run.trace.json")
    fig = gantt(pred, f"{what}: {args.iterations} steady-state iterations (simulated only)<br><sup>{where}. "
                      f"{note}</sup>")
fig  # noqa: B018

# %%
_nb.save(fig, args.out, "gantt", "One DDG iteration: simulated vs measured", args.png, intro=note,
         png_dir=args.png_dir)
print(json.dumps({"measured": measured is not None}))
