"""Per-stage replica counts D_k (PipeDream's layouts): a bound for every layout, and a candidate.

**The relaxation.** Every closed form has ``f_k + b_k + u_k ≤ P`` for each stage; drop
everything else (all-reduce, messages, memory, a device slower than the fastest). A stage of
units ``[u, v)`` with D replicas then costs ``C_D[u, v]``: one replica's shard work plus the
stage's optimizer step, on the fastest device. "Can N devices run the model at period P?"
becomes a one-dimensional DP over unit boundaries:

    need[v] = min over D of  D + need[first(D, v)]

where ``first(D, v)`` is the smallest u whose stage ``[u, v)`` with D replicas fits P. The
costs never decrease as a stage grows, so ``need`` never decreases in v (shrinking the last
stage keeps it fitting) and the smallest such u is the best. The least P with
``need[n] ≤ N`` is found exactly by bisection over the (sorted) entries of the C_D: no layout
that gives each (stage, replica) its own device — any K, any D_k among the counts that shard
the batch, any split, any mapping — is faster. This is PipeDream's optimizer's recurrence
with the time of a stage as its cost.

**The candidate.** The same DP with each stage's all-reduce added (among D devices that sit
together, the scenario's first D) gives, at its least P, a split and its D_k. :func:`place`
puts its stages on the scenario's devices in order, each at the offset (among those that
still leave room for the rest) where its all-reduce is fastest — on a cluster, inside a node
when it fits. The band search (:func:`ddgsim.plan.search.search`) then finds that layout's
best split exactly, with its real all-reduces, messages and memory: the candidate's period is
exact for its layout; that the layout is the best of its kind is not claimed (the bound says
how far off it can be). :mod:`ddgsim.plan.layouts` decides when to search it and when to
choose it.

**Memory.** A stage's memory grows with the stages after it (DDG keeps ``K−k`` batches in
flight and ``K−1−k`` older weights on stage k), so when the candidate does not fit,
:func:`least_devices_fitting` packs again from the model's end, over devices × stages, with
every stage within :func:`memory_fit`'s (conservative) model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ddgsim.predict.collective import span_buckets, update_allreduce_ms
from ddgsim.predict.memory import UnitBytes, message_buffers
from ddgsim.predict.scenario import Scenario
from ddgsim.replicas import Layout, shard_share
from ddgsim.schedule import SCHEDULES, get_schedule

INF = np.inf


@dataclass(frozen=True)
class MixedSplit:
    """A split into stages with their replica counts, at the least period the costs allow."""

    period_ms: float
    split: list[int]
    replicas: list[int]

    @property
    def devices(self) -> int:
        return sum(self.replicas)


def stage_costs(per_unit: np.ndarray, extra: np.ndarray | None = None) -> np.ndarray:
    """``C[u, v]``: the cost of stage ``[u, v)`` (per-unit costs summed, plus ``extra[u, v]``),
    made non-decreasing as the stage grows (``inf`` where v ≤ u)."""
    n = len(per_unit)
    pref = np.concatenate([[0.0], np.cumsum(per_unit)])
    C = pref[None, :] - pref[:, None]
    if extra is not None:
        C = C + extra
    lower = np.tril(np.ones((n + 1, n + 1), dtype=bool))
    C = np.where(lower, -INF, C)
    # Non-decreasing in v (a longer stage ending later) and in −u (a longer stage starting earlier).
    C = np.maximum.accumulate(C, axis=1)
    C = np.maximum.accumulate(C[::-1], axis=0)[::-1]
    return np.where(lower, INF, C)


def least_devices(costs: Mapping[int, np.ndarray], period: float) -> tuple[int, list[int], list[int]] | None:
    """(devices, split, D_k) of a layout with every stage's cost ≤ ``period`` on the fewest devices
    (``None``: some unit alone does not fit).

    The DP of the module docstring, turned around: ``R[m]``, the most units m devices can run,
    is ``max(R[m−1], max over D ≤ m of reach_D(R[m−D]))`` with ``reach_D(u)`` the furthest end of
    a D-replica stage from u (costs grow with the stage, so the furthest start is the best); the
    answer is the least m with ``R[m] = n`` — a few steps per device, not per unit."""
    C0 = next(iter(costs.values()))
    n = C0.shape[0] - 1
    start = np.arange(n + 1)
    reach = {D: start + (period >= C).sum(axis=1) for D, C in costs.items()}
    widest = max(costs)
    R, how = [0], [(0, 0)]
    m = 0
    while R[m] < n:
        if m >= widest and R[m] == R[m - widest]:
            return None  # no D-stage from any reachable end gets further
        m += 1
        best, arg = R[m - 1], (0, m - 1)
        for D, r in reach.items():
            if m >= D:
                v = int(r[R[m - D]])
                if v > best:
                    best, arg = v, (D, m - D)
        R.append(best)
        how.append(arg)
    cuts, reps, at = [], [], m
    while at > 0:
        D, prev = how[at]
        if D:
            reps.append(D)
            cuts.append(R[prev])
        at = prev
    return m, sorted(cuts)[1:], reps[::-1]


@dataclass(frozen=True)
class MemoryFit:
    """Where a stage fits in memory: ``first[(D, j)][v]`` is the smallest u such that units
    ``[u, v)`` with D replicas, followed by j stages, fit (v: none do)."""

    first: dict[tuple[int, int], np.ndarray]
    stages: int
    """The most stages it covers (j < stages)."""


def memory_fit(param_bytes: Sequence[float], ub: UnitBytes,
               replicas: Sequence[int], stages: int, schedule: str, optimizer_buffers: int,
               limit_bytes: float, samples: int | None = None) -> MemoryFit:
    """:class:`MemoryFit` of :func:`ddgsim.predict.memory.stage_memory`'s model: a stage followed
    by j others keeps ``flight(j)`` batches' activations (its largest shard of ``samples`` each:
