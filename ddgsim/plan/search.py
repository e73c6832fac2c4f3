"""Exact split search: the split that minimises the steady-state iteration time.

Search: for a candidate period P, "is there a split with period ≤ P that fits in
memory?" is decided exactly by dynamic programming over unit boundaries, because
each closed-form condition is monotone in one number carried from stage to stage (the
largest window sum ending at the current stage for ``ddg-pipelined``, the last
stage's forward time for ``ddg``, the suffix time for ``bp``). Bisection on P
brackets the optimum to a relative 1e-9, and the split the DP returns at the upper
end is evaluated exactly. Each DP step is a vectorised (start, length) table on the
band of stage lengths that can meet P (:mod:`ddgsim.plan.band`), starting from the
period of the compute-balanced split, so a 64-stage ResNet-1202 (606 units) takes
tens of milliseconds per check. Replicated stages (a :class:`Layout`) are searched the
same way, on one replica's tables (shard work, update + all-reduce, pieces).

``gpipe`` and ``1f1b`` have no such closed form: the planner enumerates every split
through the recursion when there are at most ``ENUMERATE_LIMIT`` of them (exact),
and otherwise minimises the busiest stage and reports the result as heuristic.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ddgsim.errors import UserError
from ddgsim.plan import band
from ddgsim.plan.split import weighted_split
from ddgsim.predict import max_plus
from ddgsim.predict.closed_form import CLOSED_FORM, closed_form_period, stage_costs
from ddgsim.predict.memory import SGD_MOMENTUM_BUFFERS
from ddgsim.predict.scenario import Scenario
from ddgsim.profile.format import Profile
from ddgsim.replicas import DEFAULT_ALLREDUCE, Layout
from ddgsim.schedule import Schedule, Steady, resolve

ENUMERATE_LIMIT = 20_000
"""gpipe/1f1b: enumerate every split (exact) up to this many, else a heuristic."""
MAPPING_LIMIT = 120
"""Heterogeneous scenarios: most device orders tried exactly (distinct up to identical devices)."""
REL_TOL = 1e-9


# ---------------------------------------------------------------- the search


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """The best split for one K (and one device mapping)."""

    stages: int
    split: list[int]
    devices: tuple[str, ...]
    iteration_ms: float
    exact: bool
    """True when the search is exact for this schedule; False for the gpipe/1f1b heuristic."""
    evaluated: int = 0
    """Feasibility checks (DP) or splits enumerated."""
    layout: Layout | None = None
    """Devices of every replica of every stage (``devices`` is its flat list)."""


@dataclass(frozen=True, kw_only=True)
class MemoryOverflow:
    """No split fits: the split that overflows least, and by how much on which stage."""

    stages: int
    split: list[int]
    devices: tuple[str, ...]
    stage: int
    over_bytes: float
    need_bytes: float
    limit_bytes: float
    layout: Layout | None = None


@dataclass(frozen=True, kw_only=True)
class SearchResult:
    best: Candidate | None
    overflow: MemoryOverflow | None = None
    mappings_tried: int = 0
    mapping_exact: bool = True
    notes: list[str] = field(default_factory=list)


def evaluate(
    profile: Profile, split: Sequence[int], scenario: Scenario, schedule: Schedule | str,
    devices: Sequence[str] | None = None, micro_batches: int = 1,
    update_gb_s: float = max_plus.UPDATE_GB_S, *, layout: Layout | None = None,
    allreduce: str = DEFAULT_ALLREDUCE,
) -> float:
    """Predicted period of one split: the closed form where there is one, else the recursion."""
    if not isinstance(schedule, str):
        micro_batches = schedule.micro_batches
    # A layout replaces the mapping (one with a replica per stage is that mapping).
    costs = max_plus.costs_for_splits(profile, [list(split)], scenario, None if layout is not None else devices,
                                      micro_batches, update_gb_s, layout=layout, allreduce=allreduce)
    name = schedule if isinstance(schedule, str) else schedule.name
    if name in CLOSED_FORM and micro_batches == 1:
        return float(closed_form_period(name, stage_costs(costs))[0])
    return float(max_plus.periods(schedule, costs)[0])


def device_mappings(scenario: Scenario, K: int) -> tuple[list[tuple[str, ...]], bool]:
    """Device orders worth trying for K stages, and whether the list is complete.

    Identical devices (same speed and memory) are interchangeable up to the links,
    so on a homogeneous scenario only the scenario's order is tried (stage k on its
    k-th device: neighbours in the file are neighbours in the topology). Otherwise
    every distinct order of device *classes* is tried, each class's devices taken in
    the scenario's order, up to ``MAPPING_LIMIT`` orders.
    """
    devs = list(scenario.devices)
    if len(devs) < K:
        raise UserError(f"{K} stages need {K} devices but scenario '{scenario.name}' has {len(devs)}")
    klass = [(d.speed, d.memory_gib) for d in devs]
    if len(set(klass)) == 1:
        return [tuple(d.name for d in devs[:K])], True
    seen: set[tuple[tuple[float, float], ...]] = set()
    orders: list[tuple[str, ...]] = []
    complete = True
    for combo in itertools.permutations(range(len(devs)), K):
        sig = tuple(klass[i] for i in combo)
        if sig in seen:
            continue
        seen.add(sig)
        if len(orders) >= MAPPING_LIMIT:
            complete = False
            break
        # Concrete devices: within each class, the scenario's order.
        pools = {c: [d.name for d, kc in zip(devs, klass, strict=True) if kc == c] for c in set(sig)}
        used = {c: 0 for c in pools}
        names = []
        for c in sig:
            names.append(pools[c][used[c]])
            used[c] += 1
        orders.append(tuple(names))
    return orders, complete


def _heuristic(profile: Profile, K: int) -> list[int]:
    """Equal compute per stage (cuts at quantiles of the cumulative forward + backward time)."""
    return weighted_split(profile, K, [1.0] * K)


def _band_for(
    profile: Profile, scenario: Scenario, layout: Layout, sched: band.SchedSpec, memory_limit: float | None,
    update_gb_s: float, optimizer_buffers: int, allreduce: str,
) -> tuple[band.Band, float]:
    """Tables on a band wide enough for every split at least as fast as the balanced heuristic,
    and that heuristic's period (``inf``, on the full band, when it does not fit in memory)."""
    K, n = layout.stages, profile.num_units
    split = _heuristic(profile, K)
    bounds = [0, *split, n]
    longest = max(b - a for a, b in itertools.pairwise(bounds))
    T = band.tables(profile, scenario, layout, sched, memory_limit, update_gb_s, optimizer_buffers, allreduce, longest)
    fits = all(T.fits(k)[bounds[k], bounds[k + 1] - bounds[k] - 1] for k in range(K))
    if not fits:
        return band.tables(profile, scenario, layout, sched, memory_limit, update_gb_s, optimizer_buffers,
                           allreduce), math.inf
    name = sched.name if sched.name in CLOSED_FORM and sched.micro_batches == 1 else None
    hi = band.period(name, T, split) if name else max(
        float(T.work[k][bounds[k], bounds[k + 1] - bounds[k] - 1] + T.upd[k][bounds[k], bounds[k + 1] - bounds[k] - 1])
        for k in range(K))
    width = band.width_for(profile, layout, scenario, sched.micro_batches, hi)
    return band.tables(profile, scenario, layout, sched, memory_limit, update_gb_s, optimizer_buffers, allreduce,
                       width), hi


