"""``validate``: run several splits for real and compare the measured iteration time with the prediction.

    python -m ddgsim validate resnet56 --gpus 1,2 --schedules bp,ddg,ddg-pipelined --splits 3 \\
        --steps 10 --batch-size 128 --out benchmarks/results

Writes ``OUT/validation.csv`` (one row per run), ``OUT/report.html`` (plotly) and,
under ``OUT/runs/``, every plan, the executor's metrics and both timelines
(``*.predicted.trace.json``, ``*.measured.trace.json``: open them in Perfetto).
Prints the median and worst absolute error and whether the ranking is preserved.

The options build a :class:`~ddgsim.compare.config.ValidateConfig`;
:func:`ddgsim.compare.validate.run` does the work (usable from Python: docs/validation.md).

A run whose execution fails is retried once; failing again it is recorded as failed
(``status``/``error`` columns of the CSV, a red row in the report) and the other runs
go on. The command then ends with exit status 1 and one line on stderr naming the
failed runs (bad arguments: exit status 2, before anything runs).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ddgsim.commands._help import add_command
from ddgsim.errors import UserError

if TYPE_CHECKING:
    from ddgsim.compare.config import ValidateConfig

DEFAULT_SCHEDULES = "bp,ddg,ddg-pipelined,gpipe,1f1b"
FLAGS = {"stages": "--gpus", "max_steal_pct": "--max-steal", "tolerance_pct": "--tolerance"}
"""The flag of each config field whose name is not the flag's."""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(subparsers, "validate", help="predicted vs measured: run splits on the executor and compare",
                              description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("model", help="model name (see 'ddgsim models')")
    p.add_argument("--gpus", "-K", default="1,2", metavar="K[,K..]",
                   help="numbers of stages, e.g. 2 or 1,2 (K=1: the one-process bp run; default 1,2)")
    p.add_argument("--schedules", default=DEFAULT_SCHEDULES, metavar="S,..",
                   help=f"schedules for K >= 2 (default {DEFAULT_SCHEDULES})")
    p.add_argument("--micro-batches", default="2", metavar="M[,M..]",
                   help="micro-batch counts for gpipe and 1f1b (default 2); each must divide the batch size")
    p.add_argument("--replicas", default="1", metavar="D[,D..]",
                   help="replicas of every stage: each K is also run as K stages x D replicas (K*D processes; "
                   "K=1 with D=2 is data parallelism), for each D (default 1: pure pipelines)")
    p.add_argument("--runtimes", default="ddgsim", metavar="R[,R]",
                   help="who runs the splits: ddgsim (the executor; default) and/or torch "
                   "(torch.distributed.pipelining, for the gpipe and 1f1b runs)")
    p.add_argument("--splits", type=int, default=3, metavar="N",
                   help="splits per K and schedule: planned, even, then unbalanced ones (default 3)")
    p.add_argument("--repeats", type=int, default=3, metavar="R",
                   help="executions per run, interleaved over the runs; the median is compared (default 3)")
    p.add_argument("--reference-every", type=int, default=4, metavar="N",
                   help="measure the one-process run (K=1), the speedups' reference, again after every N other "
                   "executions of a round (default 4; 0: only at the start of each round)")
    p.add_argument("--no-speed-probe", action="store_true",
                   help="do not time the model's whole step here between executions (by default it is, before every "
                   "one-process execution and at the end: the machine's speed over the session against the profile's)")
    p.add_argument("--steps", type=int, default=10, metavar="S", help="iterations per run (default 10)")
    p.add_argument("--warmup", type=int, default=None, metavar="W",
                   help="iteration gaps dropped before the median (default K)")
    p.add_argument("--warmup-ms", type=float, default=300.0, metavar="MS",
                   help="without --warmup, the gaps dropped last at least this long: short steps run more "
                   "iterations than --steps (default 300)")
    p.add_argument("--window-ms", type=float, default=500.0, metavar="MS",
                   help="the gaps measured last at least this long (default 500; 0: exactly --steps)")
    p.add_argument("--batch-size", type=int, default=128, metavar="B", help="samples per batch (default 128)")
    p.add_argument("--scenario", default=None, metavar="NAME|FILE",
                   help="hardware scenario (default on cpu: this machine's, calibrated once and cached; "
                   "on cuda: ideal-K)")
    p.add_argument("--profile", default=None, metavar="FILE",
                   help="profile JSON to predict with (default: this machine's, cached or measured now)")
    p.add_argument("--max-steal", type=float, default=3.0, metavar="PCT",
                   help="measure an execution again when the hypervisor stole more than PCT%% of the machine's CPU "
                   "time during it (shared cloud VMs; default 3; at most 3 executions, the least disturbed kept)")
    p.add_argument("--reprofile", action="store_true",
                   help="measure the profile (and, without --scenario, calibrate the scenario) now even if this "
                   "machine's are cached (for machines whose speed drifts)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cpu (gloo) or cuda (NCCL)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per stage process (default 1)")
    p.add_argument("--tolerance", type=float, default=5.0, metavar="PCT",
                   help="predictions closer than this are ties for the ranking check (default 5)")
    p.add_argument("--no-trace", action="store_true", help="no measured traces (and no timeline figures)")
    p.add_argument("--figures", default=None, metavar="DIR",
                   help="also export the figures as PNG here (kaleido + Chromium; skipped with a message without)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ddgsim.compare import validate
    from ddgsim.compare.rows import WITHIN_NOISE, WITHIN_TOLERANCE

    try:
        report = validate.run(_config(args))
    except validate.ConfigError as exc:  # the CLI names any other field as its flag (FLAGS)
        if exc.field != "runtimes":
            raise
        raise UserError(f"--runtimes must be ddgsim and/or torch separated by commas, got '{args.runtimes}'") from None
    for line in report.summary.lines():
        print(line)
    print(f"wrote {report.csv_path}, {report.report_path}")
    beyond = sum(len(v) for k, v in report.summary.verdicts.items() if k not in (WITHIN_TOLERANCE, WITHIN_NOISE))
    if beyond:
        out = str(Path(args.out))
        print(f"{beyond} run{'s' if beyond != 1 else ''} beyond {report.summary.tol_pct:g}% and their noise, which is "
              "their repeats' spread minutes apart; how far this machine moves between runs: the same command again "
              f"with --out {out}-again, then ddgsim compare-runs {out} {out}-again")
    if report.failure:
        sys.stderr.write(f"error: {report.failure}\n")
        return 1
    return 0


def _config(args: argparse.Namespace) -> ValidateConfig:
    """The flags as a config (the lists parsed here; every value checked by the config)."""
    from ddgsim.commands._args import parse_ints
    from ddgsim.compare.config import ValidateConfig

    stages = parse_ints(args.gpus, "--gpus")
    schedules = tuple(s.strip() for s in args.schedules.split(",") if s.strip())
    runtimes = tuple(r.strip() for r in args.runtimes.split(",") if r.strip())
    micro = parse_ints(args.micro_batches, "--micro-batches")
    replicas = parse_ints(args.replicas, "--replicas")
    command = f"python -m ddgsim validate {shlex.join(sys.argv[2:]) if sys.argv[1:2] == ['validate'] else ''}"
    return ValidateConfig(
        model=args.model, out=Path(args.out), stages=tuple(stages), schedules=schedules, micro_batches=tuple(micro),
        replicas=tuple(replicas), runtimes=runtimes, splits=args.splits, repeats=args.repeats, steps=args.steps,
        reference_every=args.reference_every, speed_probe=not args.no_speed_probe,
        warmup=args.warmup, warmup_ms=args.warmup_ms, window_ms=args.window_ms, batch_size=args.batch_size,
        scenario=args.scenario, profile=args.profile, max_steal_pct=args.max_steal, reprofile=args.reprofile,
        device=args.device, threads=args.threads, tolerance_pct=args.tolerance, trace=not args.no_trace,
        figures=Path(args.figures) if args.figures else None, command=command)
