"""The committed validation set: ``ddgsim validate`` over several models on this machine, pooled.

Run: ``.venv/bin/python benchmarks/validation_set.py [--out benchmarks/results/validation-set]``

For every model (default resnet20, resnet56, resnet110, smallcnn) it runs, as a new user
would on a fresh machine::

    python -m ddgsim validate MODEL --gpus 1,2 --splits 2 --steps 12 --repeats 3 \\
        --micro-batches 2 --runtimes ddgsim,torch --reprofile --out OUT/MODEL

i.e. the profile of this machine measured right before (``--reprofile``: the speed of a
shared VM drifts over minutes), K = 1 and every schedule at K = 2 (bp, ddg,
ddg-pipelined, gpipe and 1f1b with M = 2, those two also under
torch.distributed.pipelining), two splits each, three interleaved repeats. Then, for
the micro-batch costs, resnet20 with gpipe and 1f1b at M = 2 and 4, batch 64 and 128.
Finally every ``validation.csv`` is pooled into ``OUT/validation-set.csv`` and the
pooled median and worst absolute error are printed, per runtime and overall.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ddgsim.compare.validate import COLUMNS, read_csv, summarize  # noqa: E402

MODELS = ("resnet20", "resnet56", "resnet110", "smallcnn")


def _validate(out: Path, model: str, *args: str) -> None:
    cmd = [sys.executable, "-m", "ddgsim", "validate", model, "--steps", "12", "--repeats", "3", "--reprofile",
           "--no-trace", "--out", str(out), *args]
    print("$", " ".join(cmd[1:]), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=False)
    print(f"({time.perf_counter() - t0:.0f} s)", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "validation-set")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--skip-micro", action="store_true", help="leave out the micro-batch sweep")
    args = ap.parse_args()
    parts: list[tuple[str, Path]] = []
    for model in args.models.split(","):
        out = args.out / model
        _validate(out, model, "--gpus", "1,2", "--splits", "2", "--micro-batches", "2", "--runtimes", "ddgsim,torch")
        parts.append((model, out / "validation.csv"))
    if not args.skip_micro:
        for batch in (64, 128):
            out = args.out / f"resnet20-micro-b{batch}"
            _validate(out, "resnet20", "--gpus", "2", "--schedules", "gpipe,1f1b", "--micro-batches", "2,4",
                      "--splits", "2", "--batch-size", str(batch))
            parts.append((f"resnet20-micro-b{batch}", out / "validation.csv"))
    rows = []
    pooled = args.out / "validation-set.csv"
    with pooled.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["set", *COLUMNS])
        for name, path in parts:
            if not path.is_file():
                print(f"missing: {path}")
                continue
            with path.open(newline="") as src:
                for rec in csv.DictReader(src):
                    w.writerow([name, *(rec.get(c, "") for c in COLUMNS)])
            rows += [(name, r) for r in read_csv(path)]
    print(f"wrote {pooled}")
    for label, keep in (("all", lambda r: True), ("ddgsim executor", lambda r: r.runtime == "ddgsim"),
                        ("torch.distributed.pipelining", lambda r: r.runtime == "torch")):
        sel = [r for _, r in rows if keep(r)]
        if not sel:
            continue
        s = summarize(sel)
        over5 = sum(1 for r in sel if r.ok and abs(r.error_pct) > 5)
        print(f"{label}: {s.runs} runs ({len(s.failed)} failed), median |error| {s.median_abs_error_pct:.1f} %, "
              f"worst {s.worst_abs_error_pct:.1f} %, {over5} above 5 %, "
              f"median spread between repeats {s.median_spread_pct:.1f} %")
    for name in dict(parts):
        sel = [r for n, r in rows if n == name and r.ok]
        if sel:
            errs = [abs(r.error_pct) for r in sel]
            print(f"  {name}: {len(sel)} runs, median |error| {statistics.median(errs):.1f} %, worst {max(errs):.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
