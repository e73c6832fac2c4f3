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
from ddgsim.schedule import DEFAULT_SCHEDULE

OBJECTIVES = ("throughput", "time-to-loss")
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
    from ddgsim.commands._table import replica_label
    from ddgsim.plan.build import KResult, choose, plan_for_k, to_plan
    from ddgsim.predict.scenario import load_scenario

    schedules = _check_args(args)
    profile, profile_ref, profile_note = _load_profile(args)
    assumed = args.scenario is None
    scenario = load_scenario(args.scenario or f"ideal-{args.gpus}")
    if len(scenario.devices) < args.gpus:
        raise UserError(
            f"--gpus {args.gpus} but scenario '{scenario.name}' has {len(scenario.devices)} devices"
        )
    n = profile.num_units
    top = min(args.gpus, n)
    if args.stages is not None and args.stages > n:
        raise UserError(f"--stages {args.stages} is more stages than the {n} units of '{profile.model}'")
    ks = [args.stages] if args.stages is not None else list(range(1, top + 1))
    restricted = args.stages is not None
    if args.max_staleness is not None:
        from ddgsim.converge.objective import staleness_of

        # only the stale schedules are limited; with --schedule all each keeps its own Ks below
        if all(staleness_of(sc, min(ks)) > args.max_staleness for sc in schedules):
            raise UserError(f"--max-staleness {args.max_staleness}: the fewest stages asked for, {min(ks)}, "
                            f"train on gradients {min(ks) - 1} iterations old")
    limit = args.memory_limit * GIB if args.memory_limit is not None else None
    ttl: dict[str, Any] | None = None
    if args.objective == "time-to-loss":
        ks, ttl = _time_to_loss(args, profile, scenario, schedules[0], _allowed(ks, schedules[0], args), limit)
        restricted = True

    per_schedule: dict[str, list[Any]] = {}
    layouts: dict[str, Any] = {}
    for sched in schedules:
        micro = args.micro_batches or (4 if sched in ("gpipe", "1f1b") else 1)
        if micro > 1 and sched not in ("gpipe", "1f1b"):
            if len(schedules) > 1:
                micro = 1
            else:
                raise UserError(f"schedule '{sched}' takes no micro-batches (got {micro}); only gpipe, 1f1b do")
        sched_ks = _allowed(ks, sched, args)
        if not sched_ks:
            per_schedule[sched] = []
            continue
        if args.replicas == "1":
            per_schedule[sched] = [plan_for_k(profile, scenario, sched, k, micro_batches=micro,
                                              memory_limit_bytes=limit) for k in sched_ks]
            continue
        from ddgsim.plan.layouts import search_layouts

        found = search_layouts(profile, scenario, sched, args.gpus, micro_batches=micro, memory_limit_bytes=limit,
                               replicas=None if args.replicas == "auto" else [int(args.replicas)],
                               stages=sched_ks if restricted or sched_ks != ks else None,
                               allreduce=args.allreduce)
        layouts[sched] = found
        top_choice = found.best
        if top_choice is None or top_choice.best is None:
            per_schedule[sched] = [KResult(stages=found.nearest_miss.stages if found.nearest_miss else ks[0],
                                           schedule=sched, planned=None, baselines=[], overflow=found.nearest_miss,
                                           exact=True)]
            continue
        per_schedule[sched] = [plan_for_k(profile, scenario, sched, top_choice.stages, micro_batches=micro,
                                          memory_limit_bytes=limit, layout=top_choice.best.layout,
                                          allreduce=args.allreduce, baselines=False, searched=top_choice.best)]
    best = {s: choose(rs) for s, rs in per_schedule.items()}

    def best_ms(s: str) -> float:
        c = best[s]
        return c.planned.iteration_ms if c is not None and c.planned is not None else float("inf")

    primary = min(schedules, key=best_ms)  # the one schedule, or the fastest of --schedule all
    chosen = best[primary]
    if chosen is None:
        worst = min((r.overflow for r in per_schedule[primary] if r.overflow is not None),
                    key=lambda o: o.over_bytes)
        reps = worst.layout.replicas if worst.layout is not None else (1,)
        where = worst.layout.devices[worst.stage][0] if worst.layout is not None else worst.devices[worst.stage]
        raise UserError(
            f"no split of '{profile.model}' into {worst.stages} stage(s){replica_label(reps)} fits in memory: at "
            f"best stage {worst.stage} on {where} needs {worst.need_bytes / GIB:.3f} GiB, "
            f"{worst.over_bytes / GIB:.3f} GiB over its {worst.limit_bytes / GIB:.3f} GiB"
        )
    micro = chosen.planned.sim.micro_batches if chosen.planned else 1
    from ddgsim.commands._args import note_provenance

    note_provenance(profile, profile_ref.get("path") or profile.model, scenario,  # once the input is known good
                    (args.micro_batches or 4) if {"gpipe", "1f1b"} & set(schedules) else 1)
    extra: dict[str, Any] = {"objective": args.objective, "scenario_assumed": assumed}
    if args.max_staleness is not None:
        extra["max_staleness"] = args.max_staleness
    if ttl is not None:
        extra["time_to_loss"] = ttl
    if primary in layouts:
        extra["layouts"] = _layouts_summary(layouts[primary])
    plan = to_plan(chosen, profile, profile_ref, args.scenario or scenario.name, micro, extra=extra)
    if args.trace:
        from ddgsim.trace import write_trace

        assert chosen.planned is not None
        sim = chosen.planned.sim
        write_trace(args.trace, sim.timeline, process=f"predicted {primary} on {scenario.name}",
                    rows=list(sim.devices), metadata=sim.summary())
    if args.out:
        plan.save(args.out)
    if args.json:
        data = plan.to_json()
        if len(schedules) > 1:
            data["extra"]["schedules"] = {
                s: None if c is None or c.planned is None else
                {"stages": c.stages, "split": c.planned.split, "iteration_ms": c.planned.iteration_ms}
                for s, c in best.items()
            }
        json.dump(data, sys.stdout, indent=1)
        sys.stdout.write("\n")
        for written in (args.out, args.trace):
            if written:
                print(f"wrote {written}", file=sys.stderr)  # stdout stays pure JSON
        return 0
    from ddgsim.commands.plan_render import render

    render(profile=profile, profile_note=profile_note, scenario=scenario, assumed=assumed,
           per_schedule=per_schedule, primary=primary, chosen=chosen, out=args.out, trace=args.trace,
           layouts=layouts.get(primary), objective=args.objective, time_to_loss=ttl)
    return 0


