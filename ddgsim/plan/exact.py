"""Exact search over per-stage replica counts D_k, splits and stage counts, on symmetric scenarios.

**Where it is exact.** On a *symmetric* scenario (:func:`symmetric`: the devices alike, every pair
joined by its own direct link, all links alike, no measured all-reduce) a stage's costs do not
depend on which devices hold its replicas: its all-reduce rides its own ring, each piece of a
boundary its own link. A layout is then fixed by its split and its D_k, and ``ddg-pipelined``'s
closed form (:mod:`ddgsim.predict.closed_form`, M = 1) with every cost the simulator's
:func:`ddgsim.predict.max_plus.costs_for_splits` prices — shard work, optimizer step, all-reduce
among the stage's D_k devices (the last stage's loss shares too), the messages between stages
of different D (pieces), and the scenario's ``[overheads]`` (the messages each action takes and
posts, and the CPU their bytes cost, depend on both neighbours' D) — is searched exactly, memory aside.

**The DP.** For a period P, ``ddg-pipelined`` meets P iff for every window of stages ``[k, j]``,
``close_k + tf_j + Σ work + Σ comm ≤ P·(j−k+1)``. Carried from stage to stage is the largest
window excess ending at the current stage, ``S_j = work_j − P + max(close_j, S_{j−1} + comm_{j−1})``
(less is better), over states (end unit v, D of the stage ending there, devices used m). A stage's
backward and the tail of its forward depend on the *next* stage's D (how many pieces it posts):
they are added, and the stage's own check ``S + tf ≤ 0`` made, when the next stage is chosen
(the last stage posts nothing). Bisection on P — an upper end that moves down to what the found
layout attains, probed just below — ends within a relative ``REL_TOL`` of the optimum.

The result is the least period over every K, every D_k among the counts given, every split, on at
most N devices; it is also a lower bound for any layout on these devices, so the planner's gap is
zero where its layout fits in memory. :mod:`ddgsim.plan.layouts` falls back to the relaxation of
:mod:`ddgsim.plan.mixed` elsewhere (other schedules, memory limits that bind, clusters).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ddgsim.plan.band import _boundary
from ddgsim.plan.search import evaluate as evaluate_split
from ddgsim.predict import max_plus
from ddgsim.predict.collective import span_buckets, update_allreduce_ms
from ddgsim.predict.overheads import message_cpu_ms
from ddgsim.predict.scenario import FreeMesh, Scenario
from ddgsim.profile.format import Profile
from ddgsim.replicas import Layout, piece_counts, piece_share
from ddgsim.schedule import ScheduleKind

INF = np.inf
REL_TOL = 1e-9
SYMMETRIC_CHECK_LIMIT = 128
"""Scenarios listing links are checked pair by pair up to this many devices (``FreeMesh`` by rule)."""
WORK_LIMIT = 4e8
"""Largest DP (entries touched per feasibility check) the planner runs; larger ones fall back."""


@dataclass(frozen=True)
class ExactLayout:
    """The best layout the DP found: its split, D_k, and the closed-form period it attains."""

    period_ms: float
    split: list[int]
    replicas: list[int]
    checks: int
    """Feasibility checks (DP runs) of the bisection."""

    @property
    def devices(self) -> int:
        return sum(self.replicas)


def symmetric(scenario: Scenario, devices: int) -> bool:
    """Do the scenario's first ``devices`` devices all look alike (module docstring)?"""
    devs = scenario.devices[:devices]
    if len(devs) < devices or scenario.allreduce:
        return False
    if len({(d.speed, d.memory_gib) for d in devs}) != 1:
        return False
    if isinstance(scenario.rules, FreeMesh):
        return True
    if scenario.rules is not None or devices > SYMMETRIC_CHECK_LIMIT:
        return False
    names = [d.name for d in devs]
    seen: set[tuple[float, float]] = set()
    for a in names:
        for b in names:
            if a == b:
                continue
            route = scenario.route(a, b)
            if route != [(a, b)]:
                return False
            link = scenario.link(route[0])
            seen.add((link.bandwidth_gb_s, link.latency_us))
    return len(seen) <= 1


def dp_work(units: int, replica_options: int, devices: int) -> float:
    """Entries one feasibility check touches (≈ D options² × stage (start, end) pairs × device counts)."""
    return replica_options ** 2 * units * (units + 1) / 2 * (devices + 1)


