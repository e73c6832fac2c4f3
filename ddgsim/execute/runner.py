"""One stage process of a distributed run: set up, run the stage loop, report, and take it all down.

Rank k runs stage k (one process per stage; gloo on CPU, NCCL on CUDA), or with replicated
stages one replica of a stage. :func:`run_worker` builds the job (:mod:`ddgsim.execute.job`),
opens the store and the process groups (:mod:`ddgsim.execute.groups`), runs the rank's action
list (:mod:`ddgsim.execute.stage_loop`) and hands its report to rank 0
(:mod:`ddgsim.execute.report`); :func:`main` turns every way out into one exit status.

Failures: every wait is bounded by ``--timeout-s``; a dead or hung neighbour makes
the others fail with one line naming it; a non-finite loss stops the run on the last
stage (no checkpoint is written after it); the launcher stops the other stages.
SIGTERM (preemption) makes every stage stop at the same iteration boundary, write a
checkpoint there and exit 0 (:class:`~ddgsim.execute.preempt.Preemption`).

Exit (:func:`main`, the same path for success and every failure): the helper thread
is joined, the process group is destroyed and checked to be gone — no c10d thread may
outlive it into the interpreter's shutdown. Everything that imports lazily (above all
``torch._dynamo``, which the first ``torch.optim`` optimizer imports) is loaded
*before* ``init_process_group``: ``torch.distributed.nn.functional`` binds
``group=group.WORLD`` as default arguments when imported, so importing it after the
group exists keeps the group — its gloo threads and its sockets to the peers — alive
past ``destroy_process_group()`` until the interpreter tears it down at exit, while the
peers are closing their sockets: a ``std::terminate`` after the run had finished.

The names other modules import from here (:func:`~ddgsim.execute.job.prepare`,
:func:`~ddgsim.execute.job.run_inprocess_job`, :func:`~ddgsim.execute.faults.fault_hook`, ...)
live in the modules named above and are re-exported.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import traceback
import weakref

import torch
import torch.distributed as dist

from ddgsim.errors import UserError, command_line_message
from ddgsim.execute.comm import PeerError, group_timeout
from ddgsim.execute.config import RunConfig
from ddgsim.execute.evaluate import Score, evaluate_stages
from ddgsim.execute.faults import InjectedFault, RunError, fault_hook, is_comm_failure
from ddgsim.execute.groups import (
    Session,
    c10d_threads,
    import_before_group,
    make_groups,
    open_store,
    teardown,
)
from ddgsim.execute.job import (
    Job,
    check_devices,
    dataset_for,
    make_optim,
    prepare,
    replicas_note,
    resolve_backend,
    run_inprocess_job,
    stage_device,
)
from ddgsim.execute.options import parse_run_args, run_flags
from ddgsim.execute.preempt import Preempted, Preemption
from ddgsim.execute.report import COMM_LOG, publish
from ddgsim.execute.stage import flat
from ddgsim.execute.stage_loop import StageProcess
from ddgsim.logs import log_to_stderr
from ddgsim.malloc import tune_malloc

log = logging.getLogger(__name__)


def run_worker(config: RunConfig, session: Session) -> int:
    """One stage process (rank from the launcher's environment); :func:`~ddgsim.execute.groups.teardown` ends it."""
    tune_malloc()  # same allocator behaviour as the profiler measured
    torch.set_num_threads(max(1, config.threads))
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    job = prepare(config)
    if world != job.world_size:
        what = (f"{job.world_size} processes (replicas {'+'.join(map(str, job.plan.replicas))})"
                if job.replicated else f"{job.num_stages} stages")
        raise UserError(f"plan {config.plan} has {what} but {world} processes were started "
                        f"(use --nproc-per-node {job.world_size})")
    check_devices(job, int(os.environ.get("LOCAL_WORLD_SIZE", str(world))))
    device = stage_device(job, rank, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # Everything that imports lazily happens before the group exists (see the module doc):
    # the stage's optimizer imports torch._dynamo, which binds group.WORLD into defaults.
    import_before_group()
    if config.tensorboard is not None and rank == 0:  # rank 0 writes the scalars at the end
        importlib.import_module("torch.utils.tensorboard")

    proc = session.proc = StageProcess(job, rank, device)
    timeout = group_timeout(config.timeout_s, job.backend, job.plan.micro_batches)
    store = open_store(rank, world, timeout)
    # Every rank takes part (the stop's margin is the number of participants: see Preemption).
    proc.preemption = Preemption(store, rank, world)
    signal.signal(signal.SIGTERM, proc.preemption.request)
    # NCCL: device_id creates every communicator now, at each new_group, instead of at its first
    # operation (a collective step that the two sides of a link reach in different orders).
    dist.init_process_group(job.backend, store=store, timeout=timeout, rank=rank, world_size=world,
                            device_id=device if device.type == "cuda" else None)
    session.group = weakref.ref(dist.group.WORLD)
    make_groups(proc, timeout)
    publish(proc, proc.run())
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m ddgsim.execute PLAN --steps N ...``: one stage process (launched by torchrun)."""
    rank = os.environ.get("RANK", "0")
    log_to_stderr(f"stage {rank}: ")
    session = Session()
    code = 1
    try:
        code = run_worker(parse_run_args(sys.argv[1:] if argv is None else argv), session)
    except Preempted as stop:
        code = 0 if stop.checkpoint is not None else 1
        if rank == "0":
            where = (f"checkpoint in {stop.checkpoint}; continue with --resume {stop.checkpoint}"
                     if stop.checkpoint is not None else "nothing saved (no --checkpoint-dir)")
            sys.stderr.write(f"note: stopped on SIGTERM at step {stop.step}; {where}\n")
    except UserError as exc:  # a field named as the run's flag, as the launcher's own errors name it
        log.error("%s", command_line_message(exc, run_flags()))  # "error: stage R: ...", the launcher's reason
        code = UserError.exit_code
    except RunError as exc:
        log.error("%s", exc)
    except BaseException as exc:
        if isinstance(exc, RuntimeError) and is_comm_failure(exc):
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            what = (first if isinstance(exc, PeerError)
                    else f"lost contact with another stage ({type(exc).__name__}: {first})")
            log.error("%s", what)
        else:  # a bug: the whole traceback, then the same way out
            traceback.print_exc()
            code = 130 if isinstance(exc, KeyboardInterrupt) else 1
    # Out of the except clauses: the traceback (and the frames holding the stage's
    # messages) is released before the teardown checks that nothing holds the group.
    problems = teardown(session)
    if problems:
        # Letting the interpreter shut down now would tear c10d down under a running
        # thread (std::terminate): leave without the interpreter's shutdown instead.
        log.warning("%s; exiting without interpreter shutdown", "; ".join(problems))
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(code)
    return code


__all__ = ["COMM_LOG", "InjectedFault", "Job", "Preempted", "Preemption", "RunError", "Score", "Session",
           "StageProcess", "c10d_threads", "check_devices", "dataset_for", "evaluate_stages", "fault_hook",
           "flat", "main", "make_optim", "prepare", "replicas_note", "resolve_backend", "run_inprocess_job",
           "run_worker", "stage_device", "teardown"]
