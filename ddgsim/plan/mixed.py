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
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ddgsim.predict.collective import update_allreduce_ms
from ddgsim.predict.scenario import Scenario
from ddgsim.replicas import Layout

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


def stage_costs(per_unit: np.ndarray, extra: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """``C[u, v]``: the cost of stage ``[u, v)`` (per-unit costs summed, plus ``extra`` of its
    units' index pairs), made non-decreasing as the stage grows (``inf`` where v ≤ u)."""
    n = len(per_unit)
    pref = np.concatenate([[0.0], np.cumsum(per_unit)])
    C = pref[None, :] - pref[:, None]
    if extra is not None:
        C = C + extra(C)
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


def least_period(costs: Mapping[int, np.ndarray], devices: int) -> MixedSplit | None:
    """The least period whose :func:`least_devices` fits ``devices`` (exact over the costs'
    entries), with its layout; ``None`` if no period does."""
    values = np.unique(np.concatenate([C[np.isfinite(C)] for C in costs.values()]))
    found: tuple[int, list[int], list[int]] | None = None
    lo, hi = 0, len(values) - 1
    top = least_devices(costs, float(values[hi]))
    if top is None or top[0] > devices:
        return None
    found, best = top, float(values[hi])
    while lo < hi:  # invariant: values[hi] is feasible
        mid = (lo + hi) // 2
        got = least_devices(costs, float(values[mid]))
        if got is not None and got[0] <= devices:
            hi, found, best = mid, got, float(values[mid])
        else:
            lo = mid + 1
    assert found is not None
    return MixedSplit(period_ms=best, split=found[1], replicas=found[2])


def allreduce_extra(scenario: Scenario, names: Sequence[str], D: int, param_bytes: np.ndarray,
                    allreduce: str) -> Callable[[np.ndarray], np.ndarray]:
    """The all-reduce of a stage's parameters among D devices that sit together (the first D)."""
    pref = np.concatenate([[0.0], np.cumsum(param_bytes)])
    span = np.maximum(pref[None, :] - pref[:, None], 0.0)

    def extra(_: np.ndarray) -> np.ndarray:
        return np.asarray(update_allreduce_ms(scenario, list(names[:D]), span, allreduce, last=False))

    return extra


def place(scenario: Scenario, names: Sequence[str], mixed: MixedSplit, param_bytes: Sequence[float],
          allreduce: str) -> Layout:
    """The stages on ``names`` in order, each at the offset (among those that leave room for the
    stages after it) where the all-reduce of its parameters is fastest; the first such offset."""
    bounds = [0, *mixed.split, len(param_bytes)]
    rows: list[tuple[str, ...]] = []
    at, left = 0, mixed.devices
    for k, D in enumerate(mixed.replicas):
        left -= D
        nbytes = float(sum(param_bytes[bounds[k]:bounds[k + 1]]))
        last = len(names) - left - D
        offsets = range(at, min(at + D, last) + 1)
        off = min(offsets, key=lambda o: (float(update_allreduce_ms(scenario, list(names[o:o + D]), nbytes,
                                                                      allreduce, last=False)), o))
        rows.append(tuple(names[off:off + D]))
        at = off + D
    return Layout(tuple(rows))
