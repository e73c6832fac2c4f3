"""Predicted vs measured time to a target training loss: real executor runs per K.

Run: ``.venv/bin/python benchmarks/time_to_target.py --model smallcnn --data digits --stages 1,2
--steps 400 --batch-size 64 --lr 0.05 --csv out.csv``

For each K: the pilots' split and steps to the target (``converge``'s: the planner's split for
K, seeds 0..S-1, the rate chosen for K), the simulator's iteration time for that split on
``--scenario`` (default: this machine's calibrated one) with this machine's profile at the batch, then a real ``execute`` of that split
for ``--steps`` with that rate and seed 0 (gloo, one process per stage). Measured: the first step whose smoothed
training loss (the executor's own losses) reaches the target, and the wall time to it (the
last stage's iteration end times); predicted: the pilots' median steps × the plan's iteration
time. The executor computes the pilot's math bit for bit, so seed 0's steps agree exactly; the
time per step is the prediction's part.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ddgsim.converge.pilot import PilotSpec, planned_splits, run_pilots, smooth, steps_to  # noqa: E402
from ddgsim.plan.format import Plan  # noqa: E402
from ddgsim.predict.event_sim import simulate  # noqa: E402
from ddgsim.predict.scenario import load_scenario  # noqa: E402
from ddgsim.profile.store import get_profile  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smallcnn")
    ap.add_argument("--data", default="digits")
    ap.add_argument("--stages", default="1,2")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--window", type=int, default=20)
    ap.add_argument("--scenario", default=None,
                    help="scenario to predict with (default: this machine's, calibrated once and cached, with the "
                         "executor's overheads)")
    ap.add_argument("--csv", type=Path)
    ap.add_argument("--html", type=Path, help="also write the loss-vs-wall-time figure here (plotly HTML, and PNG "
                                                 "beside it when Chromium is installed)")
    args = ap.parse_args()
    ks = [int(k) for k in args.stages.split(",")]
    if args.scenario is None:
        from ddgsim.calibrate.local_scenario import local_scenario

        args.scenario = str(local_scenario()[0])
    scenario = load_scenario(args.scenario)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    profile = get_profile(args.model, args.batch_size, "cpu", 1, this_machine=True, progress=False)[0]
    splits = planned_splits(profile, ks, "ddg-pipelined")
    base = PilotSpec(model=args.model, data=args.data, split=(), schedule="ddg-pipelined", batch_size=args.batch_size,
                     steps=args.steps, lr=args.lr, seed=0)
    target, results = run_pilots(base, {1: (), **splits}, args.seeds, None, args.window)
    rows = []
    curves = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in results:
            if r.stages not in ks:
                continue
            plan = Path(tmp) / f"k{r.stages}.json"
            Plan.for_split(model=args.model, split=list(r.split), num_units=profile.num_units, schedule="ddg-pipelined",
                           batch_size=args.batch_size).save(plan)
            predicted_ms = simulate(profile, list(r.split), scenario, "ddg-pipelined").iteration_ms
            metrics = Path(tmp) / f"k{r.stages}.metrics.json"
            subprocess.run([sys.executable, "-m", "ddgsim", "execute", str(plan), "--steps", str(args.steps), "--data",
                            args.data, "--lr", str(r.lr), "--seed", "0", "--no-eval", "--no-progress", "--backend",
                            "gloo", "--metrics", str(metrics)], env=env, check=True, capture_output=True)
            m = json.loads(metrics.read_text())
            losses = [float(x) for x in m["losses"]]
            got = steps_to(losses, target, args.window)
            last = max(m["per_stage"], key=lambda s: s["stage"])
            ends = [0.0, *last["step_ms"]]
            cum = [sum(ends[:i + 1]) for i in range(len(ends))]
            measured_s = cum[got] / 1e3 if got is not None else None
            pred_steps = r.median_steps
            predicted_s = pred_steps * predicted_ms / 1e3 if pred_steps is not None else None
            rows.append({"K": r.stages, "split": list(r.split), "lr": r.lr,
                         "target": round(target, 5), "pilot_median_steps": pred_steps, "pilot_seed0_steps": r.steps[0],
                         "executor_steps": got, "predicted_ms": round(predicted_ms, 2),
                         "measured_ms": round(sum(last["step_ms"]) / len(last["step_ms"]), 2),
                         "predicted_s": None if predicted_s is None else round(predicted_s, 2),
                         "measured_s": None if measured_s is None else round(measured_s, 2),
                         "error_pct": None if predicted_s is None or not measured_s else
                         round(100 * (predicted_s - measured_s) / measured_s, 1)})
            print(rows[-1], flush=True)
            pilot_curve = smooth([statistics.median(x) for x in zip(*r.losses, strict=True)], args.window)
            curves.append({"K": r.stages, "measured_s": [c / 1e3 for c in cum[1:]],
                           "measured_loss": smooth(losses, args.window),
                           "predicted_s": [(t + 1) * predicted_ms / 1e3 for t in range(len(pilot_curve))],
                           "predicted_loss": pilot_curve})
    if args.html:
        from ddgsim.compare.figures import export_pngs, loss_vs_time, write_html

        fig = loss_vs_time(curves, target, f"{args.model} on {args.data}: training loss against wall time, "
                                           "measured (executor) and predicted (pilots × simulated iteration time)")
        write_html(args.html, [fig], "time to target")
        export_pngs([(fig, args.html.with_suffix(".png"))])
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with args.csv.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()
