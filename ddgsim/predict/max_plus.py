"""Steady-state timing as a max-plus recursion over the action lists, vectorised over splits.

The durations come from the cost model (:mod:`ddgsim.predict.costs`: what every action and
message lasts, replicas and the executor's overheads included; its names stay importable from
here). Semantics (identical to :mod:`ddgsim.predict.event_sim`, which checks them event by event):

* Each hop of a message's route is a FIFO server per link direction (store-and-forward);
  sends are asynchronous, compute goes on.
* Start of an action = max(end of the previous action of its stage, arrival of the
  message it needs). Messages on one link direction are served in the order this
  recursion produces them, which is the order of the sending stage's list. That is
  exactly the simulator's FIFO order whenever each link direction carries one flow
  (one boundary, one direction) — true for every bundled scenario with the default
  mapping, for chains, and for meshes whose direct links are the lowest-latency
  routes. When routes of different boundaries share a link direction the two models
  may order messages differently (documented gap; ``Costs.shared_links()`` and
  ``SimResult.analytic_exact`` say when).
* Period: with ``s_{k,t}`` the start of stage k's first forward of batch t and
  ``h = N // 2``, period = max_k (s_{k,N-1} − s_{k,h})/(N−1−h): each stage's mean
  iteration time over the second half of the run (warm-up is over, the lists have no
  drain phase; over a whole number of cycles when the spacings repeat with a cycle
  c ≤ K, see :func:`steady_period`), then the slowest stage. Taking the slowest
  stage matters: a stage with slack (e.g. stage 0 under ``ddg-pipelined`` when the
  last stage is the bottleneck) runs faster than the steady state for as long as its
  slack lasts — unboundedly long when its own cost is close to the bottleneck's —
  while the bottleneck stage ticks at the steady period soon after warm-up. The
  executor should measure its iteration time the same way (pass measured start
  times to :func:`steady_period`) so predicted and measured figures compare.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from ddgsim.errors import UserError
from ddgsim.predict.costs import (
    UPDATE_GB_S as UPDATE_GB_S,  # the cost model's names, importable from here
)
from ddgsim.predict.costs import UPDATE_TRAFFIC as UPDATE_TRAFFIC
from ddgsim.predict.costs import Costs as Costs
from ddgsim.predict.costs import check_layout as check_layout
from ddgsim.predict.costs import check_mapping as check_mapping
from ddgsim.predict.costs import costs_for_splits as costs_for_splits
from ddgsim.predict.costs import default_iterations as default_iterations
from ddgsim.predict.costs import min_iterations as min_iterations
from ddgsim.predict.costs import piece_loads as piece_loads
from ddgsim.predict.costs import shard_note as shard_note
from ddgsim.predict.costs import shard_work_ms as shard_work_ms
from ddgsim.predict.costs import single_device_ms as single_device_ms
from ddgsim.predict.costs import unit_update_ms as unit_update_ms
from ddgsim.schedule import Message, Schedule, execution_order, resolve

# ---------------------------------------------------------------- the recursion

_Op = tuple[int, int, tuple[int, ...], int, int, int, bool]
# (stage, duration code 0=F 1=B 2=U 3=W, arrival slots it waits for,
#  send direction 0=none 1=activation 2=gradient, boundary, slot it fills, is-a-period-mark)


@functools.lru_cache(maxsize=64)
def compile_schedule(schedule: Schedule) -> tuple[_Op, ...]:
    """The actions in a dependency-respecting order, with integer message slots."""
    order, ptr = execution_order(schedule)
    if any(p < len(a) for p, a in zip(ptr, schedule.actions, strict=True)):
        raise ValueError(f"schedule '{schedule.name}' deadlocks; run schedule.validate() for the grid")
    slots: dict[Message, int] = {}

    def slot(msg: Message) -> int:
        return slots.setdefault(msg, len(slots))

    code = {"F": 0, "B": 1, "U": 2, "W": 3}
    marked: set[tuple[int, int]] = set()
    ops: list[_Op] = []
    for a in order:
        k, t = a.stage, a.batch
        waits = tuple(slot(msg) for msg in schedule.needs(a))
        sent = schedule.sends(a)
        send, boundary, fills = (0, 0, -1) if sent is None else (
            1 if sent.kind == "act" else 2, sent.boundary, slot(sent))
        mark = a.kind == "F" and (k, t) not in marked
        if mark:
            marked.add((k, t))
        ops.append((k, code[a.kind], waits, send, boundary, fills, mark))
    return tuple(ops)


_CHUNK = 4096
"""Splits evaluated together: small enough that the working set stays in cache."""


def run_recursion(program: Sequence[_Op], costs: Costs) -> np.ndarray:
    """Start times (S, K, N) of each stage's first forward of every batch."""
    S = costs.forward_ms.shape[0]
    parts = [_recursion(program, costs, i, min(i + _CHUNK, S)) for i in range(0, S, _CHUNK)]
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)


