"""``simulate``: predict iteration time, speedup, staleness and memory of a split and schedule.

    python -m ddgsim simulate resnet110 --gpus 4 --schedule ddg --scenario pcie-4gpu
    python -m ddgsim simulate --profile prof.json --split 15,30,45 --json --trace t.json
    python -m ddgsim simulate --plan plan.json

Without ``--scenario`` the ideal scenario ``ideal-K`` (free communication, unit
speed) is assumed and said so. Without ``--split`` the authors' even split is used:
ceil(n/K) units per stage.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ddgsim.commands._help import add_command
from ddgsim.errors import UserError
from ddgsim.schedule import DEFAULT_SCHEDULE

DEFAULT_BATCH = 128


def add_parser(subparsers: Any) -> None:
    from ddgsim.schedule import SCHEDULES

    p = add_command(subparsers, "simulate",
        help="simulate a split and schedule on a hardware scenario",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    p.add_argument("model", nargs="?", help="model name with a bundled or cached profile (e.g. resnet110)")
    p.add_argument("--profile", metavar="FILE", help="a ddgsim-profile/1 JSON file instead of a model name")
    p.add_argument("--plan", metavar="PLAN", help="a ddgsim-plan/1 JSON file (split, schedule, scenario, devices)")
    p.add_argument("--gpus", "-K", type=int, metavar="K", help="number of stages/devices (default: from --split)")
    p.add_argument("--split", metavar="CUTS", help="unit indices where stages 1..K-1 begin, e.g. 15,30,45")
    p.add_argument("--schedule", metavar="NAME", help=f"one of {', '.join(SCHEDULES)} (default {DEFAULT_SCHEDULE})")
    p.add_argument("--scenario", metavar="NAME|FILE", help="bundled scenario, ideal-N or a .toml file (default ideal-K, ideal-K·D with replicas)")
    p.add_argument("--devices", metavar="D0,D1,..", help="device of each stage (default: the scenario's first K)")
    p.add_argument("--replicas", type=int, metavar="D",
                   help="replicas per stage (data parallel inside each stage) on the scenario's first K·D "
                        "devices, a stage's replicas together (default 1, or the plan's)")
    p.add_argument("--allreduce", metavar="ALG", help="ring or tree: how replicas sum gradients (default ring)")
    p.add_argument("--iterations", "-N", type=int, metavar="N", help="iterations to simulate (default 4K+8, at least 2K+2)")
    p.add_argument("--micro-batches", "-M", type=int, metavar="M", help="micro-batches per batch (gpipe, 1f1b; default 1)")
    p.add_argument("--batch-size", type=int, metavar="B", help=f"batch size of the model's profile (default {DEFAULT_BATCH})")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--trace", metavar="FILE", help="write the simulated timeline as Chrome trace JSON (Perfetto)")
    p.set_defaults(func=run)


def _load_profile(args: argparse.Namespace, plan: Any, batch: int) -> tuple[Any, str]:
    from ddgsim.profile import format as profile_format

    if args.profile:
        from ddgsim.plan.inputs import check_profile_batch

        prof = profile_format.load(args.profile)
        check_profile_batch(args.batch_size, prof, args.profile)
        return prof, args.profile
    ref = plan.profile if plan is not None else None
    if not args.model and isinstance(ref, dict) and isinstance(ref.get("path"), str) and Path(ref["path"]).is_file():
        return profile_format.load(ref["path"]), ref["path"]
    model = args.model or (plan.model if plan is not None else None)
    if not isinstance(model, str) or not model:
        raise UserError("give a MODEL, --profile FILE or --plan PLAN")
    from ddgsim.profile.store import find_profile

    path = find_profile(model, batch)
    if path is None:
        raise UserError(
            f"no bundled or cached profile for model '{model}' at batch size {batch}; measure one with "
            f"`python -m ddgsim profile {model} --batch-size {batch}` or pass --profile FILE"
        )
    return profile_format.load(path), str(path)


def _positive(option: str, value: int | None) -> None:
    if value is not None and value <= 0:
        raise UserError(f"{option} must be > 0, got {value}")


def run(args: argparse.Namespace) -> int:
    from ddgsim.plan.simulate import simulate_split

    if args.profile and args.model:
        raise UserError("give either MODEL or --profile FILE, not both")
    plan = _read_plan(args)
    profile, profile_path = _load_profile(args, plan, args.batch_size or (plan.batch_size if plan else DEFAULT_BATCH))
    request, assumed = _request(args, plan, profile)
    result = simulate_split(request)
    from ddgsim.commands._args import note_provenance

    note_provenance(profile, profile_path, request.scenario, request.micro_batches)  # once the input is known good
    if args.trace:
        from ddgsim.trace import write_trace

        write_trace(args.trace, result.timeline, process=f"predicted {result.schedule} on {result.scenario}",
                    rows=list(result.devices), metadata=result.summary())
        # on stderr when stdout carries JSON
        print(f"wrote {args.trace} (open in https://ui.perfetto.dev)", file=sys.stderr if args.json else sys.stdout)
    if args.json:
        out = {"model": profile.model, "profile": profile_path, "scenario_assumed": assumed, **result.summary()}
        json.dump(out, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        _print_tables(result, profile, assumed)
    return 0


def _read_plan(args: argparse.Namespace) -> Any:
    """``--plan``, checked against MODEL and the numeric flags (``None`` without one)."""
    from ddgsim.plan import format as plan_file

    plan = plan_file.load(args.plan) if args.plan else None
    if plan is not None and args.model and args.model != plan.model:
        raise UserError(f"plan {args.plan} is for model '{plan.model}', not '{args.model}'")
    for option, value in (("--gpus", args.gpus), ("--micro-batches", args.micro_batches),
                          ("--batch-size", args.batch_size), ("--iterations", args.iterations),
                          ("--replicas", args.replicas)):
        if value is not None and value <= 0:
            raise UserError(f"{option} must be > 0, got {value}")
    if plan is not None and args.batch_size is not None and args.batch_size != plan.batch_size:
        raise UserError(f"--batch-size {args.batch_size} but plan {args.plan} is for batch {plan.batch_size}; "
                        f"plan that batch: python -m ddgsim plan {plan.model} --batch-size {args.batch_size}")
    return plan


def _request(args: argparse.Namespace, plan: Any, profile: Any) -> tuple[Any, bool]:
    """The flags over the plan's fields, checked in the order a user meets them (flags named; the
    library checks again, by value), as a request; and whether the scenario is assumed."""
    from ddgsim.plan.simulate import SimulateRequest
    from ddgsim.plan.split import check_split, parse_split
    from ddgsim.predict.max_plus import min_iterations
    from ddgsim.predict.scenario import load_scenario
    from ddgsim.schedule import check_schedule_args

    split = parse_split(args.split) if args.split is not None else (list(plan.split) if plan else None)
    stages = args.gpus if args.gpus is not None else (len(split) + 1 if split is not None else None)
    if stages is None:
        raise UserError("give --gpus K or --split CUTS")
    if stages > profile.num_units:
        raise UserError(f"--gpus {stages} is more stages than the {profile.num_units} units of '{profile.model}'")
    if split is not None:
        check_split(split, profile.num_units, stages)
    schedule = args.schedule or (plan.schedule if plan else DEFAULT_SCHEDULE)
    micro = args.micro_batches or (plan.micro_batches if plan else 1)
    check_schedule_args(schedule, stages, args.iterations or min_iterations(stages), micro)
    if args.iterations is not None and args.iterations < min_iterations(stages):
        raise UserError(f"--iterations must be >= {min_iterations(stages)} (2K+2) for K = {stages}, "
                        f"got {args.iterations}")
    scenario_name = args.scenario or (plan.scenario if plan else None)
    scenario = load_scenario(scenario_name or f"ideal-{stages * (args.replicas or 1)}")
    allreduce = args.allreduce or (plan.allreduce if plan else "ring")
    if allreduce not in ("ring", "tree"):
        raise UserError(f"unknown --allreduce '{allreduce}' (choose from 'ring', 'tree')")
    replicated = args.replicas is not None and args.replicas > 1
    if replicated and args.devices:
        raise UserError("give --devices or --replicas, not both")
    layout = plan.layout if plan and plan.world_size > plan.num_stages and not (args.devices or args.replicas) else None
    devices = (tuple(args.devices.split(",")) if args.devices else
               None if replicated or layout is not None or not plan else tuple(s.device for s in plan.stages))
    if not replicated and layout is None and devices is None and stages > len(scenario.devices):
        raise UserError(f"--gpus {stages} needs {stages} devices but scenario '{scenario.name}' has "
                        f"{len(scenario.devices)}")
    return SimulateRequest(profile=profile, split=tuple(split) if split is not None else None, stages=stages,
                           schedule=schedule, micro_batches=micro, iterations=args.iterations, scenario=scenario,
                           devices=devices, layout=layout, replicas=args.replicas, allreduce=allreduce), \
        scenario_name is None


def _print_tables(r: Any, profile: Any, assumed: bool) -> None:
    from rich.table import Table

    from ddgsim.commands._table import console as table_console
    from ddgsim.plan.split import stage_ranges

    console = table_console()
    note = " (assumed: no --scenario given)" if assumed else ""
    console.print(f"[bold]{profile.model}[/] batch {r.batch_size}, schedule [bold]{r.schedule}[/]"
                  f"{f' M={r.micro_batches}' if r.micro_batches > 1 else ''}, scenario [bold]{r.scenario}[/]{note}, "
                  f"split {','.join(map(str, r.split)) or '(one stage)'}, {r.iterations} iterations simulated")
    console.print(f"iteration {r.iteration_ms:.3f} ms  |  {r.samples_per_s:.1f} samples/s  |  "
                  f"speedup vs 1 device {r.speedup_vs_1_device:.3f}x ({r.single_device_ms:.3f} ms)  |  "
                  f"vs bp {r.speedup_vs_bp:.3f}x ({r.bp_iteration_ms:.3f} ms)")
    from ddgsim.commands._table import Column, print_tables, replica_cell

    rows: list[list[str] | None] = []
    for k, (start, end) in enumerate(stage_ranges(r.split, profile.num_units)):
        a, b = profile.units[start].name, profile.units[end - 1].name
        rows.append([str(k), replica_cell(r.layout[k] if r.layout else (r.devices[k],)), f"[{start},{end})",
                     a if start == end - 1 else f"{a}…{b}",
                     f"{r.busy_ms[k]:.1f}", f"{max(0.0, r.bubble_fraction[k]):.0%}", str(r.staleness[k]),
                     f"{r.memory[k].total / 2**30:.3f}", "yes" if r.memory_fits[k] else "[red]no[/]"])
    cols = [Column("stage"), Column("device", "left"), Column("units", "left"), Column("layers", "left"),
            Column("busy ms"), Column("bubble"), Column("τ"), Column("peak GiB"), Column("fits")]
    print_tables(console, "stages (τ = staleness)", cols, rows)
    for note in getattr(r, "notes", ()):
        console.print(f"[yellow]note[/]: {note.removeprefix('note: ')}")
    if r.links:
        lt = Table(title="links (per iteration)")
        for col in ("link", "MB", "busy ms", "busy"):
            lt.add_column(col, justify="left" if col == "link" else "right")
        for link in r.links:
            lt.add_row(f"{link.src}->{link.dst}", f"{link.bytes_per_iteration / 1e6:.3f}",
                       f"{link.busy_ms:.3f}", f"{link.busy_ms / r.iteration_ms:.1%}" if r.iteration_ms else "-")
        console.print(lt)
