"""Preemption: every stage stops at one agreed iteration boundary after a SIGTERM.

The agreement goes through the job's c10d store (:class:`Preemption`); at the stop each
stage writes a checkpoint there (when it has a ``--checkpoint-dir``) and raises
:class:`Preempted`, which the stage process turns into exit status 0 and one note.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch._C._distributed_c10d import Store


class Preempted(Exception):
    """Every stage stopped at iteration boundary ``step`` on SIGTERM (checkpointed there if it could)."""

    def __init__(self, step: int, checkpoint: Path | None) -> None:
        super().__init__(step)
        self.step, self.checkpoint = step, checkpoint


class Preemption:
    """Agree on one iteration boundary at which every stage stops after a SIGTERM.

    A signal reaches each stage at a different moment, and stages run up to K − 1
    iterations apart (a stage's iteration t waits on its successor's iteration t − 1),
    so none can just stop "now". A stage that got SIGTERM, or learns that another did,
    publishes its next boundary b_k in the job's store and from then on polls the store
    at every boundary; once all K have published, each computes the same stop
    S = max_k b_k + K + 1. No stage can have passed S when it learns it: when the last
    stage published, at its boundary b_last ≤ max b, every stage was at most K − 1
    iterations ahead of the slowest, hence of b_last, and it learns at its next boundary.
    Stages that know of no preemption check the store every ``check_s`` seconds only.
    With replicated stages every process takes part and ``stages`` is the number of
    processes: along any chain of waits (neighbour messages, the all-reduce among a stage's
    replicas) each process is at most one iteration ahead of the one it waits on, so no
    process is more than world size − 1 iterations ahead of another.
    """

    def __init__(self, store: Store, rank: int, stages: int, check_s: float = 0.5) -> None:
        self.store, self.rank, self.stages, self.check_s = store, rank, stages, check_s
        self.requested = False
        self.published = False
        self.stop: int | None = None
        self._next_check = 0.0

    def request(self, *_: object) -> None:
        """SIGTERM handler: only sets a flag (acted on at the next iteration boundary)."""
        self.requested = True

    def poll(self, boundary: int) -> int | None:
        """The agreed stop boundary once known (store round trips only as described above)."""
        if self.stop is not None:
            return self.stop
        now = time.monotonic()
        if not (self.requested or self.published) and now < self._next_check:
            return None
        self._next_check = now + self.check_s
        count = int(self.store.add("preempt/count", 0))
        if (self.requested or count > 0) and not self.published:
            self.store.set(f"preempt/{self.rank}", str(boundary))
            count = int(self.store.add("preempt/count", 1))
            self.published = True
        if count >= self.stages:
            marks = [int(self.store.get(f"preempt/{k}")) for k in range(self.stages)]
            self.stop = max(marks) + self.stages + 1
        return self.stop