def _bisect(sched: band.SchedSpec, layout: Layout, T: band.Band, hi: float, width_at: Callable[[float], int],
            lower: float = 0.0) -> Candidate | None:
    """Exact search on the period with the feasibility DP (closed-form schedules).

    Bisection, except that a feasible answer moves the upper end down to the period
    the found split actually attains, and every new upper end is probed just below
    (``hi·(1−REL_TOL)``): an infeasible probe proves the found split optimal.
    """
    K = layout.stages
    name = sched.name
    split = band.feasible(name, T, hi * (1 + 1e-6) if math.isfinite(hi) else 1e300)
    if split is None:
        return None
    hi, checks = band.period(name, T, split), 1
    lo = min(lower * (1 - REL_TOL), hi)  # a known lower bound on the period: no split is below it
    probe = True
    while hi - lo > REL_TOL * hi:
        P = hi * (1 - REL_TOL) if probe else 0.5 * (lo + hi)
        found = band.feasible(name, T.cut(width_at(P)), P)
        checks += 1
        if found is None:
            if probe:
                break
            lo = P
            probe = False
        else:
            # After a feasible midpoint, probe just below what the split attains; after
            # a feasible probe (not optimal yet), go back to halving.
            split, hi = found, min(band.period(name, T, found), P)
            probe = not probe
    ms = band.period(name, T, split)
    return Candidate(stages=K, split=split, devices=tuple(layout.flat), iteration_ms=ms, exact=True,
                     evaluated=checks, layout=layout)