1/D where D divides them; ``None``: 1/D) and ``versions(j)``
    older weights (``ddg``/``ddg-pipelined``: j + 1 and j; ``bp``: 1 and 0), its parameters,
    gradients and optimizer state, and its message buffers (none on the output side of the
    last stage); its input side (the buffers and the held input) is taken at the model's
    largest, so that what fits here fits wherever the stage starts."""
    if schedule not in SCHEDULES or get_schedule(schedule).micro_batched:
        raise ValueError(f"no steady-state memory model for '{schedule}' without micro-batches")
    spec = get_schedule(schedule)
    PP = np.concatenate([[0.0], np.cumsum(param_bytes)])
    PA = np.concatenate([[0.0], np.cumsum(np.asarray(ub.own, dtype=np.float64))])
    largest = max(ub.message, default=0.0)
    entry = max(ub.entry, default=0.0)
    n = len(param_bytes)
    out_at = np.asarray(ub.message, dtype=np.float64).copy()  # out_at[v]: a stage [u, v)'s output
    unsaved_at = np.asarray(ub.unsaved_out, dtype=np.float64).copy()
    out_at[n] = unsaved_at[n] = 0.0  # the last stage sends nothing on
    buffers = message_buffers(largest, out_at, unsaved_at)
    first: dict[tuple[int, int], np.ndarray] = {}
    for D in replicas:
        for j in range(stages):
            flight, versions = spec.steady_flight(0, j + 1, 1)  # the first of j + 1 stages
            share = 1.0 / D if samples is None else shard_share(samples, D)
            a, c = 2 + optimizer_buffers + versions, flight * share
            f = a * PP + c * PA  # non-decreasing in u
            room = limit_bytes - buffers * share - c * entry - 1.0  # 1 byte for stage_memory's rounding
            u = np.searchsorted(f, f - room, side="left")  # smallest u with f[v] − f[u] ≤ room[v]
            first[(D, j)] = np.minimum(u, np.arange(n + 1))
    return MemoryFit(first=first, stages=stages)


def least_devices_fitting(costs: Mapping[int, np.ndarray], period: float,
                          fit: MemoryFit) -> tuple[int, list[int], list[int]] | None:
    """:func:`least_devices` with every stage also within memory, which depends on the number of
    stages after it: from the model's end, ``S[m][j]`` is the first unit that m devices in j
    stages cover to the end, ``min(S[m−1][j], first over D of a D-stage ending at S[m−D][j−1])``
    (covering more is never worse: the stage before it ends earlier, so it is shorter)."""
    C0 = next(iter(costs.values()))
    n = C0.shape[0] - 1
    time_first = {D: (period < C).sum(axis=0) - (n + 1 - np.arange(n + 1)) for D, C in costs.items()}
    starts = {(D, j): np.maximum(time_first[D], fit.first[(D, j)]).tolist() for D in costs for j in range(fit.stages)}
    none = n + 1
    S: list[list[int]] = [[n] + [none] * fit.stages]
    how: list[list[tuple[int, int]]] = [[(0, 0)] * (fit.stages + 1)]
    widest = max(costs)
    m = 0
    while True:
        m += 1
        row, arg = list(S[m - 1]), [(0, m - 1)] * (fit.stages + 1)
        for j in range(1, min(m, fit.stages) + 1):
            for D in costs:
                if m < D:
                    continue
                v = S[m - D][j - 1]
                if 0 < v <= n:
                    u = starts[(D, j - 1)][v]
                    if u < v and u < row[j]:
                        row[j], arg[j] = u, (D, m - D)
        S.append(row)
        how.append(arg)
        if 0 in row:
            break
        if m >= widest and S[m] == S[m - widest]:
            return None  # nothing moves any more
    j = row.index(0)
    cuts, reps, at = [], [], m
    while j > 0:
        D, prev = how[at][j]
        if D == 0:  # carried from fewer devices
            at = prev
            continue
        reps.append(D)
        cuts.append(S[at][j])
        at, j = prev, j - 1
    return m, sorted(cuts)[1:], reps


def least_period(costs: Mapping[int, np.ndarray], devices: int, fit: MemoryFit | None = None) -> MixedSplit | None:
    """The least period whose :func:`least_devices` (:func:`least_devices_fitting` with ``fit``)
    fits ``devices`` (exact over the costs' entries), with its layout; ``None`` if no period does."""

    def check(period: float) -> tuple[int, list[int], list[int]] | None:
        return least_devices(costs, period) if fit is None else least_devices_fitting(costs, period, fit)

    values = np.unique(np.concatenate([C[np.isfinite(C)] for C in costs.values()]))
    found: tuple[int, list[int], list[int]] | None = None
    lo, hi = 0, len(values) - 1
    top = check(float(values[hi]))
    if top is None or top[0] > devices:
        return None
    found, best = top, float(values[hi])
    while lo < hi:  # invariant: values[hi] is feasible
        mid = (lo + hi) // 2
        got = check(float(values[mid]))
        if got is not None and got[0] <= devices:
            hi, found, best = mid, got, float(values[mid])
        else:
            lo = mid + 1
    assert found is not None
    return MixedSplit(period_ms=best, split=found[1], replicas=found[2])


def allreduce_costs(scenario: Scenario, names: Sequence[str], D: int, param_bytes: np.ndarray,
                    allreduce: str) -> np.ndarray:
    """``[u, v]``: the all-reduce of stage ``[u, v)``'s parameters among D devices that sit
    together (the first D of ``names``)."""
    return np.asarray(update_allreduce_ms(scenario, list(names[:D]), span_buckets(param_bytes.tolist()), allreduce,
                                          last=False))


def place(scenario: Scenario, names: Sequence[str], mixed: MixedSplit, param_bytes: Sequence[float],
          allreduce: str) -> Layout:
    """The stages on ``names`` in order, each at the offset (among those that leave room for the
    stages after it) where the all-reduce of its parameters is fastest; the first such offset."""
    bounds = [0, *mixed.split, len(param_bytes)]
    grads = span_buckets(param_bytes)
    rows: list[tuple[str, ...]] = []
    at, left = 0, mixed.devices
    for k, D in enumerate(mixed.replicas):
        left -= D
        nbytes = grads[bounds[k], bounds[k + 1]]
        last = len(names) - left - D
        offsets = range(at, min(at + D, last) + 1)
        off = min(offsets, key=lambda o: (float(update_allreduce_ms(scenario, list(names[o:o + D]), nbytes,
                                                                      allreduce, last=False)), o))
        rows.append(tuple(names[off:off + D]))
        at = off + D
    return Layout(tuple(rows))
