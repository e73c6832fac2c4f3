"""How much two processes training one model at once slow each other, on this machine.

    python benchmarks/corun.py smallcnn:128 mlp:128 resnet20:128 --repeats 3 --out benchmarks/results/corun.json

A profile times a model alone; on a CPU host two stage processes that compute at the same
moment share caches and memory bandwidth, which the simulator models as
``Scenario.concurrent_speed`` (:func:`ddgsim.predict.event_sim.contention_factors`), measured
by ``calibrate`` on a reference conv block at batch 16, and by ``validate`` on the model
itself (:mod:`ddgsim.calibrate.corun`). This script repeats that measurement (3 rounds each)
``--repeats`` times, interleaved over the models. Results on the development VM:
docs/validation.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ddgsim.calibrate.corun import measure_corun


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", metavar="MODEL:BATCH")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    pairs = [(m.split(":")[0], int(m.split(":")[1])) for m in args.models]
    results: list[dict[str, Any]] = []
    for rep in range(args.repeats):
        for model, batch in pairs:
            c = measure_corun(model, batch, args.threads)
            results.append({"repeat": rep + 1, **c.to_json()})
            print(f"[{rep + 1}/{args.repeats}] {model} b{batch}: alone {c.alone_ms:.3f} ms, together "
                  f"{c.together_ms:.3f} ms, speed per round {', '.join(f'{s:.3f}' for s in c.speeds)}", flush=True)
    for model, batch in pairs:
        speeds = [s for r in results if (r["model"], r["batch_size"]) == (model, batch) for s in r["speeds"]]
        print(f"{model} b{batch}: speed median {statistics.median(speeds):.3f}, range {min(speeds):.3f}–"
              f"{max(speeds):.3f} over {len(speeds)} rounds")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
