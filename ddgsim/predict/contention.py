"""Devices of one host slowing each other: how much longer each device's compute takes in a timeline."""

from __future__ import annotations

from collections.abc import Sequence

from ddgsim.predict.scenario import Scenario
from ddgsim.trace import TraceEvent

CONTENTION_PASSES = 3
"""Fixed-point passes for devices that slow each other (``Scenario.concurrent_speed``)."""


def contention_factors(timeline: Sequence[TraceEvent], devices: Sequence[str],
                       scenario: Scenario) -> dict[str, float] | None:
    """Time multiplier of each device's compute when devices of one host slow each other, or ``None``.

    A device's compute overlapping compute of another device with the same (non-empty)
    ``host`` runs at ``scenario.concurrent_speed``; with ``o`` the overlapping share of
    its compute time in ``timeline`` (the previous pass), its compute
    takes ``1 + o·(1/c − 1)`` times as long. ``None`` when nothing is shared (``c`` = 1, or no
    two used devices on one host).
    """
    c = scenario.concurrent_speed
    host = {d: scenario.device(d).host for d in devices}
    if c >= 1 or not any(h and list(host.values()).count(h) > 1 for h in host.values()):
        return None
    busy: dict[str, list[tuple[float, float]]] = {d: [] for d in devices}
    for e in timeline:
        if e.row in busy and e.cat in ("F", "B", "U") and e.end_ms > e.start_ms:
            busy[e.row].append((e.start_ms, e.end_ms))
    out: dict[str, float] = {}
    for d in devices:
        others = sorted(iv for o in devices if o != d and host[o] and host[o] == host[d] for iv in busy[o])
        own = sum(b - a for a, b in busy[d])
        shared = _overlap(sorted(busy[d]), others)
        out[d] = 1.0 + (shared / own if own > 0 else 0.0) * (1.0 / c - 1.0)
    return out


def _overlap(mine: list[tuple[float, float]], others: list[tuple[float, float]]) -> float:
    """Total length of ``mine`` covered by the union of ``others`` (both sorted by start)."""
    merged: list[list[float]] = []
    for a, b in others:
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    total, j = 0.0, 0
    for a, b in mine:
        while j < len(merged) and merged[j][1] <= a:
            j += 1
        k = j
        while k < len(merged) and merged[k][0] < b:
            total += min(b, merged[k][1]) - max(a, merged[k][0])
            k += 1
    return total