@dataclass
class _Tables:
    """Costs of stage ``[u, v)`` with the j-th replica count, ``(n+1, n+1)`` each (``inf`` where v ≤ u)."""

    Ds: list[int]
    work: list[np.ndarray]
    """Shard forward + backward, plus the fixed cost of one F and one B (the message counts aside)."""
    close: list[np.ndarray]
    """Not last / last stage: update + all-reduce + the fixed cost of one U + the tails of B and U."""
    close_last: list[np.ndarray]
    comm: np.ndarray
    """(nd, nd, n+1): activation + gradient time across a cut at u between D_i and D_j replicas."""
    hop: np.ndarray
    """(nd, nd, n+1): busiest link direction of one round of those messages."""
    recv: np.ndarray
    """(nd, nd): messages the D_j side takes per F (and posts per B)."""
    send: np.ndarray
    """(nd, nd): messages the D_i side posts per F (and takes per B)."""
    xfer: np.ndarray
    """(nd, nd, n+1): the CPU one piece's bytes cost each end across a cut at u
    (:func:`ddgsim.predict.overheads.message_cpu_ms`), paid by every F and B that takes or posts it."""
    tail_ms: float
    receive_ms: float
    send_ms: float


def _tables(profile: Profile, scenario: Scenario, names: Sequence[str], Ds: Sequence[int], update_gb_s: float,
            allreduce: str) -> _Tables:
    n = profile.num_units
    samples = profile.batch_size  # one micro-batch (ddg-pipelined, M = 1): its shards may differ by a sample
    o = scenario.overheads  # a job of two processes or more (one process: see exact_search)
    speed = scenario.device(names[0]).speed
    lower = np.tril(np.ones((n + 1, n + 1), dtype=bool))

    def span(values: Sequence[float]) -> np.ndarray:
        pref = np.concatenate([[0.0], np.cumsum(np.asarray(values, dtype=np.float64))])
        return np.asarray(pref[None, :] - pref[:, None])

    grads = span_buckets([u.param_bytes for u in profile.units])  # [i, j, b]: bucket b of stage [i, j)
    upd = span(max_plus.unit_update_ms(profile, update_gb_s)) / speed + o.update_us * 1e-3
    work: list[np.ndarray] = []
    close: list[np.ndarray] = []
    close_last: list[np.ndarray] = []
    for D in Ds:
        costs, _ = profile.shard_costs(1, D)
        w = span([f + b for f, b in costs]) / speed + (o.forward_us + o.backward_us) * 1e-3
        work.append(np.where(lower, INF, w))
        for out, last in ((close, False), (close_last, True)):
            ar = update_allreduce_ms(scenario, list(names[:D]), grads, allreduce, last=last)
            out.append(np.where(lower, INF, upd + ar + 2 * o.tail_us * 1e-3))
    nd = len(Ds)
    msg = np.array([0.0] + [float(u.output_bytes) for u in profile.units], dtype=np.float64)
    comm = np.full((nd, nd, n + 1), INF)
    hop = np.full((nd, nd, n + 1), INF)
    recv = np.zeros((nd, nd))
    send = np.zeros((nd, nd))
    xfer = np.zeros((nd, nd, n + 1))
    for i, a in enumerate(Ds):
        for j, b in enumerate(Ds):
            if a + b > len(names):
                continue
            src, dst = list(names[:a]), list(names[a:a + b])
            at, ah = _boundary(scenario, src, dst, msg, samples)
            gt, gh = _boundary(scenario, dst, src, msg, samples)
            comm[i, j], hop[i, j] = at + gt, np.maximum(ah, gh)
            recv[i, j], send[i, j] = piece_counts(samples, a, b)
            xfer[i, j] = message_cpu_ms(o, msg * piece_share(samples, a, b))
    return _Tables(Ds=list(Ds), work=work, close=close, close_last=close_last, comm=comm, hop=hop, recv=recv,
                   send=send, xfer=xfer, tail_ms=o.tail_us * 1e-3, receive_ms=o.receive_us * 1e-3, send_ms=o.send_us * 1e-3)


