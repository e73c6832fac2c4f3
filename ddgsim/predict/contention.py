"""Devices of one host slowing each other: how much longer each device's compute takes in a timeline."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence

from ddgsim.predict.scenario import Scenario
from ddgsim.trace import TraceEvent

CONTENTION_PASSES = 3
"""Fixed-point passes for devices that slow each other (``Scenario.concurrent_speed``)."""


def contention_factors(timeline: Sequence[TraceEvent], devices: Sequence[str],
                       scenario: Scenario) -> dict[str, float] | None:
    """Time multiplier of each device's compute when devices of one host slow each other, or ``None``.

    While ``n`` devices with the same (non-empty) ``host`` compute at once, each runs at
    :func:`speed_at` ``n``: ``scenario.concurrent_speed`` once another computes too, times
    ``host_slots / n`` while more compute than the host has slots for. A device's compute in
    ``timeline`` (the previous pass) then takes the mean of ``1 / speed`` over its length as long:
    ``1 + o·(1/c − 1)`` for the share ``o`` that overlaps another's, with slots to spare. ``None``
    when nothing is shared (no two used devices on one host, or neither effect).
    """
    c, slots = scenario.concurrent_speed, scenario.host_slots
    host = {d: scenario.device(d).host for d in devices}
    counts = [list(host.values()).count(h) for h in host.values() if h]
    if not counts or max(counts) < 2 or (c >= 1 and not (slots and max(counts) > slots)):
        return None
    busy: dict[str, list[tuple[float, float]]] = {d: [] for d in devices}
    for e in timeline:
        if e.row in busy and e.cat in ("F", "B", "U") and e.end_ms > e.start_ms:
            busy[e.row].append((e.start_ms, e.end_ms))
    out: dict[str, float] = {}
    for d in devices:
        others = [iv for o in devices if o != d and host[o] and host[o] == host[d] for iv in busy[o]]
        own = sum(b - a for a, b in busy[d])
        stretched = sum(length / speed_at(1 + n, c, slots) for length, n in _coverage(busy[d], others))
        out[d] = stretched / own if own > 0 else 1.0
    return out


def speed_at(n: int, concurrent_speed: float, host_slots: int) -> float:
    """Speed of one of ``n`` devices of a host computing at once (1 alone): ``concurrent_speed`` with
    company, times ``host_slots / n`` past the host's slots (0: no limit)."""
    speed = 1.0 if n < 2 else concurrent_speed
    return speed * (host_slots / n if host_slots and n > host_slots else 1.0)


def _coverage(mine: Sequence[tuple[float, float]], others: Sequence[tuple[float, float]]) -> list[tuple[float, int]]:
    """(length, how many of ``others`` cover it) for the pieces of ``mine`` between the others' ends."""
    steps: dict[float, int] = {}
    for a, b in others:
        steps[a] = steps.get(a, 0) + 1
        steps[b] = steps.get(b, 0) - 1
    edges = sorted(steps)
    level = list(itertools.accumulate(steps[x] for x in edges))  # others covering [edges[i], edges[i + 1])
    out: list[tuple[float, int]] = []
    for a, b in mine:
        i = bisect.bisect_right(edges, a) - 1  # the segment a lies in (-1: before every edge)
        lo = a
        while lo < b:
            hi = min(b, edges[i + 1]) if i + 1 < len(edges) else b
            out.append((hi - lo, level[i] if i >= 0 else 0))
            lo, i = hi, i + 1
    return out
