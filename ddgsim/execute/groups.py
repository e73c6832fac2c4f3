"""The run's process groups: the job's store, the groups every rank creates in one order, and
their teardown at exit, checked to leave no c10d thread behind (:func:`teardown`)."""

from __future__ import annotations

import functools
import gc
import importlib
import os
import weakref
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch.distributed as dist

from ddgsim.execute.buckets import GradReducer
from ddgsim.execute.comm import Link
from ddgsim.execute.nccl_replay import act_group, grad_group, links, replica_group

if TYPE_CHECKING:
    from torch._C._distributed_c10d import Store

    from ddgsim.execute.stage_loop import StageProcess


LAZY_IMPORTS = ("torch._dynamo",)
"""Modules that bind ``group.WORLD`` into default arguments when first imported: the first
``torch.optim`` optimizer imports ``torch._dynamo``, which imports ``torch.distributed.nn.functional``.
Imported after ``init_process_group``, they keep the gloo group — its threads and its sockets —
alive past ``destroy_process_group()`` until the interpreter's shutdown, racing the peers that
close theirs: an intermittent ``terminate called without an active exception`` (SIGABRT) at exit."""


def import_before_group() -> None:
    """Import :data:`LAZY_IMPORTS`: call before ``init_process_group`` in any process that builds an
    optimizer (or anything else that imports lazily) once its group exists."""
    for name in LAZY_IMPORTS:
        importlib.import_module(name)


class Session:
    """What :func:`ddgsim.execute.runner.run_worker` set up, so that its caller can take it down on every exit path."""

    def __init__(self) -> None:
        self.proc: StageProcess | None = None
        self.group: weakref.ref[Any] | None = None


def open_store(rank: int, world: int, timeout: timedelta) -> Store:
    """The job's c10d store, its keys prefixed with this attempt of the job.

    The elastic agent keeps one TCPStore across restarts and its workers connect to it
    without a per-attempt prefix, so a restarted group would read the dead group's gloo
    addresses; the prefix names the attempt.
    """
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    base = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,  # type: ignore[attr-defined]
                         is_master=rank == 0 and not agent_store, timeout=timeout)
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    prefix = f"ddgsim/{os.environ.get('TORCHELASTIC_RUN_ID', 'run')}/attempt_{attempt}"
    store: Store = dist.PrefixStore(prefix, base)  # type: ignore[attr-defined]
    return store


def make_groups(proc: StageProcess, timeout: timedelta) -> None:
    """Every rank creates every group, in one order (new_group's contract): one per replicated stage
    (its all-reduce), then two per pair of replicas of neighbouring stages that exchange samples —
    activations one way, error gradients the other (:mod:`ddgsim.execute.comm`)."""
    job, rank = proc.job, proc.rank
    for k, d in enumerate(job.plan.replicas):
        if d > 1:
            first = proc.layout.rank(k, 0)
            group = dist.new_group(list(range(first, first + d)), timeout=timeout, backend=job.backend)
            if k == proc.stage:
                proc.group = group
                rec, members = proc.recorder, list(range(first, first + d))
                proc.reducer = GradReducer(
                    [proc.worker.params[i] for i in proc.worker.trainable], group,
                    on_issue=None if rec is None else functools.partial(rec.coll, replica_group(k), members),
                    on_wait=None if rec is None else rec.wait)
    for a, b in links(proc.layout, samples=proc.n):
        for name in (act_group(a, b), grad_group(b, a)):
            group = dist.new_group([a, b], timeout=timeout, backend=job.backend)
            if rank in (a, b):
                proc.p2p[name] = Link(name, group)


def teardown(session: Session) -> list[str]:
    """Join the helper thread, destroy the process group, check that it is gone.

    Returns what could not be taken down (empty when clean); then the caller must not
    let the interpreter run its shutdown with c10d still active.
    """
    problems: list[str] = []
    proc, session.proc = session.proc, None
    if proc is not None and getattr(proc, "outbox", None) is not None and not proc.outbox.close():
        problems.append("the send thread is still waiting on a peer")
    if problems or session.group is None:
        return problems
    # Receives still posted (only after a failure or a preemption: a successful run consumed
    # them all) go with their buffers before the group does.
    del proc
    gc.collect()
    if dist.is_initialized():
        dist.destroy_process_group()
    gc.collect()
    if session.group() is not None:
        problems.append("the process group is still referenced after destroy_process_group()")
    left = c10d_threads()
    if left:
        problems.append(f"c10d threads still running after destroy_process_group(): {', '.join(left)}")
    return problems


def c10d_threads() -> list[str]:
    """Names of this process's gloo/NCCL threads (Linux; empty where /proc is missing)."""
    names = []
    for task in Path("/proc/self/task").glob("*"):
        try:
            name = (task / "comm").read_text().strip()
        except OSError:
            continue
        if "gloo" in name or "nccl" in name.lower():
            names.append(name)
    return sorted(names)

