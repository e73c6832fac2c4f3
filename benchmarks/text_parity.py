"""Validation loss of a byte-level GPT on the Python standard library's sources: BP vs DDG
with K = 2, 3 over several seeds, the same budget (mean ± std, bits per byte).

Run: ``.venv/bin/python benchmarks/text_parity.py [--model gpt-mini] [--seeds 3] [--steps 600]
[--stages 1,2,3 --lrs 0.03,0.03,0.0167] [--seed-list 0]``

Each configuration trains with the paper's optimizer (SGD, Nesterov momentum 0.9, weight
decay 5e-4, one optimizer per stage) through :func:`ddgsim.execute.engine.run_inprocess`
— the StageWorker math the distributed runner executes, bit-identical to it on CPU
(tests/test_tokens_execute.py) — and evaluates the final weights on the fixed
validation windows of ``--data text`` (:mod:`ddgsim.execute.text`). The seed sets the
initialisation and the data order; the corpus and its split are the same for every seed.
Stage boundaries lie between transformer blocks (units: embed, blocks.0..L-1, ln_f, head).
"""

from __future__ import annotations

import argparse
import json
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


def even_split(num_units: int, k: int) -> list[int]:
    """Boundaries that give the blocks (units 1 .. n-3) to the K stages as evenly as possible."""
    blocks = num_units - 3
    return [1 + round(blocks * i / k) for i in range(1, k)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--model", default="gpt-mini")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.03)
    ap.add_argument("--lrs", default=None, help="a rate per K of --stages, e.g. 0.03,0.03,0.0167 (default: --lr for all)")
    ap.add_argument("--stages", default="1,2,3", help="the Ks to run (K = 1 is bp, the others ddg)")
    ap.add_argument("--seed-list", default=None, help="these seeds instead of 0..--seeds-1 (to split runs over processes)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    spec = get_spec(args.model)
    n = len(split_units(build_model(spec), spec.io))
    ks = [int(k) for k in args.stages.split(",")]
    configs = [("bp" if k == 1 else "ddg", k) for k in ks]
    lrs = [float(x) for x in args.lrs.split(",")] if args.lrs else [args.lr] * len(ks)
    if len(lrs) != len(ks):
        sys.exit(f"--lrs has {len(lrs)} rates for {len(ks)} stage counts")
    seeds = [int(x) for x in args.seed_list.split(",")] if args.seed_list else list(range(args.seeds))
    print(f"{args.model} on --data text, batch {args.batch} x {spec.io.input_shape[0]} bytes, {args.steps} steps, "
          f"lr {','.join(map(str, lrs))} (per K), Nesterov 0.9, wd 5e-4, seeds {seeds}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for (sched, k), lr in zip(configs, lrs, strict=True):
            split = even_split(n, k)
            plan = Path(tmp) / f"{sched}-k{k}.json"
            Plan.for_split(model=args.model, split=split, num_units=n, schedule=sched,
                           batch_size=args.batch).save(plan)
            losses, bits = [], []
            t0 = time.perf_counter()
            for seed in seeds:
                cfg = RunConfig(plan=plan, steps=args.steps, data="text", seed=seed, lr=lr)
                _res, job, ds = run_inprocess_job(cfg, every_iteration=False)  # 3 000 copies of the model: 10 GB
                score = evaluate_stages(job.stages, ds, 256, job.spec.io)
                losses.append(score["loss"])
                bits.append(score["bits_per_token"])
            rows.append({"config": f"{sched} K={k}", "split": split, "lr": lr, "seeds": seeds, "loss": losses,
                         "bits_per_byte": bits,
                         "seconds": round(time.perf_counter() - t0, 1)})
            print(f"  {rows[-1]['config']}: {rows[-1]['seconds']:.0f} s", file=sys.stderr, flush=True)
    print(f"{'config':<9} {'split':<8} {'val loss (mean ± std)':>22} {'bits/byte':>10}  per seed")
    for r in rows:
        mean, std = statistics.mean(r["loss"]), statistics.stdev(r["loss"]) if len(r["loss"]) > 1 else 0.0
        print(f"{r['config']:<9} {r['split']!s:<8} {mean:>13.4f} ± {std:6.4f} {statistics.mean(r['bits_per_byte']):>10.3f}"
              f"  {' '.join(f'{v:.4f}' for v in r['loss'])}   ({r['seconds']:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "steps": args.steps, "batch": args.batch,
                                         "lr": args.lr, "seeds": seeds, "source": ds.source, "rows": rows},
                                        indent=1) + "\n")


if __name__ == "__main__":
    main()
