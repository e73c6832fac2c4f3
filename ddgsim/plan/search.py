"""Exact split search: the split that minimises the steady-state iteration time.

Search: for a candidate period P, "is there a split with period ≤ P that fits in
memory?" is decided exactly by dynamic programming over unit boundaries, because
each closed-form condition is monotone in one number carried from stage to stage (the
largest window sum ending at the current stage for ``ddg-pipelined``, the last
stage's forward time for ``ddg``, the suffix time for ``bp``). Bisection on P
brackets the optimum to a relative 1e-9, and the split the DP returns at the upper
end is evaluated exactly. Each DP step is a vectorised (start, end) matrix, so
ResNet-1202 (606 units) on 8 devices plans in seconds.

``gpipe`` and ``1f1b`` have no such closed form: the planner enumerates every split
through the recursion when there are at most ``ENUMERATE_LIMIT`` of them (exact),
and otherwise minimises the busiest stage and reports the result as heuristic.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ddgsim.errors import UserError
from ddgsim.plan.split import backtrack, minmax_partition, reach
from ddgsim.predict import max_plus
from ddgsim.predict.closed_form import CLOSED_FORM, closed_form_period, stage_costs
from ddgsim.predict.memory import SGD_MOMENTUM_BUFFERS, in_flight_and_versions
from ddgsim.predict.scenario import Scenario
from ddgsim.profile.format import Profile
from ddgsim.schedule import Schedule, resolve

ENUMERATE_LIMIT = 20_000
"""gpipe/1f1b: enumerate every split (exact) up to this many, else a heuristic."""
MAPPING_LIMIT = 120
"""Heterogeneous scenarios: most device orders tried exactly (distinct up to identical devices)."""
REL_TOL = 1e-9


# ---------------------------------------------------------------- tables for the DP


@dataclass
class _Tables:
    """Everything the DP needs for one device mapping, as (start, end) matrices."""

    n: int
    K: int
    work: list[np.ndarray]
    """Per stage: (n+1, n+1) f+b of units [u, v) on that stage's device (inf where u ≥ v)."""
    fwd: list[np.ndarray]
    upd: list[np.ndarray]
    fits: list[np.ndarray]
    """Per stage: memory of [u, v) fits on its device."""
    comm: list[np.ndarray]
    """Per boundary k (into stage k+1): (n+1,) a+g with the cut at unit u."""
    hop: list[np.ndarray]
    """Per boundary: (n+1,) longest hop time with the cut at unit u."""
    overflow: list[np.ndarray]
    """Per stage: (n+1, n+1) bytes over the device's memory (≤ 0 fits)."""


def _tables(
    profile: Profile, scenario: Scenario, devices: Sequence[str], sched: Schedule,
    memory_limit: float | None, update_gb_s: float, optimizer_buffers: int,
) -> _Tables:
    n, K = profile.num_units, len(devices)
    units = profile.units

    def prefix(vals: Sequence[float]) -> np.ndarray:
        return np.concatenate([[0.0], np.cumsum(np.asarray(vals, dtype=np.float64))])

    M = sched.micro_batches
    micro = profile.micro_costs(M) if M > 1 else None
    # Per-iteration work: M measured micro-batches when the profile has them (as costs_for_splits).
    F = prefix([x.forward_ms for x in units] if micro is None else [M * f for f, _ in micro])
    B = prefix([x.backward_ms for x in units] if micro is None else [M * b for _, b in micro])
    Pb = prefix([x.param_bytes for x in units])
    Ab = prefix([x.activation_bytes for x in units])
    out = np.array([0.0] + [x.output_bytes for x in units])  # out[u] = bytes crossing a cut at u
    idx = np.arange(n + 1)
    valid = idx[:, None] < idx[None, :]

    def span(pref: np.ndarray) -> np.ndarray:
        return np.where(valid, pref[None, :] - pref[:, None], np.inf)

    params = np.where(valid, Pb[None, :] - Pb[:, None], 0.0)
    U = prefix(max_plus.unit_update_ms(profile, update_gb_s))
    uspan = np.where(valid, U[None, :] - U[:, None], 0.0)
    acts = np.where(valid, Ab[None, :] - Ab[:, None], 0.0)
    work, fwd, upd, fits, overflow = [], [], [], [], []
    fspan, bspan = span(F), span(B)
    for k, dev in enumerate(devices):
        d = scenario.device(dev)
        flight, versions = in_flight_and_versions(sched.actions[k], M)
        buf = np.zeros((n + 1, n + 1))
        if k > 0:
            buf = buf + 2 * out[:, None]
        if k < K - 1:
            buf = buf + 2 * out[None, :]
        buf = np.round(buf / M)
        mem = params * (2 + optimizer_buffers + versions) + np.round(flight * acts) + buf
        limit = d.memory_bytes if memory_limit is None else memory_limit
        over = np.where(valid, mem - limit, np.inf)
        overflow.append(over)
        fits.append(over <= 0)
        work.append((fspan + bspan) / d.speed)
        fwd.append(fspan / d.speed)
        upd.append(np.where(valid, uspan, np.inf) / d.speed)
    comm, hop = [], []
    for k in range(K - 1):
        total = np.zeros(n + 1)
        longest = np.zeros(n + 1)
        for src, dst in ((devices[k], devices[k + 1]), (devices[k + 1], devices[k])):
            for h in scenario.route(src, dst):
                link = scenario.link(h)
                t = link.latency_us * 1e-3 + out / (link.bandwidth_gb_s * 1e6)
                total = total + t
                longest = np.maximum(longest, t)
        comm.append(total)
        hop.append(longest)
    return _Tables(n=n, K=K, work=work, fwd=fwd, upd=upd, fits=fits, comm=comm, hop=hop, overflow=overflow)


