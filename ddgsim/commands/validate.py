"""``validate``: run several splits for real and compare the measured iteration time with the prediction.

    python -m ddgsim validate resnet56 --gpus 1,2 --schedules bp,ddg,ddg-pipelined --splits 3 \\
        --steps 10 --batch-size 128 --out benchmarks/results

Writes ``OUT/validation.csv`` (one row per run), ``OUT/report.html`` (plotly) and,
under ``OUT/runs/``, every plan, the executor's metrics and both timelines
(``*.predicted.trace.json``, ``*.measured.trace.json``: open them in Perfetto).
Prints the median and worst absolute error and whether the ranking is preserved.

A run whose execution fails is retried once; failing again it is recorded as failed
(``status``/``error`` columns of the CSV, a red row in the report) and the other runs
go on. The command then ends with exit status 1 and one line on stderr naming the
failed runs (bad arguments: exit status 2, before anything runs).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ddgsim.commands._help import add_command
from ddgsim.errors import UserError

if TYPE_CHECKING:
    from ddgsim.predict.scenario import Scenario

DEFAULT_SCHEDULES = "bp,ddg,ddg-pipelined,gpipe,1f1b"


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


def _default_scenario(device: str, k_max: int, threads: int, recalibrate: bool) -> str:
    """On CPU this machine's calibrated scenario (calibrated now if not cached); on CUDA ideal-K."""
    if device != "cpu":
        return f"ideal-{k_max}"
    from ddgsim.compare.validate import stderr
    from ddgsim.profile.local_scenario import local_scenario

    path, measured = local_scenario(threads, recalibrate=recalibrate)
    if measured:
        stderr(f"calibrated this machine (links, all-reduce, contention); cached as {path}")
    return str(path)


def _with_model_contention(scenario: Scenario, model: str, batch_size: int, threads: int, profile_path: Path | None,
                           remeasure: bool) -> tuple[Scenario, str]:
    """This machine's scenario with the concurrent speed of two processes training ``model``
    (:mod:`ddgsim.profile.corun`; cached beside ``profile_path`` when given), and a line saying so; where
    the measurement fails, the scenario as it is and a warning."""
    from dataclasses import replace

    from ddgsim.compare.validate import stderr
    from ddgsim.profile.corun import cached_corun

    cache = profile_path.with_name(profile_path.stem + ".corun.json") if profile_path is not None else None
    try:
        corun, measured = cached_corun(model, batch_size, threads, cache, remeasure=remeasure)
    except RuntimeError as exc:  # a side measurement: the calibration's figure stands in
        line = (f"warning: {exc}; predicting with the calibration's concurrent_speed "
                f"{scenario.concurrent_speed:g}")
        stderr(line)
        return scenario, line
    speed = min(1.0, round(corun.speed, 3))
    line = (f"two processes training {model} at batch {batch_size} at once: each at {corun.speed:.3f} of its speed "
            f"alone (rounds {', '.join(f'{x:.3f}' for x in corun.speeds)}; the calibration's reference kernel: "
            f"{scenario.concurrent_speed:.3f}); predicting with concurrent_speed {speed:g}")
    if measured:
        stderr(line + (f"; cached as {cache}" if cache is not None else ""))
    return replace(scenario, concurrent_speed=speed), line