def _feasible(T: _Tables, n: int, N: int, P: float, least_devices: int) -> tuple[list[int], list[int]] | None:
    """A split and D_k with closed-form period ≤ P on at most N (and at least ``least_devices``) devices."""
    Ds, nd = T.Ds, len(T.Ds)
    S = np.full((n + 1, nd, N + 1), INF)
    pred_u = np.full((n + 1, nd, N + 1), -1, dtype=np.int64)
    pred_i = np.full((n + 1, nd, N + 1), -1, dtype=np.int64)
    work = np.stack(T.work)  # (nd, n+1, n+1)
    close = np.stack(T.close)
    close[:, :, n] = np.stack(T.close_last)[:, :, n]  # a stage ending at n is the last
    # A stage [u, v) can only meet P if work + close fits (its own window).
    fits = np.asarray(work + close <= P)
    for u in range(n):
        ok_v = fits[:, u, :].any(axis=0)
        if not ok_v.any():
            continue
        vmax = int(np.nonzero(ok_v)[0].max())
        vs = slice(u + 1, vmax + 1)
        A = work[:, u, vs] - P  # (nd_j, L)
        C = close[:, u, vs]
        if u == 0:
            val = A + C  # (nd_j, L)
            for j, D in enumerate(Ds):
                if D <= N:
                    S[vs, j, D] = np.minimum(S[vs, j, D], val[j])
                    pred_u[vs, j, D] = 0
            continue
        here = S[u]  # (nd_i, N+1): exactly m devices so far
        reach = np.isfinite(here)
        if not reach.any():
            continue
        # Only entries no entry of the same replica count with fewer devices beats take part: an entry
        # (m', S') with m' < m and S' <= S reaches every target the entry (m, S) does, with fewer
        # devices and no larger S (every step below is monotone in S). Every layout from here has
        # two stages or more, so the fewest-devices entries are never the one-device layout the
        # final check may exclude.
        before = np.concatenate([np.full((nd, 1), INF), np.minimum.accumulate(here, axis=1)[:, :-1]], axis=1)
        front = reach & (here < before)
        rows = np.nonzero(front.any(axis=1))[0]
        cols = np.nonzero(front.any(axis=0))[0]
        cur = here[rows][:, cols]  # (r, w): device totals ``cols``
        sd, rv = T.send[rows], T.recv[rows]  # (r, nd_j)
        by = 2 * T.xfer[rows, :, u]  # (r, nd_j): a piece's bytes, at both of an F and a B
        # (r, nd_j, w): + the B's message costs, and the bytes of what its F posts and its B takes
        S_in = cur[:, None, :] + ((T.receive_ms + by) * sd)[:, :, None]
        pend = S_in + (T.tail_ms + T.send_ms * sd)[:, :, None] <= 0  # the previous stage's own check
        X = np.where(pend & (T.hop[rows, :, u] <= P)[:, :, None], S_in + T.comm[rows, :, u][:, :, None], INF)
        live = np.asarray(np.isfinite(X).any(axis=2))
        if not live.any():
            continue
        # new[i, j, l, m] = A_j[l] + (receive + bytes)·rv_ij + max(C_j[l] + send·rv_ij, X[i, j, m])
        Ai = A[None, :, :] + ((T.receive_ms + by) * rv)[:, :, None]
        Ci = C[None, :, :] + (T.send_ms * rv)[:, :, None]
        new = Ai[:, :, :, None] + np.maximum(Ci[:, :, :, None], X[:, :, None, :])
        new = np.where(live[:, :, None, None], new, INF)
        arg = np.argmin(new, axis=0)  # (nd_j, L, w)
        best = np.take_along_axis(new, arg[None], axis=0)[0]
        arg = rows[arg]
        for j, D in enumerate(Ds):
            keep = cols + D <= N
            if not keep.any():
                continue
            to = cols[keep] + D  # the targets' device totals
            Sv, Pu, Pi = S[vs, j], pred_u[vs, j], pred_i[vs, j]  # views (L, N+1)
            tgt = Sv[:, to]
            cand = best[j][:, keep]
            better = cand < tgt
            Sv[:, to] = np.where(better, cand, tgt)
            Pu[:, to] = np.where(better, u, Pu[:, to])
            Pi[:, to] = np.where(better, arg[j][:, keep], Pi[:, to])
    done = np.asarray(S[n] + T.tail_ms <= 0)  # the last stage posts nothing
    done[:, :least_devices] = False
    hits = np.argwhere(done)
    if not len(hits):
        return None
    j, m = min(hits.tolist(), key=lambda h: (h[1], S[n][h[0], h[1]]))  # fewest devices
    split, reps, v = [], [], n
    while v > 0:
        u, i = int(pred_u[v, j, m]), int(pred_i[v, j, m])
        reps.append(Ds[j])
        m -= Ds[j]
        if u > 0:
            split.append(u)
        v, j = u, i
    assert m == 0, "backtracking must account for every device"
    return sorted(split), reps[::-1]


