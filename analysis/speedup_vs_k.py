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
# # Speedup vs K: the authors' even split vs the planned split
#
# Predicted speedup over one device (whole model + update on the scenario's fastest
# device) for ResNet-56/110/1202, every schedule, every bundled scenario and the
# ideal one, K = 1 .. min(K-max, devices). Solid lines: the planner's split
# (`ddgsim.plan.search.search`); dashed: the authors' even split (ceil(n/K) units per
# stage). Both are priced with the planner's max-plus model, which agrees with
# the SimPy simulator (tests/test_max_plus.py). The bundled profiles are CPU
# profiles: on GPU scenarios, "speed 1.0" means the profiled device, so read those
# curves as shapes, not absolute numbers. The full sweep takes minutes (ResNet-1202
# has 606 units to place); narrow it with the options below.
#
#     python analysis/speedup_vs_k.py --out analysis/out [--models resnet56,resnet110] \
#         [--scenarios pcie-4gpu,ideal] [--schedules bp,ddg] [--k-max 8]

# %%
from __future__ import annotations

import _nb

args = _nb.options(__doc__, [
    ("models", "resnet56,resnet110,resnet1202", "models (bundled CPU profiles)"),
    ("batch-size", 128, "batch size of the profiles (another batch is used, and named, if absent)"),
    ("schedules", "bp,ddg,ddg-pipelined,gpipe,1f1b", "schedules"),
    ("scenarios", "all", "bundled scenario names, 'ideal' (ideal-K), or 'all'"),
    ("k-max", 8, "largest K"),
    ("micro-batches", 4, "M for gpipe and 1f1b"),
])

# %%
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ddgsim.plan import search as planner
from ddgsim.profile import format as profile_format
from ddgsim.predict.max_plus import single_device_ms
from ddgsim.profile.store import bundled_dir
from ddgsim.predict.scenario import bundled_names, load_scenario
from ddgsim.plan.split import even_split


def find_bundled(model: str, batch: int):
    """The bundled CPU 1-thread profile of ``model``: at ``batch`` if there, else any batch."""
    exact = bundled_dir() / f"{model}-b{batch}-cpu-t1.json"
    if exact.is_file():
        return profile_format.load(exact)
    others = sorted(bundled_dir().glob(f"{model}-b*-cpu-t1.json"))
    return profile_format.load(others[0]) if others else None


models = _nb.csv_list(args.models)
schedules = _nb.csv_list(args.schedules)
scen_names = bundled_names() + ["ideal"] if args.scenarios == "all" else _nb.csv_list(args.scenarios)
profiles = {m: find_bundled(m, args.batch_size) for m in models}
missing = [m for m, p in profiles.items() if p is None]
print("profiles:", {m: (f"b{p.batch_size}, {p.num_units} units" if p else "not bundled") for m, p in profiles.items()})

# %%
def curve(prof, scen_name: str, schedule: str, k_max: int, micro: int):
    """K, planned speedup, even speedup for one (profile, scenario, schedule)."""
    ks, planned, even = [], [], []
    n_dev = k_max if scen_name == "ideal" else len(load_scenario(scen_name).devices)
    for K in range(1, min(k_max, n_dev, prof.num_units) + 1):
        sc = load_scenario(f"ideal-{K}" if scen_name == "ideal" else scen_name)
        m = micro if schedule in ("gpipe", "1f1b") else 1
        res = planner.search(prof, sc, schedule, K, micro_batches=m)
        if res.best is None:  # no split fits in memory
            continue
        single = single_device_ms(prof, max(d.speed for d in sc.devices))
        ev = planner.evaluate(prof, even_split(prof.num_units, K), sc, schedule, res.best.devices, m)
        ks.append(K)
        planned.append(single / res.best.iteration_ms)
        even.append(single / ev)
    return ks, planned, even


COLORS = {"bp": "#4C78A8", "ddg": "#F58518", "ddg-pipelined": "#E45756", "gpipe": "#54A24B", "1f1b": "#B279A2"}
COLS = 3
figs = []
for model, prof in profiles.items():
    if prof is None:
        continue
    from ddgsim.profile.machine import describe

    rows = -(-len(scen_names) // COLS)
    fig = make_subplots(rows=rows, cols=COLS, subplot_titles=scen_names, horizontal_spacing=0.07,
                        vertical_spacing=0.16)
    for j, scen in enumerate(scen_names):
        r, c = j // COLS + 1, j % COLS + 1
        print(f"{model}: {scen} ...", flush=True)
        for sched in schedules:
            ks, planned, even = curve(prof, scen, sched, args.k_max, args.micro_batches)
            color = COLORS.get(sched, "#777")
            fig.add_trace(go.Scatter(x=ks, y=planned, mode="lines+markers", name=sched, legendgroup=sched,
                                     showlegend=False, line={"color": color, "width": 2.5},
                                     hovertemplate=f"{sched}, planned split<br>K=%{{x}}: %{{y:.2f}}x<extra></extra>"),
                          row=r, col=c)
            fig.add_trace(go.Scatter(x=ks, y=even, mode="lines+markers", name=f"{sched} (even)", legendgroup=sched,
                                     showlegend=False, line={"color": color, "dash": "dot", "width": 1.5},
                                     marker={"symbol": "circle-open"},
                                     hovertemplate=f"{sched}, even split<br>K=%{{x}}: %{{y:.2f}}x<extra></extra>"),
                          row=r, col=c)
        fig.update_xaxes(title_text="stages K (= devices)", dtick=1, row=r, col=c)
        fig.update_yaxes(title_text="speedup vs 1 device", rangemode="tozero", row=r, col=c)
    # One legend entry per schedule (colour) and one per split (line style), not one per trace.
    for sched in schedules:
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=sched, legendgroup=sched,
                                 line={"color": COLORS.get(sched, "#777"), "width": 2.5}))
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name="planned split", line={"color": "#333"}))
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines+markers", name="even split (authors')",
                             line={"color": "#333", "dash": "dot"}, marker={"symbol": "circle-open"}))
    note = f" (no bundled profile for {', '.join(missing)}: skipped)" if missing else ""
    fig.update_layout(
        title=(f"{model}: the planned split scales better than the even split, and ddg-pipelined best"
               f"<br><sup>Predicted from the bundled CPU profile (batch {prof.batch_size}) measured on "
               f"{describe(prof.machine)}.<br>GPU scenarios run that CPU's costs at their devices' relative speed: "
               f"read them as shapes, not absolute numbers.{note}</sup>"),
        height=330 * rows + 140, width=1250, legend={"title": {"text": "schedule / split"}},
        margin={"t": 130})
    figs.append(fig)
if not figs:
    figs.append(go.Figure().update_layout(title=f"no bundled profile for {', '.join(missing)}"))
figs[0]  # noqa: B018  (shown in a notebook)

# %%
_nb.save(figs, args.out, "speedup_vs_k", "Speedup vs K: even vs planned split", args.png,
         intro=(f"No bundled profile for: {', '.join(missing)} (skipped).\n" if missing else ""),
         png_dir=args.png_dir)