def run(args: argparse.Namespace) -> int:
    from ddgsim.commands._args import parse_ints
    from ddgsim.schedule import SCHEDULES

    stages = parse_ints(args.gpus, "--gpus")
    schedules = [s.strip() for s in args.schedules.split(",") if s.strip()]
    for s in schedules:
        if s not in SCHEDULES:
            raise UserError(f"--schedules: '{s}' is not one of {', '.join(SCHEDULES)}")
    runtimes = tuple(r.strip() for r in args.runtimes.split(",") if r.strip())
    if not runtimes or any(r not in ("ddgsim", "torch") for r in runtimes):
        raise UserError(f"--runtimes must be ddgsim and/or torch separated by commas, got '{args.runtimes}'")
    micro = tuple(parse_ints(args.micro_batches, "--micro-batches"))
    from ddgsim.profile.format import check_micro_batches

    micro = check_micro_batches(args.batch_size, micro) if any(s in ("gpipe", "1f1b") for s in schedules) else ()
    replicas = tuple(parse_ints(args.replicas, "--replicas"))
    # the costs a replica's shard needs: one of D (or of M·D) micro-batches, measured like micro-batches
    shards = sorted({D for D in replicas if D > 1} | {m * D for m in micro for D in replicas if D > 1})
    measured_counts = tuple(sorted(set(micro) | set(shards)))
    for option, value in (("--splits", args.splits), ("--batch-size", args.batch_size),
                          ("--threads", args.threads), ("--repeats", args.repeats)):
        if value < 1:
            raise UserError(f"{option} must be > 0, got {value}")
    if args.steps < max(stages) + 2:
        raise UserError(f"--steps must be >= K+2 = {max(stages) + 2} (fill, then at least 2 steady gaps), "
                        f"got {args.steps}")
    if args.warmup is not None and not 0 <= args.warmup < args.steps - 1:
        raise UserError(f"--warmup must be in 0..{args.steps - 2}, got {args.warmup}")
    for option, ms in (("--warmup-ms", args.warmup_ms), ("--window-ms", args.window_ms)):
        if not 0 <= ms < 60_000:
            raise UserError(f"{option} must be in 0..60000 ms, got {ms:g}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is not a folder")
    if args.device == "cuda":
        import torch

        need, have = max(stages) * max(replicas), torch.cuda.device_count()
        if need > have:
            raise UserError(f"--device cuda: the largest run (K={max(stages)} x D={max(replicas)}) needs {need} "
                            f"GPUs, this machine has {have}")

    from ddgsim.compare import validate as v
    from ddgsim.models.registry import get_spec
    from ddgsim.predict.scenario import load_scenario
    from ddgsim.profile import format as profile_format

    get_spec(args.model)
    scenario_ref = args.scenario or _default_scenario(args.device, max(stages) * max(replicas), args.threads,
                                                      args.reprofile)
    scenario = load_scenario(scenario_ref)
    if args.profile:
        prof = profile_format.load(args.profile)
        if prof.model != args.model or prof.batch_size != args.batch_size:
            raise UserError(f"--profile {args.profile} is for {prof.model} at batch {prof.batch_size}, "
                            f"not {args.model} at batch {args.batch_size}")
        path: Path | None = Path(args.profile)
        source = "file"
    else:
        from ddgsim.profile.store import get_profile

        # A measurement of this machine is compared with, so only its own profile will do. On CPU with
        # one thread it is timed with the thread's CPU clock: time the hypervisor steals is not in it.
        clock = "thread" if args.device == "cpu" and args.threads == 1 else "wall"
        prof, path, source = get_profile(args.model, args.batch_size, args.device,
                                         threads=args.threads if args.device == "cpu" else None,
                                         micro_batches=measured_counts, this_machine=True,
                                         remeasure=args.reprofile,
                                         clock=clock)
        if source == "measured":
            v.stderr(f"profiled {args.model} at batch {args.batch_size} on this machine"
                     + (f" (and {', '.join(map(str, measured_counts))} micro-batches)" if measured_counts else "")
                     + f"; cached as {path}")
    warning = v.profile_warning(prof, str(path or args.profile or ""), measured_counts)
    if warning:
        v.stderr(warning)
    corun_line = ""
    if args.device == "cpu" and not args.scenario and max(stages) * max(replicas) > 1:
        # cached beside this machine's profile in the cache, never beside a file the user gave
        scenario, corun_line = _with_model_contention(scenario, args.model, args.batch_size, args.threads,
                                                      path if source != "file" else None, args.reprofile)
    profile_ref = {"path": str(path) if path else "", "model": prof.model, "batch_size": prof.batch_size,
                   "device": prof.device, "threads": prof.threads}
    opts = v.Options(stages=stages, schedules=schedules, splits=args.splits, steps=args.steps,
                     warmup=args.warmup, threads=args.threads, device=args.device, trace=not args.no_trace,
                     tol_pct=args.tolerance, repeats=args.repeats, micro_batches=micro or (2,),
                     runtimes=runtimes, max_steal_pct=args.max_steal, replicas=replicas,
                     min_warmup_ms=args.warmup_ms, min_window_ms=args.window_ms)
    if len(stages) * len(replicas) > 1:  # several (K, D) pairs: run those that fit on the scenario
        skipped = v.oversized(scenario, opts)
        if len(skipped) < len(stages) * len(replicas):
            opts.skip_oversized = True
            for K, D in skipped:
                v.stderr(f"note: K={K} x D={D} needs {K * D} devices and scenario '{scenario.name}' has "
                         f"{len(scenario.devices)}: not run")
    v.plan_runs(prof, scenario, opts)  # every UserError before anything runs
    out.mkdir(parents=True, exist_ok=True)
    header = [
        f"command: python -m ddgsim validate {shlex.join(sys.argv[2:]) if sys.argv[1:2] == ['validate'] else ''}",
        f"profile: {path or '(measured, not cached)'} ({source}); scenario: {scenario_ref} ({scenario.description})",
        f"{args.steps} steps per run (more where steps are short: at least {args.warmup_ms:g} ms dropped"
        f"{'' if args.warmup is None else ' unless --warmup'}, {args.window_ms:g} ms measured), median over the "
        f"iteration gaps after the first {'K' if args.warmup is None else args.warmup}; "
        f"{args.threads} thread(s) per stage process",
        *([corun_line] if corun_line else []),
    ]
    import os

    load0 = os.getloadavg()
    rows, timelines = v.run_all(prof, profile_ref, scenario, scenario_ref, opts, out)
    header.append(f"load average before {tuple(round(x, 2) for x in load0)}, "
                  f"after {tuple(round(x, 2) for x in os.getloadavg())}")
    if warning:
        header.append(warning)
    v.write_csv(rows, out / v.CSV_NAME)
    summary = v.summarize(rows, args.tolerance)
    (out / "summary.json").write_text(json.dumps({
        "header": header, "runs": summary.runs, "median_abs_error_pct": summary.median_abs_error_pct,
        "worst_abs_error_pct": summary.worst_abs_error_pct, "kendall_tau": summary.kendall_tau,
        "kendall_p": summary.kendall_p, "ranking_preserved": summary.ranking_preserved,
        "discordant": summary.discordant, "tolerance_pct": summary.tol_pct,
        "runs_failed": len(summary.failed), "failed": summary.failed, "repeats": summary.repeats,
        "median_spread_pct": summary.median_spread_pct, "worst_spread_pct": summary.worst_spread_pct,
        "speed_matched_median_pct": summary.speed_matched_median_pct,
        "speed_matched_worst_pct": summary.speed_matched_worst_pct,
        "speedup_median_abs_error_pct": summary.speedup_median_pct,
        "speedup_worst_abs_error_pct": summary.speedup_worst_pct, "speedup_runs": summary.speedup_runs,
        "verdicts": summary.verdicts,
        "memory_median_abs_error_pct": summary.memory_median_pct, "memory_worst_abs_error_pct": summary.memory_worst_pct,
        "memory_stages": summary.memory_stages}, indent=1) + "\n")
    v.write_report(out / "report.html", rows, summary, timelines, header)
    if args.figures:
        if summary.runs:
            v.export_figures(Path(args.figures), rows, summary, timelines)
        else:
            v.stderr("no figures exported: no run was measured")
    for line in summary.lines():
        print(line)
    print(f"wrote {out / v.CSV_NAME}, {out / 'report.html'}")
    failed = v.failure_line(rows)
    if failed:
        v.stderr(f"error: {failed}")
        return 1
    return 0
