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

The options build a :class:`~ddgsim.planner.PlanInputs`; :func:`ddgsim.planner.plan`
plans its request.
"""

from __future__ import annotations

import argparse
from typing import Any

from ddgsim.commands import _pilots
from ddgsim.commands._help import add_command
from ddgsim.errors import UserError
from ddgsim.schedule import DEFAULT_SCHEDULE

FLAGS = {"devices": "--gpus", "memory_limit_gib": "--memory-limit", "model": "MODEL", **_pilots.FLAGS}
"""The flag of each parameter whose name is not the flag's."""


def add_parser(subparsers: Any) -> None:
    from ddgsim.converge.pilot import DEFAULT_STEPS, DEFAULT_WINDOW
    from ddgsim.plan.inputs import DEFAULT_BATCH
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
    _pilots.add_pilot_args(p, DEFAULT_STEPS, DEFAULT_WINDOW)
    p.add_argument("--out", metavar="PLAN", help="write the chosen plan (ddgsim-plan/1 JSON)")
    p.add_argument("--json", action="store_true", help="print the chosen plan as JSON instead of tables")
    p.add_argument("--trace", metavar="FILE", help="write the chosen plan's simulated timeline (Chrome trace JSON)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar if the model must be profiled")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ddgsim.commands import plan_render
    from ddgsim.planner import PlanInputs, plan

    inputs = PlanInputs(devices=args.gpus, model=args.model, profile=args.profile, batch_size=args.batch_size,
                        scenario=args.scenario, schedule=args.schedule, stages=args.stages, replicas=args.replicas,
                        allreduce=args.allreduce, micro_batches=args.micro_batches,
                        memory_limit_gib=args.memory_limit, objective=args.objective,
                        max_staleness=args.max_staleness)
    pilots = args.objective == "time-to-loss"
    given = [f for f, v in (("--data", args.data), ("--target-loss", args.target_loss)) if v is not None]
    if given and not pilots:
        raise UserError(f"{given[0]} is for --objective time-to-loss (the objective is {args.objective})")
    quiet = args.no_progress or args.json
    named = inputs.request(pilots=_pilots.pilots_from(args) if pilots else None, progress=not quiet)
    outcome = plan(named.request, pilot_progress=_pilots.pilot_progress(not quiet))
    plan_render.write(named, outcome, out=args.out, trace=args.trace, json=args.json)
    return 0
