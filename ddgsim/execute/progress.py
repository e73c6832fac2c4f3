"""The progress bar of a run (rich): shown by replica 0 of the last stage, which computes the losses."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ddgsim.execute.job import replicas_note

if TYPE_CHECKING:
    from ddgsim.execute.stage_loop import StageProcess


class Progress:
    """rich progress bar (last stage, replica 0): loss, samples/s, ETA."""

    def __init__(self, proc: StageProcess, enabled: bool) -> None:
        self.proc = proc
        self.bar: Any = None
        if not enabled:
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                            TextColumn("{task.completed}/{task.total}"), TextColumn("{task.fields[info]}"),
                            TimeRemainingColumn(), transient=False)
        self.bar.start()
        self.task = self.bar.add_task(f"{proc.job.plan.schedule} K={proc.K}{replicas_note(proc.job)}", total=proc.N,
                                      completed=proc.start, info="")
        self.t_start = time.perf_counter()

    def update(self, it: int) -> None:
        if self.bar is None:
            return
        p = self.proc
        done = it + 1 - p.start
        rate = done * p.B / max(1e-9, time.perf_counter() - self.t_start)
        loss = p.losses[max(p.losses)] if p.losses else float("nan")
        self.bar.update(self.task, completed=it + 1, info=f"loss {loss:.4f}  {rate:.1f} samples/s")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()

