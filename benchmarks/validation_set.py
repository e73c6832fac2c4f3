"""The committed validation set: ``ddgsim validate`` over several models on this machine, pooled.

Run: ``.venv/bin/python benchmarks/validation_set.py [--out benchmarks/results/validation-set]``

For every model (default resnet20, resnet56, resnet110, smallcnn, gpt-mini) it runs, as a new user
would on a fresh machine::

    python -m ddgsim validate MODEL --gpus 1,2 --splits S --steps 12 --repeats 3 \\
        --micro-batches 2 --runtimes ddgsim,torch --reprofile --no-trace --out OUT/MODEL

i.e. the profile of this machine measured right before (``--reprofile``: the speed of a
shared VM drifts over minutes), K = 1 and every schedule at K = 2 (bp, ddg,
ddg-pipelined, gpipe and 1f1b with M = 2, those two also under
torch.distributed.pipelining), S splits each (2; 1 for resnet56 and resnet110, whose
runs take up to a minute each on the 2-core machine), three interleaved repeats; an
execution during which the hypervisor stole more than 3 % of the CPU is measured again. Then, for the
micro-batch costs, resnet20 with gpipe and 1f1b at M = 2 and 4, batch 64 and 128
(the planned split; with the K = 1 run that the drift correction needs).
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

from ddgsim.compare.accuracy import speed_matched_errors, summarize  # noqa: E402
from ddgsim.compare.validation_csv import COLUMNS, read_csv  # noqa: E402

MODELS = ("resnet20", "resnet56", "resnet110", "smallcnn", "gpt-mini")
SPLITS = {"resnet56": 1, "resnet110": 1}
"""Splits per K and schedule where not 2."""


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
    ap.add_argument("--micro-batch-sizes", default="64,128", help="batch sizes of the micro-batch sweep")
    ap.add_argument("--pool-only", action="store_true", help="run nothing: pool the CSVs already under --out")
    ap.add_argument("--figures", type=Path, help="also write the pooled scatter and error figures (PNG) here")
    args = ap.parse_args()
    parts: list[tuple[str, Path]] = []
    for model in args.models.split(","):
        out = args.out / model
        if not args.pool_only:
            _validate(out, model, "--gpus", "1,2", "--splits", str(SPLITS.get(model, 2)), "--micro-batches", "2",
                      "--runtimes", "ddgsim,torch")
        parts.append((model, out / "validation.csv"))
    if not args.skip_micro:
        for batch in (int(b) for b in args.micro_batch_sizes.split(",")):
            out = args.out / f"resnet20-micro-b{batch}"
            if not args.pool_only:
                _validate(out, "resnet20", "--gpus", "1,2", "--schedules", "gpipe,1f1b", "--micro-batches", "2,4",
                          "--splits", "1", "--batch-size", str(batch))
            parts.append((f"resnet20-micro-b{batch}", out / "validation.csv"))
    _keep_profiles(args.out, [path.parent for _, path in parts])
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
              f"median spread between repeats {s.median_spread_pct:.1f} %; with the drift factored out "
              f"(K >= 2): median {s.speed_matched_median_pct:.1f} %, worst {s.speed_matched_worst_pct:.1f} %")
    for name in dict(parts):
        sel = [r for n, r in rows if n == name and r.ok]
        if sel:
            errs = [abs(r.error_pct) for r in sel]
            matched = [abs(e) for e in speed_matched_errors(sel).values()]
            drift = f"; drift factored out: median {statistics.median(matched):.1f} %, worst {max(matched):.1f} %" \
                if matched else ""
            print(f"  {name}: {len(sel)} runs, median |error| {statistics.median(errs):.1f} %, "
                  f"worst {max(errs):.1f} %{drift}")
    if args.figures and rows:
        _figures(args.figures, [r for _, r in rows])
    return 0


def _keep_profiles(out: Path, folders: list[Path]) -> None:
    """Copy the profile each validation predicted with (from its plans) to OUT/profiles/SET.json.

    Run right after the validations: a later validation of the same model and batch size on
    this machine re-measures into the same cache file."""
    import json
    import shutil

    (out / "profiles").mkdir(parents=True, exist_ok=True)
    for folder in folders:
        plan = next(iter(sorted((folder / "runs").glob("*.plan.json"))), None)
        if plan is None:
            continue
        ref = json.loads(plan.read_text()).get("profile", {})
        src = Path(ref.get("path", ""))
        if src.is_file():
            # Named by set: two sets of one model and batch size measure two profiles (the cache keeps the last).
            shutil.copyfile(src, out / "profiles" / f"{folder.name}.json")


def _figures(folder: Path, rows: list) -> None:  # type: ignore[type-arg]
    from ddgsim.compare.figures import export_pngs
    from ddgsim.compare.report import error_figure, scatter_figure

    s = summarize(rows)
    head = (f"{s.runs} runs, 3 interleaved repeats each: median |error| {s.median_abs_error_pct:.1f}%, "
            f"worst {s.worst_abs_error_pct:.1f}%")
    models = ", ".join(sorted({r.model for r in rows}))
    items = [(scatter_figure(rows, f"Predicted vs measured, this 2-core machine ({models})<br><sup>{head}</sup>"),
              folder / "validation-scatter.png"),
             (error_figure(rows, "Prediction error per run (median of 3 repeats)"), folder / "validation-errors.png")]
    n = export_pngs(items, width=1100)
    print(f"wrote {n} figure(s) to {folder}")


if __name__ == "__main__":
    sys.exit(main())
