"""What a run reports: each rank's timings, losses and weights as one dict, and rank 0's gathering
of every rank's into the outputs (``--metrics``, ``--trace``, ``--final-weights``, the summary).

A rank records one row per action (:class:`Timing`); :func:`stage_report` turns them into per
iteration figures (``ddgsim.execute.measure`` says what each one means); :func:`publish` writes
the stage's final weights, gathers the reports on rank 0 and writes what was asked for there
(``--tensorboard``: :mod:`ddgsim.execute.tensorboard`).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from ddgsim.execute.nccl_replay import WORLD
from ddgsim.fileio import atomic_open

if TYPE_CHECKING:
    from ddgsim.execute.stage_loop import StageProcess

COMM_LOG = "DDGSIM_COMM_LOG"
"""A folder: each rank writes what it issued and waited for to ``rank<R>.json`` (:mod:`ddgsim.execute.nccl_replay`)."""


@dataclass
class Timing:
    """Per action: (iteration, kind, name, start, end, wait, comm) in seconds since the run's t0;
    per iteration, when this rank ended it."""

    rows: list[tuple[int, str, str, float, float, float, float]] = field(default_factory=list)
    iter_end: dict[int, float] = field(default_factory=dict)


def stage_report(proc: StageProcess, test: dict[str, float] | None, wall: float) -> dict[str, Any]:
    """This rank's report: per iteration timings (ms), its actions and sends, the losses it saw,
    its test score (last stage), its peak memory and its final weights."""
    rows = proc.timing.rows
    per_it: dict[int, dict[str, float]] = {}
    for it, kind, _name, c0, c1, wt, cm in rows:
        d = per_it.setdefault(it, {"F": 0.0, "B": 0.0, "U": 0.0, "W": 0.0, "wait": 0.0, "comm": 0.0})
        d[kind] += c1 - c0
        d["wait"] += wt
        d["comm"] += cm
    its = sorted(proc.timing.iter_end)
    ends = [proc.timing.iter_end[i] for i in its]
    step = [1e3 * (e - p) for p, e in zip([0.0, *ends], ends, strict=False)]
    devices = proc.layout.flat
    weights = proc.worker.flat_weights()
    return {
        "stage": proc.stage, "replica": proc.replica, "device": devices[proc.rank], "iterations": its,
        "step_ms": step,
        "forward_ms": [1e3 * per_it.get(i, {}).get("F", 0.0) for i in its],
        "backward_ms": [1e3 * per_it.get(i, {}).get("B", 0.0) for i in its],
        "update_ms": [1e3 * per_it.get(i, {}).get("U", 0.0) for i in its],
        "wait_ms": [1e3 * (per_it.get(i, {}).get("wait", 0.0) + per_it.get(i, {}).get("W", 0.0)) for i in its],
        "comm_ms": [1e3 * per_it.get(i, {}).get("comm", 0.0) for i in its],
        "iter_end_ms": [1e3 * e for e in ends],
        **(proc.compute_timer.per_iteration(its) or {}),
        "events": [(name, 1e3 * c0, 1e3 * c1, kind) for _it, kind, name, c0, c1, _w, _c in rows],
        "sends": [(1e3 * (p - proc.t0), 1e3 * (q - proc.t0), n, b, devices[dst])
                  for p, q, n, b, dst in proc.outbox.done],
        "losses": {int(t): v for t, v in proc.losses.items()},
        "test": test, "wall_s": wall, "data_source": proc.ds.source,
        "peak_memory_bytes": proc.memory.peak_bytes, "memory_method": proc.memory.method,
        "weights": weights,
        "weights_sha256": hashlib.sha256(weights.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest(),
    }


def publish(proc: StageProcess, report: dict[str, Any]) -> None:
    """Write the stage's final weights (replica 0), then gather every rank's report on rank 0, which
    writes the metrics, the trace and the TensorBoard scalars and prints the summary (a collective:
    every rank calls it)."""
    job, rank, world = proc.job, proc.rank, proc.layout.world_size
    config = job.config
    if config.final_weights and proc.replica == 0:
        ckpt_state = {"weights": report["weights"], "losses": report["losses"], "stage": proc.stage,
                      "test": report["test"]}
        with atomic_open(Path(config.final_weights) / f"stage-{proc.stage}.pt", "wb") as fh:
            torch.save(ckpt_state, fh)
    report.pop("weights")
    gathered: list[Any] = [None] * world if rank == 0 else []
    if proc.recorder is not None:
        proc.recorder.wait(proc.recorder.coll(WORLD, range(world)))
        proc.recorder.save(Path(os.environ[COMM_LOG]) / f"rank{rank}.json")
    dist.gather_object(report, gathered if rank == 0 else None, dst=0)
    if rank == 0:
        from ddgsim.execute.measure import summarize, write_outputs

        reports = [g for g in gathered if g is not None]
        write_outputs(job, reports, config.metrics, config.trace)
        if config.tensorboard is not None:
            from ddgsim.execute import tensorboard

            tensorboard.write(job, reports, config.tensorboard)
        print(summarize(job, reports), flush=True)
        for what, path in (("metrics", config.metrics), ("trace", config.trace),
                           ("final weights", config.final_weights), ("tensorboard scalars", config.tensorboard)):
            if path:
                print(f"wrote {what} {path}", flush=True)
