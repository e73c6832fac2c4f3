"""Planning by time to a target loss: predicted steps-to-target × predicted iteration time.

For each K the planner's best layout of K stages (its iteration time, from the same search as
the throughput objective) and the pilots' steps to the target on that layout's split
(:mod:`ddgsim.converge.pilot`; replicas change no math, so a pipeline of the same split is
piloted). A schedule without staleness (bp, gpipe, 1f1b) computes BP's gradients at every K,
so its steps are K = 1's. The layout with the least ``steps × ms`` wins; the table keeps
both factors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ddgsim.schedule import ScheduleKind

STALE_SCHEDULES: tuple[ScheduleKind, ...] = tuple(k for k in ScheduleKind if k.delayed)
"""Schedules whose stage k applies gradients K−1−k iterations old (the registry's ``delayed`` ones)."""


def staleness_of(schedule: str, stages: int) -> int:
    """The largest staleness of a K-stage plan under ``schedule`` (stage 0's delay, or 0)."""
    return stages - 1 if schedule in STALE_SCHEDULES else 0


@dataclass(frozen=True)
class Row:
    """One K of the time-to-loss table."""

    stages: int
    layout: str
    """``K × D`` or the per-stage replica counts, for the table."""
    split: tuple[int, ...]
    iteration_ms: float
    median_steps: float | None
    """Median steps to the target over the seeds (``None``: not every seed reached it)."""
    min_steps: int | None
    max_steps: int | None
    lr: float

    @property
    def time_s(self) -> float:
        """Predicted seconds to the target (``inf`` when the pilots did not reach it)."""
        return math.inf if self.median_steps is None else self.median_steps * self.iteration_ms / 1e3

    def to_json(self) -> dict[str, Any]:
        return {"stages": self.stages, "layout": self.layout, "split": list(self.split),
                "iteration_ms": self.iteration_ms, "median_steps": self.median_steps, "min_steps": self.min_steps,
                "max_steps": self.max_steps, "lr": self.lr,
                "time_to_target_s": None if math.isinf(self.time_s) else self.time_s}


def rank(schedule: str, layouts: dict[int, tuple[str, tuple[int, ...], float]],
         pilot: Callable[[dict[int, tuple[int, ...]]], tuple[float, Sequence[Any]]]) -> tuple[float, list[Row]]:
    """``layouts``: K → (label, split, iteration ms) of the best layout of K stages. ``pilot(splits)``
    runs the pilots of ``{K: split}`` and returns ``(target, results)`` (:func:`run_pilots`).
    Returns the target and one :class:`Row` per K, fastest to the target first."""
    stale = schedule in STALE_SCHEDULES
    splits: dict[int, tuple[int, ...]] = {1: ()}
    if stale:
        splits.update({K: split for K, (_label, split, _ms) in layouts.items() if K > 1})
    target, results = pilot(splits)
    by_k = {r.stages: r for r in results}
    rows = []
    for K, (label, split, ms) in layouts.items():
        r = by_k[K if stale else 1]
        rows.append(Row(stages=K, layout=label, split=split, iteration_ms=ms, median_steps=r.median_steps,
                        min_steps=min(r.reached) if r.reached else None,
                        max_steps=max(r.reached) if r.reached else None, lr=r.lr))
    rows.sort(key=lambda x: (x.time_s, x.stages))
    return target, rows
