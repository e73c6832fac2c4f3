"""The gradient all-reduce inside real training runs against its prediction.

Run on a ``validate --replicas`` output folder (or any metrics + plan of a replicated run)::

    .venv/bin/python benchmarks/allreduce_in_training.py VALIDATE_OUT [--warmup 2] [--profile FILE]

For every replicated run under ``VALIDATE_OUT/runs`` (plans with ``replicas``) and each of
its measured repeats (``*.rN.metrics.json``): per iteration, each replicated stage's time in
its all-reduces is the smallest ``comm_ms`` over its replicas — the replica that reaches the
update last waits for nobody, so its time is the collective's own (the gradients' and, on the
last stage, the loss shares'; the flattening copy too); the others also wait for it. The
median over iterations (first ``--warmup`` dropped) is set against the plan's prediction,
``ddgsim.predict.collective.update_allreduce_ms`` on the plan's scenario for the stage's
parameter bytes (from the plan's profile). Pure pipeline stages, with no all-reduce, are
left out; so are runs whose stages communicate with other stages too (their ``comm_ms``
holds pipeline messages as well): K = 1 only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ddgsim.plan.format import load as load_plan
from ddgsim.predict.collective import update_allreduce_ms
from ddgsim.predict.scenario import load_scenario
from ddgsim.profile.format import load as load_profile


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("out", type=Path, help="a validate --out folder")
    ap.add_argument("--warmup", type=int, default=2, help="iterations dropped first")
    ap.add_argument("--profile", type=Path, default=None, help="the profile (default: the plan's path)")
    args = ap.parse_args()
    found = False
    for plan_path in sorted((args.out / "runs").glob("*.plan.json")):
        plan = load_plan(plan_path)
        if plan.num_stages != 1 or max(plan.replicas) < 2:
            continue
        found = True
        prof = load_profile(args.profile or (plan.profile_ref.path if plan.profile_ref else ""))
        sc = load_scenario(plan.scenario)
        devs = list(plan.layout.devices[0])
        params = sum(u.param_bytes for u in prof.units)
        pred = float(update_allreduce_ms(sc, devs, params, plan.allreduce, last=True))
        curve = "measured curve" if sc.measured_allreduce(devs) else "link model"
        stem = plan_path.name.removesuffix(".plan.json")
        for m in sorted(plan_path.parent.glob(f"{stem}.r*.metrics.json")):
            rows = json.loads(m.read_text())["per_stage"]
            per_iter = [min(r["comm_ms"][i] for r in rows) for i in range(len(rows[0]["comm_ms"]))]
            kept = per_iter[args.warmup:]
            med = statistics.median(kept)
            print(f"{m.name}: {params} parameter bytes on {len(devs)} replicas; all-reduce per iteration "
                  f"median {med:.3f} ms (iterations {min(kept):.3f}-{max(kept):.3f}); predicted {pred:.3f} ms "
                  f"({curve}): error {100 * (pred - med) / med:+.1f}%")
    if not found:
        sys.exit(f"no one-stage replicated run under {args.out / 'runs'}")


if __name__ == "__main__":
    main()