def _allowed(ks: list[int], schedule: str, args: argparse.Namespace) -> list[int]:
    """The Ks of ``ks`` within ``--max-staleness`` under ``schedule``."""
    from ddgsim.converge.objective import staleness_of

    if args.max_staleness is None:
        return ks
    return [k for k in ks if staleness_of(schedule, k) <= args.max_staleness]


def _time_to_loss(args: argparse.Namespace, profile: Any, scenario: Any, schedule: str, ks: list[int],
                  limit: float | None) -> tuple[list[int], dict[str, Any]]:
    """The K with the least predicted time to the target (pilots × iteration time), and the table."""
    from ddgsim.commands._table import replica_label
    from ddgsim.commands.converge import pilots
    from ddgsim.converge.objective import rank
    from ddgsim.plan.build import plan_for_k

    micro = args.micro_batches or (4 if schedule in ("gpipe", "1f1b") else 1)
    best: dict[int, tuple[str, tuple[int, ...], float]] = {}
    for k in ks:
        if args.replicas == "1":
            r = plan_for_k(profile, scenario, schedule, k, micro_batches=micro, memory_limit_bytes=limit,
                           baselines=False)
            if r.planned is not None:
                best[k] = (f"{k} × 1", tuple(r.planned.split), r.planned.iteration_ms)
            continue
        from ddgsim.plan.layouts import search_layouts

        found = search_layouts(profile, scenario, schedule, args.gpus, micro_batches=micro, memory_limit_bytes=limit,
                               replicas=None if args.replicas == "auto" else [int(args.replicas)], stages=[k],
                               allreduce=args.allreduce)
        b = found.best
        if b is not None and b.best is not None:
            reps = b.best.layout.replicas if b.best.layout is not None else (1,)
            best[k] = (f"{k}{replica_label(reps)}", tuple(b.best.split), b.iteration_ms)
    if not best:
        return ks, {}
    target, rows = rank(schedule, best,
                        lambda splits: pilots(args, profile.model, splits, schedule, profile.batch_size,
                                              f"{profile.model} ({args.data})"))
    table = {"target_loss": target, "data": args.data, "pilot_steps": args.pilot_steps, "seeds": args.seeds,
             "pilot_batch": profile.batch_size, "base_lr": args.lr, "window": args.window,
             "rows": [r.to_json() for r in rows]}
    if rows[0].median_steps is None:
        raise UserError(f"no K reached --target-loss {target:g} in {args.pilot_steps} pilot steps on every seed "
                        "(raise --pilot-steps or the target)")
    return [rows[0].stages], table

def _layouts_summary(found: Any) -> dict[str, Any]:
    """What the layout search found, for the plan file's ``extra``."""

    def one(r: Any) -> dict[str, Any] | None:
        if r is None or r.best is None:
            return None
        return {"stages": r.stages, "replicas": r.replicas, "replica_counts": list(r.replica_counts),
                "mapping": r.mapping, "split": r.best.split, "iteration_ms": r.iteration_ms, "exact": r.best.exact}

    return {
        "candidates": found.candidates, "searched": found.searched, "wall_s": found.wall_s,
        "best": one(found.best), "pipeline": one(found.pipeline), "data_parallel": one(found.data_parallel),
        "per_replicas": {str(d): one(r) for d, r in found.per_replicas.items()}, "mixed": one(found.mixed),
        "any_layout_bound_ms": found.any_layout_bound_ms, "gap_bound": found.gap,
    }
