"""``ddgsim execute PLAN --steps N``: run a plan for real, one local process per stage.

Launches ``python -m executor`` K times through PyTorch's elastic launcher
(``torch.distributed.launcher.api.elastic_launch``, the machinery behind
``torchrun``), so what runs here is exactly what ``torchrun --nproc-per-node K -m
executor ...`` runs. Several nodes: run the same command on each with ``--nnodes N
--node-rank R --rdzv-endpoint HOST:PORT`` (a c10d rendezvous hosted by node 0); each
node starts K/N stage processes.

SIGTERM to this process (preemption) is passed to the stages, which stop at one
common iteration boundary, checkpoint there (``--checkpoint-dir``) and exit; the
command then exits 0 and the run continues with ``--resume DIR``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import uuid
from pathlib import Path

from ddgsim.errors import UserError


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from executor.options import add_run_arguments

    p = sub.add_parser("execute", help="run a plan for real (one process per stage, torch.distributed)",
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


def _nodes(args: argparse.Namespace, k_total: int) -> tuple[str, str, int]:
    """(rendezvous endpoint, run id, processes on this node), UserError naming a bad option."""
    n = args.nnodes
    if n < 1:
        raise UserError(f"--nnodes must be >= 1, got {n}")
    if not 0 <= args.node_rank < n:
        raise UserError(f"--node-rank must be in 0..{n - 1}, got {args.node_rank}")
    if k_total % n:
        raise UserError(f"the plan's {k_total} stages cannot be spread evenly over --nnodes {n}")
    if n == 1:
        return args.rdzv_endpoint or "localhost:0", args.rdzv_id or f"ddgsim-{uuid.uuid4().hex[:8]}", k_total
    endpoint = args.rdzv_endpoint
    host, _, port = (endpoint or "").rpartition(":")
    if not host or not port.isdigit() or int(port) == 0:
        raise UserError(f"--nnodes {n} needs --rdzv-endpoint HOST:PORT with a fixed port, got {endpoint!r}")
    return endpoint, args.rdzv_id or f"ddgsim-{host}-{port}", k_total // n


def run(args: argparse.Namespace) -> int:
    if args.max_restarts < 0:
        raise UserError(f"--max-restarts must be >= 0, got {args.max_restarts}")
    from executor.runner import prepare

    job = prepare(args)  # every UserError before anything starts or is written
    k_total = job.num_stages
    endpoint, run_id, nproc = _nodes(args, k_total)
    if job.backend == "gloo" and k_total > (os.cpu_count() or 1):
        sys.stderr.write(f"warning: {k_total} stage processes on {os.cpu_count()} CPU cores; "
                         "stages will share cores and timings will not reflect the plan\n")
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    root = str(Path(__file__).resolve().parents[2])
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    from ddgsim.malloc import hugepage_env

    os.environ.update(hugepage_env(dict(os.environ)))  # workers get huge pages for malloc
    config = LaunchConfig(
        min_nodes=args.nnodes, max_nodes=args.nnodes, nproc_per_node=nproc, run_id=run_id,
        rdzv_backend="c10d", rdzv_endpoint=endpoint, max_restarts=args.max_restarts,
        rdzv_configs={"is_host": args.node_rank == 0} if args.nnodes > 1 else {},
        monitor_interval=0.1, start_method="spawn",
        # time for the stages to agree on a stop, reach it and checkpoint after a SIGTERM
        shutdown_timeout=int(max(30.0, 2 * args.timeout_s)),
    )
    started = time.time()
    try:
        elastic_launch(config, sys.executable)("-u", "-m", "executor", *forward_argv(args))
    except SignalException as exc:
        return _after_signal(args, exc.sigval, started)
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        code = failure.exitcode
        sys.stderr.write(f"error: stage {rank} failed (exit code {code}); the job was stopped"
                         f"{' after ' + str(args.max_restarts) + ' restart(s)' if args.max_restarts else ''}\n")
        return 2 if code == 2 else 1
    return 0


def _after_signal(args: argparse.Namespace, sig: signal.Signals, started: float) -> int:
    """0 when the stages checkpointed on the way out (they print the note), 128 + signal otherwise."""
    from executor.checkpoint import read_manifest

    root = Path(args.checkpoint_dir) if args.checkpoint_dir else None
    man = read_manifest(root) if root is not None else None
    if root is not None and man is not None and man.get("preempted") and (
            root / "manifest.json").stat().st_mtime >= started:
        return 0
    sys.stderr.write(f"error: stopped by {sig.name} before a checkpoint was written"
                     f"{'' if root else ' (no --checkpoint-dir)'}\n")
    return 128 + int(sig)
