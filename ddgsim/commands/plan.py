"""``plan``: find the split that trains fastest on N devices, and write a plan the executor runs.

    python -m ddgsim plan resnet110 --gpus 4
    python -m ddgsim plan resnet110 --gpus 4 --scenario pcie-4gpu --memory-limit 2 --out plan.json
    python -m ddgsim plan --profile prof.json --gpus 8 --schedule all --json
    python -m ddgsim plan resnet1202 --gpus 64 --batch-size 32 --scenario cluster-8x8

The search covers K stages × D replicas per stage (data parallel inside a stage, the DDG
pipeline across stages) for every K·D ≤ N; ``--replicas 1`` plans pure pipelines and
shows every K, ``--replicas D`` fixes D.

Without ``--scenario`` the planner assumes ``ideal-N``: N copies of the device the
profile was measured on, joined by free links (no latency, infinite bandwidth).
Without ``--profile`` it uses the bundled or cached profile of MODEL at the batch
size, and profiles the model on the spot (then caches it) when there is none.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ddgsim.commands._help import add_command
from ddgsim.errors import UserError, choices
from ddgsim.schedule import DEFAULT_SCHEDULE, get_schedule

DEFAULT_BATCH = 128
GIB = 2**30


def add_parser(subparsers: Any) -> None:
    from ddgsim.schedule import SCHEDULES

    p = add_command(subparsers, "plan",
        help="search the splits of a model over N devices and write a plan file",
        description=__doc__.splitlines()[0] if __doc__ else None,
        extra_epilog="Default scenario: ideal-N (free links). Bundled scenarios: see ddgsim/scenarios/hardware/.",
    )
    p.add_argument("model", nargs="?", help="model name (see `python -m ddgsim models`) or pkg.module:factory")
    p.add_argument("--profile", metavar="FILE", help="a ddgsim-profile/1 JSON file instead of a model name")
    p.add_argument("--gpus", type=int, required=True, metavar="N", help="devices available (plans K = 1..N stages)")
    p.add_argument("--stages", type=int, metavar="K", help="plan exactly K stages instead of every K in 1..N")
    p.add_argument("--replicas", default="auto", metavar="D|auto",
                   help="replicas per stage: auto searches every D with K·D <= N and per-stage D_k; "
                        "D = that D on every stage; 1 = pure pipelines, one table per K (default auto)")
    p.add_argument("--allreduce", default="ring", metavar="ALG",
                   help="how replicas sum their gradients in the prediction: ring or tree (default ring)")
    p.add_argument("--scenario", metavar="NAME|FILE", help="hardware scenario (default ideal-N)")
    p.add_argument("--schedule", default=DEFAULT_SCHEDULE, metavar="NAME",
                   help=f"{', '.join(SCHEDULES)} or all (default {DEFAULT_SCHEDULE})")
    p.add_argument("--micro-batches", "-M", type=int, default=None, metavar="M",
                   help="micro-batches for gpipe/1f1b (default: 4 for those, 1 otherwise)")
    p.add_argument("--batch-size", type=int, default=None, metavar="B",
                   help=f"batch size of the profile (default {DEFAULT_BATCH}; with --profile the profile's own)")
    p.add_argument("--memory-limit", type=float, metavar="GIB", help="memory per device in GiB (default: the scenario's)")
    p.add_argument("--objective", default="throughput", metavar="NAME",
                   help="throughput (least time per iteration) or time-to-loss (least predicted time to "
                        "--target-loss: pilot trainings' steps × iteration time; default throughput)")
    p.add_argument("--max-staleness", type=int, metavar="N",
                   help="only plans whose gradients are at most N iterations old (ddg: K ≤ N+1 stages)")
    from ddgsim.commands.converge import add_pilot_args
    from ddgsim.converge.pilot import DEFAULT_STEPS, DEFAULT_WINDOW

    add_pilot_args(p, DEFAULT_STEPS, DEFAULT_WINDOW)
    p.add_argument("--out", metavar="PLAN", help="write the chosen plan (ddgsim-plan/1 JSON)")
    p.add_argument("--json", action="store_true", help="print the chosen plan as JSON instead of tables")
    p.add_argument("--trace", metavar="FILE", help="write the chosen plan's simulated timeline (Chrome trace JSON)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar if the model must be profiled")
    p.set_defaults(func=run)


def _check_args(args: argparse.Namespace) -> list[str]:
    from ddgsim.plan.usecase import OBJECTIVES
    from ddgsim.schedule import SCHEDULES

    if args.gpus < 1:
        raise UserError(f"--gpus must be >= 1, got {args.gpus}")
    if args.stages is not None and not 1 <= args.stages <= args.gpus:
        raise UserError(f"--stages must be in 1..{args.gpus} (--gpus), got {args.stages}")
    if args.batch_size is not None and args.batch_size <= 0:
        raise UserError(f"--batch-size must be > 0, got {args.batch_size}")
    if args.memory_limit is not None and not args.memory_limit > 0:
        raise UserError(f"--memory-limit must be > 0 GiB, got {args.memory_limit}")
    if args.objective not in OBJECTIVES:
        raise UserError(f"unknown objective '{args.objective}' (choose from {choices(OBJECTIVES)})")
    if args.micro_batches is not None and args.micro_batches < 1:
        raise UserError(f"--micro-batches must be >= 1, got {args.micro_batches}")
    if args.replicas != "auto" and not (args.replicas.isdigit() and 1 <= int(args.replicas) <= args.gpus):
        raise UserError(f"--replicas must be auto or a number in 1..{args.gpus} (--gpus), got {args.replicas!r}")
    if args.allreduce not in ("ring", "tree"):
        raise UserError(f"unknown --allreduce '{args.allreduce}' (choose from 'ring', 'tree')")
    if args.stages is not None and args.replicas not in ("auto", "1") and args.stages * int(args.replicas) > args.gpus:
        raise UserError(f"--stages {args.stages} × --replicas {args.replicas} needs more than the {args.gpus} devices of --gpus")
    if args.max_staleness is not None and args.max_staleness < 0:
        raise UserError(f"--max-staleness must be >= 0, got {args.max_staleness}")
    if args.objective == "time-to-loss":
        from ddgsim.commands.converge import check_pilot_args

        if args.schedule == "all":
            raise UserError("--objective time-to-loss plans one schedule: give --schedule NAME, not all")
        if args.profile:
            raise UserError("--objective time-to-loss trains the model in its pilots: give MODEL, not --profile")
        check_pilot_args(args)
    else:
        given = [f for f, v in (("--data", args.data), ("--target-loss", args.target_loss)) if v is not None]
        if given:
            raise UserError(f"{given[0]} is for --objective time-to-loss (the objective is {args.objective})")
    if args.schedule == "all":
        return list(SCHEDULES)
    if args.schedule not in SCHEDULES:
        raise UserError(f"unknown schedule '{args.schedule}' (choose from {choices((*SCHEDULES, 'all'))})")
    return [args.schedule]


def check_profile_batch(batch_size: int | None, profile: Any, path: str) -> None:
    """A one-line error when ``--batch-size`` asks for another batch than the ``--profile`` was measured at
    (a profile's costs are for its batch; none is scaled silently)."""
    from ddgsim.models.registry import buildable

    if batch_size is None or batch_size == profile.batch_size:
        return
    how = (f"python -m ddgsim profile {profile.model} --batch-size {batch_size} --out FILE"
           if buildable(profile.model) else "measure it where the profile came from")
    raise UserError(f"--batch-size {batch_size} but profile {path} was measured at batch {profile.batch_size}; "
                    f"drop --batch-size to plan batch {profile.batch_size}, or profile batch {batch_size} ({how})")


def _load_profile(args: argparse.Namespace) -> tuple[Any, dict[str, Any], str]:
    from ddgsim.profile import format as profile_format

    if args.profile and args.model:
        raise UserError("give either MODEL or --profile FILE, not both")
    if args.profile:
        prof = profile_format.load(args.profile)
        check_profile_batch(args.batch_size, prof, args.profile)
        ref = {"path": args.profile, "model": prof.model, "batch_size": prof.batch_size,
               "device": prof.device, "threads": prof.threads}
        return prof, ref, f"{args.profile} (given)"
    if not args.model:
        raise UserError("give a MODEL (see `python -m ddgsim models`) or --profile FILE")
    from ddgsim.profile.store import get_profile

    prof, path, source = get_profile(args.model, args.batch_size or DEFAULT_BATCH, "cpu", 1, this_machine=False,
                                     progress=not args.no_progress and not args.json)
    ref = {"path": str(path) if path else "", "model": prof.model, "batch_size": prof.batch_size,
           "device": prof.device, "threads": prof.threads, "source": source}
    what = {"bundled": "bundled", "cache": "cached", "measured": "measured now and cached"}[source]
    return prof, ref, f"{path} ({what}; {prof.device}, {prof.threads} thread(s), batch {prof.batch_size})"


def run(args: argparse.Namespace) -> int:
    from ddgsim.plan.usecase import PlanRequest, TargetNotReached, plan
    from ddgsim.predict.scenario import load_scenario

    schedules = _check_args(args)
    profile, profile_ref, profile_note = _load_profile(args)
    scenario = load_scenario(args.scenario or f"ideal-{args.gpus}")
    _check_inputs(args, profile, scenario, schedules)
    request = PlanRequest(
        profile=profile, devices=args.gpus, scenario=scenario if args.scenario else None,
        scenario_ref=args.scenario or "", profile_ref=profile_ref, schedules=tuple(schedules), stages=args.stages,
        replicas=None if args.replicas == "auto" else int(args.replicas), allreduce=args.allreduce,
        micro_batches=args.micro_batches, objective=args.objective, max_staleness=args.max_staleness,
        memory_limit_bytes=args.memory_limit * GIB if args.memory_limit is not None else None,
        pilots=_pilots(args) if args.objective == "time-to-loss" else None)
    try:
        outcome = plan(request, pilot_progress=_pilot_progress(args))
    except TargetNotReached as e:
        raise UserError(f"no K reached --target-loss {e.target:g} in {e.steps} pilot steps on every seed "
                        "(raise --pilot-steps or the target)") from None
    from ddgsim.commands._args import note_provenance

    note_provenance(profile, profile_ref.get("path") or profile.model, outcome.scenario,  # once the input is known good
                    (args.micro_batches or 4) if any(get_schedule(s).micro_batched for s in schedules) else 1)
    if args.trace:
        from ddgsim.trace import write_trace

        assert outcome.chosen.planned is not None
        sim = outcome.chosen.planned.sim
        write_trace(args.trace, sim.timeline, process=f"predicted {outcome.schedule} on {outcome.scenario.name}",
                    rows=list(sim.devices), metadata=sim.summary())
    if args.out:
        outcome.plan.save(args.out)
    if args.json:
        data = outcome.plan.to_json()
        if len(schedules) > 1:
            data["extra"]["schedules"] = outcome.best_per_schedule()
        json.dump(data, sys.stdout, indent=1)
        sys.stdout.write("\n")
        for written in (args.out, args.trace):
            if written:
                print(f"wrote {written}", file=sys.stderr)  # stdout stays pure JSON
        return 0
    from ddgsim.commands.plan_render import render

    render(profile=profile, profile_note=profile_note, scenario=outcome.scenario, assumed=outcome.assumed,
           per_schedule=outcome.per_schedule, primary=outcome.schedule, chosen=outcome.chosen, out=args.out,
           trace=args.trace, layouts=outcome.layouts, objective=args.objective, time_to_loss=outcome.time_to_loss)
    return 0


def _check_inputs(args: argparse.Namespace, profile: Any, scenario: Any, schedules: list[str]) -> None:
    """The flags that need the profile and the scenario to check (the library checks them again, by value)."""
    if len(scenario.devices) < args.gpus:
        raise UserError(f"--gpus {args.gpus} but scenario '{scenario.name}' has {len(scenario.devices)} devices")
    if args.stages is not None and args.stages > profile.num_units:
        raise UserError(f"--stages {args.stages} is more stages than the {profile.num_units} units of '{profile.model}'")
    if args.max_staleness is not None:
        from ddgsim.converge.objective import staleness_of

        fewest = args.stages or 1  # only the stale schedules are limited; with --schedule all each keeps its Ks
        if all(staleness_of(sc, fewest) > args.max_staleness for sc in schedules):
            raise UserError(f"--max-staleness {args.max_staleness}: the fewest stages asked for, {fewest}, "
                            f"train on gradients {fewest - 1} iterations old")


def _pilots(args: argparse.Namespace) -> Any:
    from ddgsim.plan.usecase import Pilots

    return Pilots(data=args.data, data_dir=args.data_dir, target_loss=args.target_loss, steps=args.pilot_steps,
                  seeds=args.seeds, lr=args.lr, window=args.window, cache=not args.no_cache,
                  warmup_steps=args.warmup_steps, lr_delay_scale=args.lr_delay_scale,
                  weight_prediction=args.weight_prediction)


def _pilot_progress(args: argparse.Namespace) -> Any:
    """The pilots' progress bar on stderr (none with --no-progress or --json)."""
    from ddgsim.commands.converge import progress

    return lambda total, label: progress(not (args.no_progress or args.json), total, label)
