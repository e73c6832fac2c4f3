"""Staleness compensation against BP: steps to BP's target loss and final training loss per K,
for each compensation, over several seeds (pilot trainings, ``ddgsim.converge.pilot``).

Run: ``.venv/bin/python benchmarks/compensation.py --model smallcnn --data digits --stages 1,2,3
--steps 400 --seeds 3 --batch-size 64 --lr 0.05 --csv out.csv``

Every configuration is ``run_pilots`` (the exact in-process engine; a learning rate per K swept
within the stability limits on seed 0, then the other seeds at the rate chosen), with the target
set by plain BP (K = 1, no compensation): a loss every BP seed reached at 3/4 of the steps. The
compensations: ``warmup`` (linear warm-up over 1/10 of the steps), ``delay-lr`` (each stage's
rate times cos(τπ/(2τ+1))), ``predict`` (forward with w − τ·γ·v), and ``all`` three. Runs are
cached like ``converge``'s.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ddgsim.converge.pilot import PilotSpec, planned_splits, run_pilots, smooth
from ddgsim.profile.store import get_profile

COMPENSATIONS = ("none", "warmup", "delay-lr", "predict", "all")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smallcnn")
    ap.add_argument("--data", default="digits")
    ap.add_argument("--stages", default="1,2,3")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--window", type=int, default=20)
    ap.add_argument("--compensations", default=",".join(COMPENSATIONS))
    ap.add_argument("--csv", type=Path)
    args = ap.parse_args()
    ks = [int(k) for k in args.stages.split(",")]
    profile = get_profile(args.model, args.batch_size, "cpu", 1, this_machine=False, progress=False)[0]
    splits = planned_splits(profile, ks, "ddg-pipelined")
    base = PilotSpec(model=args.model, data=args.data, split=(), schedule="ddg-pipelined", batch_size=args.batch_size,
                     steps=args.steps, lr=args.lr, seed=0)
    target, _ = run_pilots(base, {1: ()}, args.seeds, None, args.window)
    print(f"{args.model} on {args.data}: target {target:.4f} (BP, {args.seeds} seeds, 3/4 of {args.steps} steps); "
          f"splits {splits}", flush=True)
    rows = []
    for comp in args.compensations.split(","):
        spec = replace(base, warmup_steps=args.steps // 10 if comp in ("warmup", "all") else 0,
                       lr_delay_scale=comp in ("delay-lr", "all"), weight_prediction=comp in ("predict", "all"))
        t0 = time.perf_counter()
        _, results = run_pilots(spec, splits, args.seeds, target, args.window)
        for r in results:
            finals = [smooth(x, args.window)[-1] for x in r.losses]
            rows.append({"compensation": comp, "K": r.stages, "split": list(r.split), "lr": round(r.lr, 5),
                         "steps_to_target": r.steps, "median_steps": r.median_steps,
                         "final_loss_mean": round(statistics.fmean(finals), 5),
                         "final_loss_std": round(statistics.stdev(finals), 5) if len(finals) > 1 else 0.0})
            print(rows[-1], flush=True)
        print(f"  {comp}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with args.csv.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()