def _feasible(schedule: str, T: _Tables, P: float) -> list[int] | None:
    """A split with closed-form period ≤ P that fits in memory, or None (exact)."""
    K, n = T.K, T.n
    allowed = reach(K, n)
    INF = np.inf
    back: list[np.ndarray] = []
    if schedule == "bp":
        # Backward over stages: V = suffix time from stage k's start; need V + u_k ≤ P.
        nxt = np.full(n + 1, INF)
        nxt[n] = 0.0
        for k in range(K - 1, -1, -1):
            starts, ends = allowed[k]
            tail = nxt.copy()
            if k < K - 1:
                ok_cut = T.hop[k] <= P
                tail = np.where(ok_cut, nxt + T.comm[k], INF)
            V = T.work[k] + tail[None, :]
            ok = T.fits[k] & (V + T.upd[k] <= P) & starts[:, None] & ends[None, :]
            V = np.where(ok, V, INF)
            arg = np.argmin(V, axis=1)
            nxt = V[np.arange(n + 1), arg]
            back.append(arg)
        if not np.isfinite(nxt[0]):
            return None
        split, u = [], 0
        for k, arg in enumerate(reversed(back)):
            v = int(arg[u])
            if k < K - 1:
                split.append(v)
            u = v
        return split
    prev = np.full(n + 1, INF)
    for k in range(K):
        starts, ends = allowed[k]
        mask = T.fits[k] & starts[:, None] & ends[None, :]
        if k == 0:
            carry = np.zeros(n + 1)
            if schedule == "ddg-pipelined":
                S = T.work[k] - P + T.upd[k]
                val = S
                ok = mask & (S <= 0)
            else:  # ddg
                ok = mask & (T.work[k] + T.upd[k] <= P)
                val = T.fwd[k]
            val = np.where(ok, val, INF)
        else:
            cut_ok = np.isfinite(prev) & (T.hop[k - 1] <= P)
            carry = np.where(cut_ok, prev + T.comm[k - 1], INF)
            if schedule == "ddg-pipelined":
                S = T.work[k] - P + np.maximum(T.upd[k], carry[:, None])
                ok = mask & (S <= 0)
                val = np.where(ok, S, INF)
            else:
                ok = mask & (T.work[k] + T.upd[k] <= P) & (carry[:, None] + T.work[k] <= P)
                val = np.where(ok, T.fwd[k], INF)
        arg = np.argmin(val, axis=0)
        prev = val[arg, np.arange(n + 1)]
        back.append(arg)
    if not np.isfinite(prev[n]):
        return None
    return backtrack(back, n)


def _min_overflow(T: _Tables) -> tuple[list[int], float]:
    """The split whose worst stage overflows memory the least (min-max DP, exact)."""
    found = minmax_partition(T.overflow, T.n)
    assert found is not None  # every stage can hold one unit: some split exists
    return found


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
    update_gb_s: float = max_plus.UPDATE_GB_S,
) -> float:
    """Predicted period of one split: the closed form where there is one, else the recursion."""
    if not isinstance(schedule, str):
        micro_batches = schedule.micro_batches
    costs = max_plus.costs_for_splits(profile, [list(split)], scenario, devices, micro_batches, update_gb_s)
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


def _bisect(
    profile: Profile, scenario: Scenario, devices: tuple[str, ...], sched: Schedule,
    update_gb_s: float, T: _Tables,
) -> Candidate | None:
    """Exact search on the period with the feasibility DP (closed-form schedules).

    Bisection, except that a feasible answer moves the upper end down to the period
    the found split actually attains, and every new upper end is probed just below
    (``hi·(1−REL_TOL)``): an infeasible probe proves the found split optimal.
    """
    K = len(devices)

    def attained(split: list[int]) -> float:
        return evaluate(profile, split, scenario, sched, devices, 1, update_gb_s)

    top = (
        sum(float(w[0, T.n]) for w in T.work) + sum(float(u[0, T.n]) for u in T.upd)
        + sum(float(np.max(c)) for c in T.comm) + 1.0
    )
    split = _feasible(sched.name, T, top)
    if split is None:
        return None
    hi, lo, checks = attained(split), 0.0, 1
    probe = True
    while hi - lo > REL_TOL * hi:
        P = hi * (1 - REL_TOL) if probe else 0.5 * (lo + hi)
        found = _feasible(sched.name, T, P)
        checks += 1
        if found is None:
            if probe:
                break
            lo = P
            probe = False
        else:
            # After a feasible midpoint, probe just below what the split attains; after
            # a feasible probe (not optimal yet), go back to halving.
            split, hi = found, min(attained(found), P)
            probe = not probe
    ms = attained(split)
    return Candidate(stages=K, split=split, devices=devices, iteration_ms=ms, exact=True, evaluated=checks)


