"""Run-time failures of a stage process: the error that ends a run, the testing hook that
injects faults, and how a lost peer is told apart from a bug."""

from __future__ import annotations

import os
import signal

import torch.distributed as dist

from ddgsim.execute.comm import PeerError


class RunError(RuntimeError):
    """The run failed at run time (non-finite loss, lost neighbour): exit status 1."""


class InjectedFault(Exception):
    """What ``DDGSIM_FAULT=STAGE:STEP:raise`` raises (:func:`fault_hook`)."""


def fault_hook(rank: int, step: int, where: str) -> None:
    """Testing hook ``DDGSIM_FAULT=STAGE:STEP[:WHAT]`` (first attempt only, i.e. before any elastic
    restart): at iteration boundary STEP that stage is SIGKILLed (``kill``, default), SIGKILLed
    half-way through writing its checkpoint of STEP (``kill-in-checkpoint``), freezes (``hang``:
    SIGSTOP), sends SIGTERM to its launcher (``term-launcher``: preemption of the job), or raises
    :class:`InjectedFault` (``raise``: a bug in the stage's code)."""
    spec = os.environ.get("DDGSIM_FAULT")
    if not spec or os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") not in ("", "0"):
        return
    stage, at, *rest = spec.split(":")
    what = rest[0] if rest else "kill"
    if int(stage) != rank or int(at) != step or where != ("checkpoint" if what == "kill-in-checkpoint" else "step"):
        return
    if what == "hang":  # frozen, as a process stuck in a driver or a dead NFS mount is
        os.kill(os.getpid(), signal.SIGSTOP)
    elif what == "term-launcher":  # the job is preempted: SIGTERM to the launcher (the agent)
        os.kill(os.getppid(), signal.SIGTERM)
    elif what == "raise":
        raise InjectedFault(f"DDGSIM_FAULT={spec}: rank {rank} raised at step {step}")
    else:
        os.kill(os.getpid(), signal.SIGKILL)


def is_comm_failure(exc: BaseException) -> bool:
    """Whether ``exc`` says this process lost contact with another (a peer died or hung), not a bug here."""
    if isinstance(exc, dist.DistError | PeerError):
        return True
    text = str(exc)
    return any(s in text for s in ("Connection closed", "Connection reset", "timed out", "Timed out",
                                   "Broken pipe", "ECONNREFUSED", "Socket", "gloo"))