def _period(T: _Tables, n: int, split: Sequence[int], replicas: Sequence[int]) -> float:
    """The ``ddg-pipelined`` closed form of one layout read off the tables (what :func:`_feasible` decides)."""
    bounds = [0, *split, n]
    K = len(replicas)
    j = [T.Ds.index(D) for D in replicas]
    work, close, tf, comm, hop = [], [], [], [], 0.0
    for k in range(K):
        u, v = bounds[k], bounds[k + 1]
        rv = T.recv[j[k - 1], j[k]] if k > 0 else 0.0
        sd = T.send[j[k], j[k + 1]] if k < K - 1 else 0.0
        by = 2 * ((T.xfer[j[k - 1], j[k], u] * rv if k > 0 else 0.0) + (T.xfer[j[k], j[k + 1], v] * sd if k < K - 1 else 0.0))
        work.append(T.work[j[k]][u, v] + T.receive_ms * (rv + sd) + by)
        close.append((T.close_last if k == K - 1 else T.close)[j[k]][u, v] + T.send_ms * rv)
        tf.append(T.tail_ms + T.send_ms * sd)
        if k < K - 1:
            comm.append(T.comm[j[k], j[k + 1], v])
            hop = max(hop, T.hop[j[k], j[k + 1], v])
    best = hop
    for a in range(K):
        total = close[a]
        for b in range(a, K):
            total += work[b] + (comm[b - 1] if b > a else 0.0)
            best = max(best, (total + tf[b]) / (b - a + 1))
    return float(best)


def evaluate(profile: Profile, scenario: Scenario, names: Sequence[str], split: Sequence[int],
             replicas: Sequence[int], update_gb_s: float, allreduce: str) -> float:
    """The ``ddg-pipelined`` closed form of a split and D_k packed on ``names`` in order (the simulator's costs)."""
    return evaluate_split(profile, split, scenario, ScheduleKind.DDG_PIPELINED, update_gb_s=update_gb_s,
                          layout=Layout.packed(names, replicas), allreduce=allreduce)


def exact_search(profile: Profile, scenario: Scenario, devices: int, replica_options: Sequence[int], *,
                 update_gb_s: float = max_plus.UPDATE_GB_S, allreduce: str = "ring",
                 lower_bound_ms: float = 0.0) -> ExactLayout:
    """The least ``ddg-pipelined`` period over every K, split and D_k in ``replica_options`` on at most
    ``devices`` devices of a :func:`symmetric` scenario (memory aside; module docstring)."""
    n = profile.num_units
    names = [d.name for d in scenario.devices[:devices]]
    Ds = sorted(d for d in set(replica_options) if d <= devices)
    if 1 not in Ds:
        Ds = [1, *Ds]  # one device always shards the batch
    T = _tables(profile, scenario, names, Ds, update_gb_s, allreduce)
    # One process alone runs with [overheads.alone]: that layout is timed on its own.
    least = 2 if scenario.overheads.alone is not None else 1
    solo = evaluate(profile, scenario, names, [], [1], update_gb_s, allreduce)
    best = ExactLayout(period_ms=solo, split=[], replicas=[1], checks=0)
    one = float(T.work[0][0, n] + T.close_last[0][0, n] + T.tail_ms)  # K = 1, D = 1 with these overheads
    hi = max(one, solo) * (1 + 1e-6)
    lo = min(lower_bound_ms * (1 - REL_TOL), best.period_ms)
    checks, probe, P = 0, False, hi
    while True:
        found = _feasible(T, n, devices, P, least) if devices >= least else None
        checks += 1
        if found is not None:
            ms = _period(T, n, found[0], found[1])
            assert ms <= P * (1 + 1e-9) + 1e-12, f"the DP's layout attains {ms} ms, above the period {P} it was run at"
            if ms < best.period_ms * (1 - 1e-12) or (ms <= best.period_ms and len(found[1]) < len(best.replicas)):
                best = ExactLayout(period_ms=ms, split=found[0], replicas=found[1], checks=checks)
            hi = min(P, ms)
            # After a feasible midpoint, probe just below what it attains (infeasible: optimal);
            # after a feasible probe, halve again.
            probe = not probe
        else:
            if probe:
                break
            lo, probe = P, False
        if not hi - lo > REL_TOL * hi:
            break
        P = hi * (1 - REL_TOL) if probe else 0.5 * (lo + hi)
    # What the simulator's costs model says of the layout found (the tables price it the same).
    ms = evaluate(profile, scenario, names, best.split, best.replicas, update_gb_s, allreduce)
    return ExactLayout(period_ms=ms, split=best.split, replicas=best.replicas, checks=checks)
