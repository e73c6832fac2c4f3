"""``ddgsim execute PLAN --steps N``: run a plan for real, one local process per stage.

The options build a :class:`~ddgsim.execute.config.RunConfig`;
:func:`ddgsim.execute.launch.launch` runs it (torchrun's machinery, several nodes,
preemption: see that module).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ddgsim.commands._help import add_command


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ddgsim.execute.options import add_run_arguments

    p = add_command(sub, "execute", help="run a plan for real (one process per stage, torch.distributed)",
                       description=__doc__.splitlines()[0] if __doc__ else None)
    add_run_arguments(p)
    p.add_argument("--max-restarts", type=int, default=0,
                   help="restart the whole job up to R times after a failure; it resumes from the "
                        "last checkpoint in --checkpoint-dir (default 0)")
    p.add_argument("--nnodes", type=int, default=1, help="number of nodes (launchers) sharing the plan (default 1)")
    p.add_argument("--node-rank", type=int, default=0,
                   help="this node's index 0..nnodes-1; node 0 hosts the rendezvous (default 0)")
    p.add_argument("--rdzv-endpoint", default=None, metavar="HOST:PORT",
                   help="rendezvous address, the same on every node (needed with --nnodes > 1)")
    p.add_argument("--rdzv-id", default=None, metavar="ID",
                   help="job id, the same on every node (default: derived from the endpoint)")
    p.add_argument("--log-dir", type=Path, default=None, metavar="DIR",
                   help="keep each process's stderr in DIR/rank<R>.log (default: a temporary folder, "
                        "kept and named only when a process fails)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Launch the run; a failed process is a :class:`~ddgsim.execute.childlog.LaunchFailed`, which the
    CLI prints as one line and exits with its status, as every :class:`~ddgsim.errors.DdgsimError`."""
    from ddgsim.execute.launch import Nodes, launch
    from ddgsim.execute.options import config_from_args

    return launch(config_from_args(args), Nodes(nnodes=args.nnodes, node_rank=args.node_rank,
                                                rdzv_endpoint=args.rdzv_endpoint, rdzv_id=args.rdzv_id,
                                                max_restarts=args.max_restarts), log_dir=args.log_dir)
