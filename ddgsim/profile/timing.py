"""How the profiler times: a clock per device (:class:`Timer`), the samples of one figure and
their medians (:class:`Samples`), the loop of rounds with its minimum durations (:class:`Rounds`)
and the progress bar."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch


class Timer:
    """Times a callable on CPU (perf_counter) or CUDA (events + synchronisation), in ms.

    On CPU it also reads ``time.thread_time`` (CPU time of this thread): with one
    intra-op thread the forward and the CPU autograd engine run on the calling thread,
    so this figure ignores time the thread spent preempted on a shared machine.
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def __call__(self, fn: Callable[[], Any]) -> tuple[float, float | None, Any]:
        if self.cuda:
            start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            torch.cuda.synchronize()
            start.record()
            result = fn()
            end.record()
            torch.cuda.synchronize()
            return float(start.elapsed_time(end)), None, result
        c0, t0 = time.thread_time(), time.perf_counter()
        result = fn()
        t1, c1 = time.perf_counter(), time.thread_time()
        return (t1 - t0) * 1e3, (c1 - c0) * 1e3, result


class Samples:
    """Timed samples of one thing (a unit's forward, its backward, the whole model)."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def add(self, wall: float, cpu: float | None) -> None:
        self.wall.append(wall)
        if cpu is not None:
            self.cpu.append(cpu)

    def median(self, clock: str = "wall") -> float:
        values = self.cpu if clock == "thread" else self.wall
        return statistics.median(values) if values else 0.0


MIN_WARMUP_S = 0.3
"""Untimed rounds last at least this long (wall clock), ``warmup`` of them at least."""
MIN_TIMED_S = 0.5
"""Timed rounds last at least this long, ``reps`` of them at least."""
QUICK_REPS = 3
"""Fewer timed repetitions than this ask for a quick look: no minimum times, exactly ``warmup + reps`` rounds."""
MAX_ROUNDS = 2000
"""No profile runs more rounds than this (``warmup + reps`` where that is more)."""


class Rounds:
    """Round numbers for the profile's loop: ``warmup`` untimed and ``reps`` timed at least, and as
    many more as it takes for the untimed ones to last :data:`MIN_WARMUP_S` and the timed ones
    :data:`MIN_TIMED_S` (wall clock), ``cap`` in all at most."""

    def __init__(self, warmup: int, reps: int, cap: int) -> None:
        self.warm, self.reps = warmup, reps
        # --reps 1 or 2 asks for a quick look: exactly warmup + reps rounds
        self.cap = cap if reps >= QUICK_REPS else warmup + reps
        self.timed = 0
        self._r = -1
        self._t0 = self._timed_t0 = time.perf_counter()

    def next(self) -> int | None:
        now = time.perf_counter()
        r = self._r + 1
        if r == self.warm and r + self.reps < self.cap and now - self._t0 < MIN_WARMUP_S:
            self.warm += 1  # still warming up: this round is untimed too
        if r == self.warm:
            self._timed_t0 = now
        if r > self.warm:
            self.timed = r - self.warm
            if (self.timed >= self.reps and now - self._timed_t0 >= MIN_TIMED_S) or r >= self.cap:
                return None
        self._r = r
        return r

    def left_at_least(self) -> int:
        """Rounds still to run, as far as the minimum counts say."""
        return max(0, self.warm + self.reps - self._r - 1)


class Bar:
    def __init__(self, advance: Callable[[str], None], total: Callable[[int], None]) -> None:
        self.advance, self.total = advance, total


@contextmanager
def progress_bar(enabled: bool, total: int, label: str) -> Iterator[Bar]:
    """A rich progress bar on stderr; ``advance(name)`` after each step, ``total(n)`` as the count grows."""
    if not enabled:
        yield Bar(lambda _name: None, lambda _n: None)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("profiling {task.fields[model]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[unit]}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("profile", total=total, model=label, unit="")

        def advance(name: str) -> None:
            bar.update(task, advance=1, unit=name)

        def grow(n: int) -> None:
            bar.update(task, total=max(n, total))

        yield Bar(advance, grow)
