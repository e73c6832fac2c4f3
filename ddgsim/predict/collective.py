"""All-reduce time over a scenario's links: the closed forms the planner searches with.

Replicas of a stage sum their weight gradients (``ddgsim.replicas``) with an all-reduce of
``n`` bytes among D devices. Two algorithms, on the scenario's link model (one transfer at
a time per link direction, store-and-forward routes, ``latency_us`` + bytes/bandwidth per hop):

* ``ring`` — the devices in layout order form a ring; reduce-scatter then all-gather, 2(D−1)
  steps, in each of which every device sends one ``n/D`` chunk to its successor at once.
  A step lasts as long as its busiest link direction: the sum, over the ring edges whose
  routes cross that direction, of one chunk's hop time. On D devices with one direct link
  each of latency α and bandwidth β this is the textbook ``2(D−1)·(α + n/(D·β))``.
* ``tree`` — a binary tree over the devices in layout order (device i's parent is
  (i−1)//2), reduce to the root then broadcast back, pipelined in ``c`` chunks: each phase
  takes ``(L + c − 1)`` chunk steps for depth ``L = ⌊log2 D⌋``; a chunk step lasts as long
  as the busiest link direction of one tree level. ``c`` is chosen to minimise the time
  (at most ``MAX_CHUNKS``). With uniform links: ``2·(L + c − 1)·(α + n/(c·β))``. Levels
  are taken not to compete for links with each other (true on direct links; where they do,
  e.g. behind one network card, the SimPy model serves the contention and is slower).

A scenario may carry a **measured** all-reduce for a host (``[[allreduce]]``, written by
``ddgsim calibrate``); among that many devices of that host, :func:`allreduce_ms` returns the
measured curve instead of either algorithm (the backend's own algorithm, measured).

The executor sums a stage's gradients bucket by bucket (``ddgsim.replicas.plan_buckets``), one
all-reduce per bucket, and its last stage also sums its replicas' loss shares (one float64,
``LOSS_BYTES``) at every update, a small all-reduce after the gradients' (:func:`after_gradients`).
:func:`update_allreduce_ms` prices all of them one after the other (a bucket's latency counts once
per bucket); :func:`span_buckets` gives the buckets of every span of units, for the planner's
tables. The SimPy model runs the same all-reduces, the buckets overlapped with the backward.

D = 1 costs nothing. The SimPy model (:mod:`ddgsim.predict.event_sim`) runs the same
chunk transfers on the link FIFOs it shares with pipeline messages; where no other
traffic competes, the two agree (property-tested).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

from ddgsim.errors import choices
from ddgsim.predict.scenario import Hop, Scenario
from ddgsim.replicas import ALLREDUCE, BUCKET_BYTES, FIRST_BUCKET_BYTES

LOSS_BYTES = 8
"""The last stage's second all-reduce before each update: the replicas' loss shares (float64)."""

MAX_CHUNKS = 64
"""Largest number of pipelined chunks the tree algorithm splits a message into."""


def ring_edges(devices: Sequence[str]) -> list[tuple[str, str]]:
    """Sender → receiver of every ring step, in layout order (empty for one device)."""
    D = len(devices)
    return [(devices[i], devices[(i + 1) % D]) for i in range(D)] if D > 1 else []


def tree_levels(devices: Sequence[str]) -> list[list[tuple[str, str]]]:
    """Child → parent edges of the binary tree, one list per depth (deepest first)."""
    by_depth: dict[int, list[tuple[str, str]]] = {}
    for i in range(1, len(devices)):
        by_depth.setdefault(int(math.log2(i + 1)), []).append((devices[i], devices[(i - 1) // 2]))
    return [by_depth[d] for d in sorted(by_depth, reverse=True)]


def _step(scenario: Scenario, edges: Sequence[tuple[str, str]], nbytes: np.ndarray) -> np.ndarray:
    """Duration of one step in which every edge moves ``nbytes`` at once: the busiest link direction."""
    load: dict[Hop, tuple[float, float]] = {}
    for src, dst in edges:
        for hop in scenario.route(src, dst):
            link = scenario.link(hop)
            lat, inv = load.get(hop, (0.0, 0.0))
            load[hop] = (lat + link.latency_us * 1e-3, inv + 1.0 / (link.bandwidth_gb_s * 1e6))
    out = np.zeros_like(nbytes, dtype=np.float64)
    for lat, inv in load.values():
        out = np.maximum(out, lat + nbytes * inv)
    return out


def ring_ms(scenario: Scenario, devices: Sequence[str], nbytes: float | np.ndarray) -> np.ndarray:
    """Ring all-reduce of ``nbytes`` (scalar or array) among ``devices``, in ms."""
    n = np.asarray(nbytes, dtype=np.float64)
    D = len(devices)
    if D < 2:
        return np.zeros_like(n)
    return 2 * (D - 1) * _step(scenario, ring_edges(devices), n / D)


def tree_ms(scenario: Scenario, devices: Sequence[str], nbytes: float | np.ndarray,
            chunks: int | None = None) -> np.ndarray:
    """Pipelined binary-tree all-reduce (reduce, then broadcast) in ms; ``chunks=None`` picks the best."""
    n = np.asarray(nbytes, dtype=np.float64)
    levels = tree_levels(devices)
    if not levels:
        return np.zeros_like(n)
    L = len(levels)
    options = range(1, MAX_CHUNKS + 1) if chunks is None else (chunks,)
    best = np.full(n.shape, np.inf)
    for c in options:
        up = np.zeros_like(n)
        down = np.zeros_like(n)
        for edges in levels:
            up = np.maximum(up, _step(scenario, edges, n / c))
            down = np.maximum(down, _step(scenario, [(b, a) for a, b in edges], n / c))
        best = np.minimum(best, (L + c - 1) * (up + down))
    return best


def tree_chunks(scenario: Scenario, devices: Sequence[str], nbytes: float) -> int:
    """The chunk count ``tree_ms`` picks for ``nbytes`` (the smallest among equally fast ones)."""
    if len(devices) < 2:
        return 1
    times = [float(tree_ms(scenario, devices, nbytes, chunks=c)) for c in range(1, MAX_CHUNKS + 1)]
    return 1 + int(np.argmin(times))


def allreduce_ms(scenario: Scenario, devices: Sequence[str], nbytes: float | np.ndarray,
                 algorithm: str = "ring") -> np.ndarray:
    """All-reduce time of ``nbytes`` among ``devices`` by ``algorithm`` (``ring`` or ``tree``), or
    the scenario's measured curve where it has one for these devices."""
    if algorithm not in ALLREDUCE:
        raise ValueError(f"unknown all-reduce algorithm {algorithm!r} (known: {choices(ALLREDUCE)})")
    curve = scenario.measured_allreduce(devices)
    if curve is not None:
        return curve.time_ms(nbytes)
    return ring_ms(scenario, devices, nbytes) if algorithm == "ring" else tree_ms(scenario, devices, nbytes)