def _enumerate(
    profile: Profile, scenario: Scenario, devices: tuple[str, ...], sched: Schedule,
    update_gb_s: float, T: _Tables,
) -> Candidate | None:
    """gpipe/1f1b: every split through the recursion (exact), or the min-bottleneck heuristic."""
    n, K = profile.num_units, len(devices)
    count = math.comb(n - 1, K - 1)
    if count <= ENUMERATE_LIMIT:
        splits = [list(s) for s in itertools.combinations(range(1, n), K - 1)]
        bounds = [[0, *s, n] for s in splits]
        fits = np.array([all(T.fits[k][b[k], b[k + 1]] for k in range(K)) for b in bounds])
        if not fits.any():
            return None
        kept = [s for s, ok in zip(splits, fits, strict=True) if ok]
        costs = max_plus.costs_for_splits(profile, kept, scenario, devices, sched.micro_batches, update_gb_s)
        per = max_plus.periods(sched, costs)
        i = int(np.argmin(per))
        return Candidate(stages=K, split=kept[i], devices=devices, iteration_ms=float(per[i]), exact=True, evaluated=len(kept))
    # Heuristic: minimise the busiest stage (M·(f+b) + u), then evaluate by the recursion.
    busiest = minmax_partition([np.where(T.fits[k], T.work[k] + T.upd[k], np.inf) for k in range(K)], n)
    if busiest is None:
        return None
    split = busiest[0]
    ms = evaluate(profile, split, scenario, sched, devices, update_gb_s=update_gb_s)
    return Candidate(stages=K, split=split, devices=devices, iteration_ms=ms, exact=False, evaluated=1)


def search(
    profile: Profile, scenario: Scenario, schedule: Schedule | str, stages: int, *,
    micro_batches: int = 1, memory_limit_bytes: float | None = None,
    devices: Sequence[str] | None = None, update_gb_s: float = max_plus.UPDATE_GB_S,
    optimizer_buffers: int = SGD_MOMENTUM_BUFFERS,
) -> SearchResult:
    """Best split for exactly ``stages`` stages, over device orders, under memory limits.

    ``schedule``: a :class:`Schedule` of ``stages`` stages, or a name (built once here with
    enough iterations for the steady state).
    """
    n = profile.num_units
    if not 1 <= stages <= n:
        raise UserError(f"cannot split {n} units of '{profile.model}' into {stages} stages (need 1 <= K <= {n})")
    if not isinstance(schedule, str):
        micro_batches = schedule.micro_batches
    sched = resolve(schedule, stages, max_plus.default_iterations(stages), micro_batches)
    if devices is not None:
        mappings, complete = [tuple(devices)], True
        max_plus.check_mapping(scenario, stages, devices)
    else:
        mappings, complete = device_mappings(scenario, stages)
    best: Candidate | None = None
    least: MemoryOverflow | None = None
    for devs in mappings:
        T = _tables(profile, scenario, devs, sched, memory_limit_bytes, update_gb_s, optimizer_buffers)
        if sched.name in CLOSED_FORM and micro_batches == 1:
            cand = _bisect(profile, scenario, devs, sched, update_gb_s, T)
        else:
            cand = _enumerate(profile, scenario, devs, sched, update_gb_s, T)
        if cand is not None:
            if best is None or cand.iteration_ms < best.iteration_ms * (1 - 1e-12):
                best = cand
            continue
        split, over = _min_overflow(T)
        bounds = [0, *split, n]
        per_stage = [float(T.overflow[k][bounds[k], bounds[k + 1]]) for k in range(stages)]
        worst = int(np.argmax(per_stage))
        limit = memory_limit_bytes if memory_limit_bytes is not None else scenario.device(devs[worst]).memory_bytes
        mo = MemoryOverflow(
            stages=stages, split=split, devices=devs, stage=worst, over_bytes=over,
            need_bytes=over + limit, limit_bytes=limit,
        )
        if least is None or mo.over_bytes < least.over_bytes:
            least = mo
    notes = []
    if not complete:
        notes.append(f"tried {len(mappings)} device orders of {stages} (limit {MAPPING_LIMIT}); the mapping search is not exhaustive")
    return SearchResult(
        best=best, overflow=None if best is not None else least,
        mappings_tried=len(mappings), mapping_exact=complete, notes=notes,
    )


# ---------------------------------------------------------------- baselines
