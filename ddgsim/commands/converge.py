"""``converge``: how many steps each K needs to reach a target loss (pilot trainings).

    python -m ddgsim converge mlp --data digits --stages 1,2,3 --steps 300 --seeds 3
    python -m ddgsim converge gpt-mini --data text --stages 1,2,3 --target-loss 2.2 --json

For every K: the planner's split for K stages, a learning rate per K (a sweep bounded by the
stages' stability limits, :mod:`ddgsim.converge.pilot`), short trainings with the exact
in-process engine over several seeds, and the steps until the smoothed training loss reaches
the target — with their spread and the ratio to BP (K = 1). Runs are cached: asking again,
or planning with ``plan --objective time-to-loss``, trains nothing.

The options build a :class:`~ddgsim.converge.usecase.ConvergeRequest`;
:func:`ddgsim.converge.usecase.converge` runs the pilots.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ddgsim.commands import _pilots
from ddgsim.commands._help import add_command
from ddgsim.schedule import DEFAULT_SCHEDULE

FLAGS = _pilots.FLAGS
"""The flag of each parameter whose name is not the flag's (the pilots' ``steps``: ``--pilot-steps``)."""


def add_parser(subparsers: Any) -> None:
    from ddgsim.converge.pilot import DEFAULT_STEPS, DEFAULT_WINDOW

    p = add_command(subparsers, "converge", help="steps each K needs to reach a target loss (pilot trainings)",
                    description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("model", help="model name (see `python -m ddgsim models`)")
    _pilots.add_pilot_args(p, DEFAULT_STEPS, DEFAULT_WINDOW)
    p.add_argument("--stages", default="1,2,3,4", metavar="K[,K..]", help="stage counts to pilot (default 1,2,3,4)")
    p.add_argument("--schedule", default=DEFAULT_SCHEDULE, metavar="NAME",
                   help=f"ddg or ddg-pipelined (the same weights; default {DEFAULT_SCHEDULE})")
    p.add_argument("--batch-size", type=int, default=128, metavar="B",
                   help="batch size of the pilots and of the profile their splits are planned on (default 128)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ddgsim.commands._args import parse_ints
    from ddgsim.commands.converge_render import render
    from ddgsim.converge.usecase import ConvergeRequest, converge

    request = ConvergeRequest(model=args.model, pilots=_pilots.pilots_from(args),
                              stages=tuple(parse_ints(args.stages, "--stages")), schedule=args.schedule,
                              batch_size=args.batch_size)
    quiet = args.no_progress or args.json
    outcome = converge(request, progress=_pilots.pilot_progress(not quiet), profile_progress=not quiet)
    if args.json:
        json.dump(outcome.to_json(), sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(render(outcome))
    return 0