def _enumerate(
    profile: Profile, scenario: Scenario, layout: Layout, sched: Schedule, update_gb_s: float, T: band.Band,
    allreduce: str,
) -> Candidate | None:
    """gpipe/1f1b: every split through the recursion (exact), or the min-bottleneck heuristic."""
    n, K = profile.num_units, layout.stages
    count = math.comb(n - 1, K - 1)
    if count <= ENUMERATE_LIMIT and T.width == n:
        splits = [list(s) for s in itertools.combinations(range(1, n), K - 1)]
        bounds = [[0, *s, n] for s in splits]
        fits = np.array([all(T.fits(k)[b[k], b[k + 1] - b[k] - 1] for k in range(K)) for b in bounds])
        if not fits.any():
            return None
        kept = [s for s, ok in zip(splits, fits, strict=True) if ok]
        costs = max_plus.costs_for_splits(profile, kept, scenario, None, sched.micro_batches, update_gb_s,
                                          layout=layout, allreduce=allreduce)
        per = max_plus.periods(sched, costs)
        i = int(np.argmin(per))
        return Candidate(stages=K, split=kept[i], devices=tuple(layout.flat), iteration_ms=float(per[i]), exact=True,
                         evaluated=len(kept), layout=layout)
    # Heuristic: minimise the busiest stage (M·(f+b) + u), then evaluate by the recursion.
    busiest = band.minmax(T, [np.where(T.fits(k), T.work[k] + T.upd[k], np.inf) for k in range(K)])
    if busiest is None:
        return None
    split = busiest[0]
    ms = evaluate(profile, split, scenario, sched, update_gb_s=update_gb_s, layout=layout, allreduce=allreduce)
    return Candidate(stages=K, split=split, devices=tuple(layout.flat), iteration_ms=ms, exact=False, evaluated=1,
                     layout=layout)


def search(
    profile: Profile, scenario: Scenario, schedule: Schedule | str, stages: int, *,
    micro_batches: int = 1, memory_limit_bytes: float | None = None,
    devices: Sequence[str] | None = None, update_gb_s: float = max_plus.UPDATE_GB_S,
    optimizer_buffers: int = SGD_MOMENTUM_BUFFERS, layout: Layout | None = None, allreduce: str = DEFAULT_ALLREDUCE,
    lower_bound_ms: float = 0.0,
) -> SearchResult:
    """Best split for exactly ``stages`` stages, over device orders (or on ``layout``'s replicas),
    under memory limits.

    ``schedule``: a :class:`Schedule` of ``stages`` stages, or a name (built once here with
    enough iterations for the steady state).
    """
    n = profile.num_units
    if not 1 <= stages <= n:
        raise UserError(f"cannot split {n} units of '{profile.model}' into {stages} stages (need 1 <= K <= {n})")
    if not isinstance(schedule, str):
        micro_batches = schedule.micro_batches
    sched: band.SchedSpec
    if isinstance(schedule, str) and schedule in CLOSED_FORM and micro_batches == 1:
        sched = Steady(schedule)  # the closed forms need no action lists (a K=600 list is millions of actions)
    else:
        sched = resolve(schedule, stages, max_plus.default_iterations(stages), micro_batches)
    if layout is not None:
        if layout.stages != stages:
            raise UserError(f"the layout has {layout.stages} stages, not {stages}")
        layouts, complete = [layout], True
    elif devices is not None:
        layouts, complete = [Layout.pipeline(max_plus.check_mapping(scenario, stages, devices))], True
    else:
        orders, complete = device_mappings(scenario, stages)
        layouts = [Layout.pipeline(o) for o in orders]
    best: Candidate | None = None
    least: MemoryOverflow | None = None
    closed = sched.name in CLOSED_FORM and micro_batches == 1
    for lay in layouts:
        T, hi = _band_for(profile, scenario, lay, sched, memory_limit_bytes, update_gb_s, optimizer_buffers, allreduce)

        def width_at(P: float, lay: Layout = lay) -> int:
            return band.width_for(profile, lay, scenario, sched.micro_batches, P)

        if closed:
            cand = _bisect(sched, lay, T, hi, width_at, lower_bound_ms)
        else:
            if math.comb(n - 1, stages - 1) <= ENUMERATE_LIMIT and T.width < n:
                T = band.tables(profile, scenario, lay, sched, memory_limit_bytes, update_gb_s, optimizer_buffers,
                                allreduce)
            assert isinstance(sched, Schedule)
            cand = _enumerate(profile, scenario, lay, sched, update_gb_s, T, allreduce)
        if cand is not None:
            if best is None or cand.iteration_ms < best.iteration_ms * (1 - 1e-12):
                best = cand
            continue
        if T.width < n:
            T = band.tables(profile, scenario, lay, sched, memory_limit_bytes, update_gb_s, optimizer_buffers,
                            allreduce)
        split, over = band.min_overflow(T)
        bounds = [0, *split, n]
        per_stage = [float(T.overflow[k][bounds[k], bounds[k + 1] - bounds[k] - 1]) for k in range(stages)]
        worst = int(np.argmax(per_stage))
        limit = scenario.memory_limit(lay.devices[worst], memory_limit_bytes)
        mo = MemoryOverflow(
            stages=stages, split=split, devices=tuple(lay.flat), stage=worst, over_bytes=over,
            need_bytes=over + limit, limit_bytes=limit, layout=lay,
        )
        if least is None or mo.over_bytes < least.over_bytes:
            least = mo
    notes = []
    if not complete:
        notes.append(f"tried {len(layouts)} device orders of {stages} (limit {MAPPING_LIMIT}); the mapping search is not exhaustive")
    return SearchResult(
        best=best, overflow=None if best is not None else least,
        mappings_tried=len(layouts), mapping_exact=complete, notes=notes,
    )


# ---------------------------------------------------------------- baselines
