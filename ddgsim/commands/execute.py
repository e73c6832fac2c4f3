"""``ddgsim execute PLAN --steps N``: run a plan for real, one local process per stage.

Launches ``python -m executor`` K times through PyTorch's elastic launcher
(``torch.distributed.launcher.api.elastic_launch``, the machinery behind
``torchrun``), so what runs here is exactly what ``torchrun --nproc-per-node K -m
executor ...`` runs; for several nodes use that torchrun line (see
``executor/__main__.py``).
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from pathlib import Path

from ddgsim.errors import UserError


def add_parser(sub: argparse._SubParsersAction) -> None:
    from executor.options import add_run_arguments

    p = sub.add_parser("execute", help="run a plan for real (one process per stage, torch.distributed)",
                       description=__doc__.splitlines()[0] if __doc__ else None)
    add_run_arguments(p)
    p.add_argument("--max-restarts", type=int, default=0,
                   help="restart the whole job up to R times after a failure; it resumes from the "
                        "last checkpoint in --checkpoint-dir (default 0)")
    p.set_defaults(func=run)


def forward_argv(args: argparse.Namespace) -> list[str]:
    """Rebuild ``python -m executor`` arguments from the parsed run options."""
    from executor.options import add_run_arguments

    probe = argparse.ArgumentParser(add_help=False)
    add_run_arguments(probe)
    out: list[str] = []
    for action in probe._actions:
        value = getattr(args, action.dest, None)
        if not action.option_strings:
            out.append(str(value))
        elif isinstance(action, argparse.BooleanOptionalAction):
            flag = action.option_strings[0]
            out.append(flag if value else "--no-" + flag[2:])
        elif isinstance(action, argparse._StoreTrueAction):
            if value:
                out.append(action.option_strings[0])
        elif value is not None:
            out += [action.option_strings[0], str(value)]
    return out


def run(args: argparse.Namespace) -> int:
    if args.max_restarts < 0:
        raise UserError(f"--max-restarts must be >= 0, got {args.max_restarts}")
    from executor.runner import prepare

    job = prepare(args)  # every UserError before anything starts or is written
    k_total = job.num_stages
    if job.backend == "gloo" and k_total > (os.cpu_count() or 1):
        sys.stderr.write(f"warning: {k_total} stage processes on {os.cpu_count()} CPU cores; "
                         "stages will share cores and timings will not reflect the plan\n")
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    root = str(Path(__file__).resolve().parents[2])
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    from ddgsim.malloc import hugepage_env

    os.environ.update(hugepage_env(dict(os.environ)))  # workers get huge pages for malloc
    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=k_total, run_id=f"ddgsim-{uuid.uuid4().hex[:8]}",
        rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=args.max_restarts,
        monitor_interval=0.1, start_method="spawn",
    )
    try:
        elastic_launch(config, sys.executable)("-u", "-m", "executor", *forward_argv(args))
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        code = failure.exitcode
        sys.stderr.write(f"error: stage {rank} failed (exit code {code}); the job was stopped"
                         f"{' after ' + str(args.max_restarts) + ' restart(s)' if args.max_restarts else ''}\n")
        return 2 if code == 2 else 1
    return 0
