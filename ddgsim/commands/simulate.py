"""``simulate``: predict iteration time, speedup, staleness and memory of a split and schedule.

    python -m ddgsim simulate resnet110 --gpus 4 --schedule ddg --scenario pcie-4gpu
    python -m ddgsim simulate --profile prof.json --split 15,30,45 --json --trace t.json
    python -m ddgsim simulate --plan plan.json

Without ``--scenario`` the ideal scenario ``ideal-K`` (free communication, unit
speed) is assumed and said so. Without ``--split`` the authors' even split is used:
ceil(n/K) units per stage.

The options build a :class:`~ddgsim.plan.simulate.SimulateInputs`;
:func:`ddgsim.plan.simulate.simulate_split` simulates its request.
"""

from __future__ import annotations

import argparse
from typing import Any

from ddgsim.commands._help import add_command
from ddgsim.schedule import DEFAULT_SCHEDULE

FLAGS = {"stages": "--gpus", "model": "MODEL"}
"""The flag of each parameter whose name is not the flag's."""


def add_parser(subparsers: Any) -> None:
    from ddgsim.plan.inputs import DEFAULT_BATCH
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


def run(args: argparse.Namespace) -> int:
    from ddgsim.commands import simulate_render
    from ddgsim.plan.simulate import SimulateInputs, simulate_split

    named = SimulateInputs(model=args.model, profile=args.profile, plan=args.plan, stages=args.gpus,
                           split=args.split, schedule=args.schedule, scenario=args.scenario, devices=args.devices,
                           replicas=args.replicas, allreduce=args.allreduce, iterations=args.iterations,
                           micro_batches=args.micro_batches, batch_size=args.batch_size).request()
    simulate_render.write(named, simulate_split(named.request), trace=args.trace, json=args.json)
    return 0