def after_gradients(last: bool) -> list[float]:
    """Sizes of the all-reduces a replicated stage runs after its gradients' before each update:
    on the last stage the loss shares (``LOSS_BYTES``), elsewhere none."""
    return [float(LOSS_BYTES)] if last else []


def update_allreduce_ms(scenario: Scenario, devices: Sequence[str], buckets: np.ndarray | Sequence[float],
                        algorithm: str, last: bool) -> np.ndarray:
    """What a replicated stage's replicas spend in all-reduces before each update, one after the
    other: one per gradient bucket (``buckets[..., b]``: bytes of bucket b, 0 past the stage's last
    bucket — :func:`span_buckets`; no bucket for a stage without parameters, and the executor then
    issues no all-reduce), then :func:`after_gradients`; 0 for one replica. The result has
    ``buckets``' shape without its last axis."""
    b = np.asarray(buckets, dtype=np.float64)
    if len(devices) < 2:
        return np.zeros(b.shape[:-1])
    total = np.where(b > 0, allreduce_ms(scenario, devices, b, algorithm), 0.0).sum(axis=-1)
    for nbytes in after_gradients(last):
        total = total + allreduce_ms(scenario, devices, nbytes, algorithm)
    return np.asarray(total)


def span_buckets(param_bytes: Sequence[float], cap: int = BUCKET_BYTES,
                 first: int = FIRST_BUCKET_BYTES) -> np.ndarray:
    """``[i, j, b]``: :func:`_span_buckets` (built once per parameter list; read-only)."""
    return _span_buckets(tuple(float(b) for b in param_bytes), cap, first)


@functools.lru_cache(maxsize=16)
def _span_buckets(param_bytes: tuple[float, ...], cap: int, first: int) -> np.ndarray:
    """``[i, j, b]``: the bytes of gradient bucket b of a stage of units ``[i, j)`` (each unit's
    parameters taken as one tensor, as :func:`ddgsim.replicas.bucket_ready` takes them), in the
    order the backward fills them, 0 past the last bucket; all 0 where ``j <= i``.

    The buckets of ``[i, j)`` are those of ``[i+1, j)`` with unit i added to the open one (the
    backward reaches unit i last), so every span of one end is built in one pass: O(n²) steps."""
    n = len(param_bytes)
    rows: list[tuple[int, int, list[float]]] = []
    width = 1
    for j in range(1, n + 1):
        closed: list[float] = []
        size = 0.0
        for i in range(j - 1, -1, -1):
            nbytes = float(param_bytes[i])
            if nbytes > 0:
                size += nbytes
                if size >= (cap if closed else first):
                    closed.append(size)
                    size = 0.0
            row = [*closed, size] if size > 0 else closed[:]
            width = max(width, len(row))
            rows.append((i, j, row))
    out = np.zeros((n + 1, n + 1, width))
    for i, j, row in rows:
        out[i, j, :len(row)] = row
    out.flags.writeable = False
    return out


def ring_closed_form(D: int, nbytes: float, bandwidth_gb_s: float, latency_us: float) -> float:
    """Textbook ring time on uniform direct links: ``2(D−1)·(α + n/(D·β))`` (ms)."""
    if D < 2:
        return 0.0
    return 2 * (D - 1) * (latency_us * 1e-3 + nbytes / (D * bandwidth_gb_s * 1e6))


def tree_closed_form(D: int, nbytes: float, bandwidth_gb_s: float, latency_us: float, chunks: int) -> float:
    """Pipelined binary tree on uniform direct links: ``2·(L + c − 1)·(α + n/(c·β))``, L = ⌊log2 D⌋ (ms)."""
    if D < 2:
        return 0.0
    L = int(math.log2(D))
    return 2 * (L + chunks - 1) * (latency_us * 1e-3 + nbytes / (chunks * bandwidth_gb_s * 1e6))