def _recursion(program: Sequence[_Op], costs: Costs, lo: int, hi: int) -> np.ndarray:
    S, K = hi - lo, costs.stages
    H = costs.act_hop_ms.shape[2]
    # Contiguous (stage, S) rows: strided column views make every numpy call slower.
    table = np.ascontiguousarray(np.stack(
        [costs.forward_ms[lo:hi], costs.backward_ms[lo:hi], costs.u_ms[lo:hi], np.zeros((S, K))]
    ).transpose(2, 0, 1))
    hops = (None, np.ascontiguousarray(costs.act_hop_ms[lo:hi].transpose(1, 2, 0)),
            np.ascontiguousarray(costs.grad_hop_ms[lo:hi].transpose(1, 2, 0)))
    # One FIFO server per physical link direction; padding hops get a private key.
    keys: list[list[list[object]]] = [[], [], []]
    for d, routes in ((1, costs.act_hops), (2, costs.grad_hops)):
        keys[d] = [[route[h] if h < len(route) else (d, b, h) for h in range(H)] for b, route in enumerate(routes)]
    link_free: dict[object, np.ndarray] = {}
    free = [np.zeros(S) for _ in range(K)]
    assert costs.tail_ms is not None
    tails = [[float(costs.tail_ms[k, c]) for c in range(3)] + [0.0] for k in range(K)]
    arrival: dict[int, np.ndarray] = {}
    marks: list[list[np.ndarray]] = [[] for _ in range(K)]
    for k, c, waits, send, boundary, fills, mark in program:
        start = free[k]
        for w in waits:
            start = np.maximum(start, arrival[w])
        if mark:
            marks[k].append(start)
        end = start + table[k, c] if c != 3 else start
        free[k] = end + tails[k][c] if tails[k][c] else end
        if send:
            t = end
            for h in range(H):
                key = keys[send][boundary][h]
                prev = link_free.get(key)
                if prev is not None:
                    t = np.maximum(t, prev)
                t = t + hops[send][boundary, h]  # type: ignore[index]
                link_free[key] = t
            arrival[fills] = t
    return np.stack([np.stack(m, axis=1) for m in marks], axis=1)


def steady_period(starts: np.ndarray) -> np.ndarray:
    """Iteration time from first-forward start times (..., K, N): see the module docstring.

    For each stage, over the second half of the run: if the spacings of its first
    forwards repeat with some cycle c ≤ K (the steady regime of a max-plus system can
    alternate, e.g. 123 ms, 133 ms, 123 ms, ...), the mean over the last whole number
    of cycles — the exact steady period; otherwise the mean over the whole second
    half. Then the largest over stages.
    """
    n = starts.shape[-1]
    if n < 3:
        raise UserError(f"need at least 3 iterations to measure a period, got {n}")
    h = n // 2
    span = n - 1 - h
    flat = starts.reshape(-1, n)
    best = (flat[:, -1] - flat[:, h]) / span
    tol = 1e-9 * (np.abs(best) + 1.0)
    todo = np.arange(len(flat))  # rows whose cycle is not found yet
    for c in range(1, min(starts.shape[-2], span // 2) + 1):
        gaps = np.diff(flat[todo, h:], axis=-1)
        repeats = np.abs(gaps[:, c:] - gaps[:, :-c]).max(axis=-1) <= tol[todo]
        hit = todo[repeats]
        whole = c * (span // c)
        best[hit] = (flat[hit, -1] - flat[hit, n - 1 - whole]) / whole
        todo = todo[~repeats]
        if not len(todo):
            break
    return np.asarray(best.reshape(starts.shape[:-1]).max(axis=-1))


def periods(
    schedule: Schedule | str,
    costs: Costs,
    iterations: int | None = None,
) -> np.ndarray:
    """Steady-state iteration time (ms) of each of the S candidates in ``costs``.

    This is the planner's fast path: one pass of the recursion for all S splits at
    once (numpy over the S axis), for any schedule, ``ddg``/``ddg-pipelined``/``bp``
    included. A schedule name is built with ``iterations`` (default: enough for the steady
    state); the compiled program is cached per schedule.
    """
    K = costs.stages
    n = default_iterations(K) if iterations is None else iterations
    program = compile_schedule(resolve(schedule, K, n, costs.micro_batches))
    return steady_period(run_recursion(program, costs))


def period(schedule: Schedule, costs: Costs) -> float:
    """Steady-state iteration time (ms) of one schedule object on one split (S = 1)."""
    if costs.forward_ms.shape[0] != 1:
        raise ValueError("period() takes the costs of one split; use periods() for many")
    return float(steady_period(run_recursion(compile_schedule(schedule), costs))[0])


def bp_period_closed_form(costs: Costs) -> np.ndarray:
    """Closed form for ``bp`` (no overlap at all): max over k of the cycle through stage k,

    ``C_km = Σ_{k≤j≤m} (f_j + b_j) + Σ_{k≤j<m} (a_j + g_j) + u_k + τ_km`` over k ≤ m, with a_j,
    g_j the activation / gradient transfer times across boundary j and τ_km the tails of the
    cycle's three same-stage steps (``Costs.tail_ms``: F→B on stage m, B→U and U→F on stage k).
    Without tails the longest is m = K−1 (C_0m: the whole round trip; C_k > C_0 only when a
    stage's update outlasts the work before it); a forward's tail longer than the trip beyond
    its stage makes an earlier turn the longest. A cross-check of the recursion, used by the tests.
    """
    work = costs.forward_ms + costs.backward_ms
    comm = costs.act_hop_ms.sum(axis=2) + costs.grad_hop_ms.sum(axis=2)
    comm = np.concatenate([comm, np.zeros((comm.shape[0], 1))], axis=1)
    t = costs.tail_ms
    assert t is not None  # the cycle's same-stage steps: F→B where it turns (stage m), B→U and U→F on stage k
    S, K = work.shape
    best = np.zeros(S)
    for k in range(K):  # the trip from stage k, turning back at m ≥ k
        for m in range(k, K):
            trip = work[:, k:m + 1].sum(axis=1) + comm[:, k:m].sum(axis=1)
            best = np.maximum(best, trip + costs.u_ms[:, k] + t[k, 1] + t[k, 2] + t[m, 0])
    return best
