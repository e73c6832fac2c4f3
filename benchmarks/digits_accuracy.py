"""Test accuracy on scikit-learn digits: BP vs DDG with K = 2, 3 over several seeds (mean ± std).

Run: ``.venv/bin/python benchmarks/digits_accuracy.py [--model mlp] [--seeds 5] [--epochs 30]``

Each configuration trains with the paper's optimizer (SGD, Nesterov momentum 0.9,
weight decay 5e-4, one optimizer per stage), batch 32, on the fixed 80/20 split,
through :func:`ddgsim.execute.engine.run_inprocess` — the same StageWorker math the
distributed runner executes, bit-identical to it on CPU (tests/test_executor_dist.py)
— and evaluates the final weights on the 359 test images. The seed sets the model
initialisation, the train/test split and the data order.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ddgsim.execute.config import RunConfig
from ddgsim.execute.runner import evaluate_stages, run_inprocess_job
from ddgsim.models.registry import build_model, get_spec
from ddgsim.plan.format import Plan
from ddgsim.profile.units import split_units

SPLITS = {"mlp": {2: [2], 3: [2, 4]}, "smallcnn": {2: [3], 3: [3, 6]}}
"""Stage boundaries (unit indices): mlp units flatten fc1 relu1 | fc2 relu2 | fc3; smallcnn conv-bn-relu blocks."""


def write_plan(d: Path, model: str, schedule: str, split: list[int], batch: int) -> Path:
    spec = get_spec(model)
    n = len(split_units(build_model(spec), spec.io))
    path = d / f"{model}-{schedule}-k{len(split) + 1}.json"
    Plan.for_split(model=model, split=split, num_units=n, schedule=schedule, batch_size=batch).save(path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--model", default="mlp", choices=sorted(SPLITS))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.01)
    args = ap.parse_args()
    torch.set_num_threads(1)
    configs = [("bp", 1), ("bp", 2), ("ddg", 2), ("ddg", 3)]
    per_epoch = 1438 // args.batch  # 1797 digits, 359 held out
    steps = args.epochs * per_epoch
    print(f"{args.model} on digits, batch {args.batch}, {args.epochs} epochs = {steps} steps, lr {args.lr}, "
          f"Nesterov 0.9, wd 5e-4, seeds 0..{args.seeds - 1}")
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for sched, k in configs:
            split = [] if k == 1 else SPLITS[args.model][k]
            plan = write_plan(Path(tmp), args.model, sched, split, args.batch)
            accs = []
            t0 = time.perf_counter()
            for seed in range(args.seeds):
                cfg = RunConfig(plan=plan, steps=steps, data="digits", seed=seed, lr=args.lr)
                _res, job, ds = run_inprocess_job(cfg)
                accs.append(evaluate_stages(job.stages, ds, 256, job.spec.io)["accuracy"])
            mean, std = statistics.mean(accs), statistics.stdev(accs) if len(accs) > 1 else 0.0
            rows.append((f"{sched} K={k}", mean, std, accs, time.perf_counter() - t0))
    print(f"{'config':<10} {'test acc % (mean ± std)':>24}  per seed")
    for name, mean, std, accs, secs in rows:
        print(f"{name:<10} {100 * mean:>15.2f} ± {100 * std:5.2f}  "
              f"{' '.join(f'{100 * a:.1f}' for a in accs)}   ({secs:.0f} s)")


if __name__ == "__main__":
    main()
