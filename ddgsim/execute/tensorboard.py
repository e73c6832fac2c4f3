"""TensorBoard scalars of a run (``--tensorboard DIR``), from the reports rank 0 gathers.

Written once, by rank 0 after the run, with ``torch.utils.tensorboard.SummaryWriter``; the
step of every scalar is the iteration t (the batch entering the pipeline at t). Only the
iterations this run executed (after a ``--resume``, from the checkpoint's step on):

==========================  =====================================================================
tag                         value at step t
==========================  =====================================================================
``train/loss``              the loss of batch t (the batch's mean over replicas)
``train/samples_per_s``     batch size / the run's step time of iteration t: the gap between the
                            moments the slowest process ended iterations t − 1 and t
``stage_K/busy_ms``         stage K's forward, backward and update compute in iteration t
``stage_K/bubble_ms``       the run's step time of iteration t minus ``busy_ms`` (idle, waiting,
                            communicating; never below 0)
``stage_K/staleness``       updates of stage K between batch t's forward and its own update
                            (``ddgsim.schedule.staleness_of``; DDG: min(t, K − 1 − k))
==========================  =====================================================================

A replicated stage writes one set per replica, ``stage_K_replica_R/...``. The figures are the
ones of the ``--metrics`` file (:mod:`ddgsim.execute.measure`), per iteration instead of medians.
The ``tensorboard`` package is an optional extra (``pip install 'ddgsim[tensorboard]'``):
:func:`check_available` says so in one line before anything runs.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ddgsim.errors import ParameterError
from ddgsim.schedule import staleness_of

if TYPE_CHECKING:
    from ddgsim.execute.job import Job


def check_available() -> None:
    """UserError unless the ``tensorboard`` package (what ``SummaryWriter`` writes with) can be imported."""
    try:
        found = importlib.util.find_spec("tensorboard") is not None
    except (ImportError, ValueError):  # a broken or stubbed-out installation
        found = False
    if not found:
        raise ParameterError("tensorboard", " needs the tensorboard package, which is not installed: "
                                            "pip install 'ddgsim[tensorboard]' (or pip install tensorboard)")


def _who(report: dict[str, Any], job: Job) -> str:
    k = report["stage"]
    return f"stage_{k}" if job.plan.replicas[k] == 1 else f"stage_{k}_replica_{report.get('replica', 0)}"


def step_ends(reports: list[dict[str, Any]]) -> dict[int, float]:
    """Per iteration, when the slowest process ended it (ms since the run's start)."""
    ends: dict[int, float] = {}
    for r in reports:
        for it, end in zip(r["iterations"], r["iter_end_ms"], strict=True):
            ends[it] = max(ends.get(it, 0.0), end)
    return ends


def scalars(job: Job, reports: list[dict[str, Any]]) -> Iterator[tuple[str, float, int]]:
    """(tag, value, step) of every scalar, in step order per tag (the table in the module doc)."""
    ends = step_ends(reports)
    its = sorted(ends)
    step_ms = {it: ends[it] - (ends[prev] if prev is not None else 0.0)
               for prev, it in zip([None, *its], its, strict=False)}
    last = max(r["stage"] for r in reports)
    losses = next(r for r in reports if r["stage"] == last and r.get("replica", 0) == 0)["losses"]
    for it in its:
        loss = losses.get(it, losses.get(str(it)))
        if loss is not None and math.isfinite(loss):
            yield "train/loss", float(loss), it
    for it in its:
        if step_ms[it] > 0:
            yield "train/samples_per_s", job.plan.batch_size / (step_ms[it] / 1e3), it
    first = its[0] if its else 0
    for r in sorted(reports, key=lambda r: (r["stage"], r.get("replica", 0))):
        who = _who(r, job)
        for i, it in enumerate(r["iterations"]):
            busy = r["forward_ms"][i] + r["backward_ms"][i] + r["update_ms"][i]
            yield f"{who}/busy_ms", busy, it
            yield f"{who}/bubble_ms", max(0.0, step_ms[it] - busy), it
        sched = job.schedule
        for t, seen in sorted(staleness_of(sched.actions[r["stage"]]).items()):
            if t >= first:
                yield f"{who}/staleness", float(seen), t


def write(job: Job, reports: list[dict[str, Any]], logdir: Path) -> None:
    """Write the run's scalars to an event file in ``logdir`` (made if missing)."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(logdir))
    try:
        for tag, value, step in scalars(job, reports):
            writer.add_scalar(tag, value, step)
    finally:
        writer.close()
