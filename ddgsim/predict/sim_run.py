"""One SimPy run: its environment, the named events its processes meet at, and what it records.

The stage processes (:mod:`ddgsim.predict.sim_processes`), the links
(:mod:`ddgsim.predict.sim_links`) and the all-reduces (:mod:`ddgsim.predict.sim_allreduce`)
share one :class:`Run`: a message's arrival, a collective's rendezvous or a chunk's step is an
event of its table, made by whichever side asks for it first and triggered by the other.
"""

from __future__ import annotations

from collections.abc import Generator, Hashable, Sequence
from typing import Any

import simpy

from ddgsim.schedule import Action
from ddgsim.trace import TraceEvent

Steps = Generator[simpy.Event, Any, None]
"""A SimPy process body (or the part of one it delegates with ``yield from``)."""


class Run:
    """The environment, the events table, the timeline and the executed order of one run."""

    def __init__(self, stages: int) -> None:
        self.env = simpy.Environment()
        self.events: dict[Hashable, simpy.Event] = {}
        """Named events, made on first use (see the module docstring)."""
        self.timeline: list[TraceEvent] = []
        """Every compute action, wait, all-reduce and hop, in the order they are recorded."""
        self.executed: list[list[Action]] = [[] for _ in range(stages)]
        """The actions each stage (its replica 0) has completed, in order."""

    def event(self, key: Hashable) -> simpy.Event:
        """The event named ``key``, made now if nobody has asked for it yet."""
        ev = self.events.get(key)
        if ev is None:
            ev = self.events[key] = self.env.event()
        return ev

    def record(self, row: str, name: str, start: float, end: float, cat: str) -> None:
        """Add one interval to the timeline."""
        self.timeline.append(TraceEvent(row=row, name=name, start_ms=start, end_ms=end, cat=cat))

    def wait_all(self, waits: Sequence[simpy.Event]) -> Steps:
        """Wait for every event of ``waits`` (none: go on at once)."""
        if len(waits) == 1:
            yield waits[0]
        elif waits:
            yield simpy.AllOf(self.env, waits)

    def finish(self, schedule: str, processes: Sequence[tuple[int, simpy.Process]]) -> int:
        """Step until nothing is scheduled; the number of events processed.

        ``processes`` are (stage, process) pairs; one still alive at the end is a deadlock.
        """
        events = 0
        while True:
            try:
                self.env.step()
            except simpy.core.EmptySchedule:
                break
            events += 1
        stuck = sorted({k for k, p in processes if p.is_alive})
        if stuck:
            raise ValueError(f"schedule '{schedule}' deadlocked on stage(s) {stuck}; validate() it")
        return events
