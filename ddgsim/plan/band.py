"""The split search's tables and exact feasibility DPs, on a band of stage lengths.

For a candidate period P, a stage can hold units ``[u, v)`` only if their work fits in P
(every closed form has ``f_k + b_k + u_k ≤ P``), so only ``v − u ≤ W(P)`` matters. Tables
are ``(n+1, W)`` arrays — entry ``[u, w]`` is the stage ``[u, u+1+w)`` — instead of
``(n+1, n+1)`` matrices: a 64-stage ResNet-1202 (606 units) check touches ~30 entries per
start instead of 607. The DPs are exactly those of the full matrices (a stage outside the
band cannot meet P anyway).

Replicated stages (``ddgsim.replicas``): the tables hold one replica's work (its shard of
every micro-batch, :meth:`Profile.shard_costs`), its memory (activations and buffers of a
shard), its update plus the all-reduce of the stage's parameters among the stage's devices
(:mod:`ddgsim.predict.collective`), and the boundary messages as pieces between replicas:
every link direction serves its pieces one after the other, and a boundary costs its
slowest piece's route at those loads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ddgsim.plan.split import reach
from ddgsim.predict import max_plus
from ddgsim.predict.closed_form import StageCosts, closed_form_period
from ddgsim.predict.collective import span_buckets, update_allreduce_ms
from ddgsim.predict.memory import message_buffers, steady_flights, unit_bytes
from ddgsim.predict.overheads import action_ms, bytes_ms, tail_ms
from ddgsim.predict.scenario import Scenario
from ddgsim.profile.format import Profile
from ddgsim.replicas import Layout, shard_share
from ddgsim.schedule import Cycle, get_schedule

INF = np.inf


class SchedSpec(Protocol):
    """What the tables need of a schedule: its name and micro-batch count (a :class:`Schedule` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def micro_batches(self) -> int: ...


@dataclass
class Band:
    """Per-stage tables of one layout, ``[u, w]`` = units ``[u, u+1+w)``; ``inf``/False outside."""

    n: int
    K: int
    width: int
    """W: the longest stage (in units) the tables cover."""
    work: list[np.ndarray]
    """f+b per iteration of one replica of the stage, on its device."""
    fwd: list[np.ndarray]
    upd: list[np.ndarray]
    """Optimizer step plus the all-reduce among the stage's replicas."""
    overflow: list[np.ndarray]
    """Bytes over the device's memory (≤ 0 fits)."""
    comm: list[np.ndarray]
    """Per boundary k: (n+1,) activation + gradient time with the cut at unit u."""
    hop: list[np.ndarray]
    """Per boundary k: (n+1,) busiest link direction of one round of messages with the cut at u."""
    measured: bool
    """The replicas' shard costs were measured (False: scaled from the batch)."""
    masks: list[np.ndarray]
    """Per stage: allowed (start, length) pairs (every stage keeps ≥ 1 unit)."""
    tails: np.ndarray | None = None
    """(K, 3): the tail of one F, B, U of each stage (:func:`ddgsim.predict.overheads.tail_ms`);
    ``work``, ``fwd`` and ``upd`` hold the overheads before the message leaves."""

    def tail(self, k: int) -> tuple[float, float, float]:
        return (0.0, 0.0, 0.0) if self.tails is None else (float(self.tails[k, 0]), float(self.tails[k, 1]),
                                                          float(self.tails[k, 2]))

    def cut(self, W: int) -> Band:
        """The same tables on a narrower band."""
        W = max(1, min(W, self.width))
        return Band(n=self.n, K=self.K, width=W, work=[a[:, :W] for a in self.work], fwd=[a[:, :W] for a in self.fwd],
                    upd=[a[:, :W] for a in self.upd], overflow=[a[:, :W] for a in self.overflow],
                    comm=self.comm, hop=self.hop, measured=self.measured, masks=[a[:, :W] for a in self.masks],
                    tails=self.tails)

    def fits(self, k: int) -> np.ndarray:
        return self.overflow[k] <= 0


def width_for(profile: Profile, layout: Layout, scenario: Scenario, micro_batches: int, period: float) -> int:
    """Longest stage (in units) whose one-replica work can fit in ``period`` on the fastest device used,
    whichever of the layout's replica counts it has."""
    fastest = max(scenario.device(d).speed for d in layout.flat)
    longest = 1
    for D in sorted(set(layout.replicas)):
        pref = np.concatenate([[0.0], np.cumsum(max_plus.shard_work_ms(profile, micro_batches, D))])
        ends = np.searchsorted(pref, pref + period * fastest * (1 + 1e-9), side="right") - 1
        longest = max(longest, int(np.max(ends - np.arange(len(pref)))))
    return longest


def tables(
    profile: Profile, scenario: Scenario, layout: Layout, sched: SchedSpec, memory_limit: float | None,
    update_gb_s: float, optimizer_buffers: int, allreduce: str, width: int | None = None,
) -> Band:
    """The band tables of ``layout`` (stage k's replicas on ``layout.devices[k]``)."""
    n, K = profile.num_units, layout.stages
    W = n if width is None else max(1, min(width, n))
    units = profile.units
    M = sched.micro_batches
    idx = np.arange(n + 1)
    ends = idx[:, None] + 1 + np.arange(W)[None, :]
    valid = ends <= n
    endc = np.minimum(ends, n)

    def prefix(vals: Sequence[float]) -> np.ndarray:
        return np.concatenate([[0.0], np.cumsum(np.asarray(vals, dtype=np.float64))])

    def span(pref: np.ndarray, fill: float) -> np.ndarray:
        return np.where(valid, pref[endc] - pref[idx][:, None], fill)

    params = span(prefix([x.param_bytes for x in units]), 0.0)
    grads = span_buckets([x.param_bytes for x in units])  # [i, j, b]: bucket b of stage [i, j)
    ub = unit_bytes(profile)
    acts = span(prefix(ub.own), 0.0) + np.array([*ub.entry, 0])[idx][:, None]
    U = span(prefix(max_plus.unit_update_ms(profile, update_gb_s)), INF)
    msg = np.array(ub.message, dtype=np.float64)  # msg[u] = bytes crossing a cut at u
    unsaved = np.array(ub.unsaved_out, dtype=np.float64)
    measured = True
    work, fwd, upd, overflow = [], [], [], []
    shard_tables: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    flights = steady_flights(sched.name, K, M)
    samples = profile.batch_size // M
    extra_f, extra_b, extra_u = action_ms(scenario.overheads, layout.replicas, samples)  # the executor's, per action
    for k, devs in enumerate(layout.devices):
        D = len(devs)
        if D not in shard_tables:
            costs, ok = profile.shard_costs(M, D)
            measured = measured and ok
            shard_tables[D] = (span(prefix([M * f for f, _ in costs]), INF), span(prefix([M * b for _, b in costs]), INF))
        fs, bs = shard_tables[D]
        speed = min(scenario.device(d).speed for d in devs)  # replicas wait for the slowest at the all-reduce
        flight, versions = flights[k]
        msg_in = np.zeros_like(params) if k == 0 else np.broadcast_to(msg[idx][:, None], params.shape)
        msg_out, unsaved_out = (0.0, 0.0) if k == K - 1 else (msg[endc], unsaved[endc])
        share = shard_share(samples, D)  # the largest shard's share of a micro-batch (1/D when equal)
        buf = np.round(message_buffers(msg_in, msg_out, unsaved_out) * share / M)
        mem = params * (2 + optimizer_buffers + versions) + np.round(flight * acts * share) + buf
        limit = scenario.memory_limit(devs, memory_limit)
        overflow.append(np.where(valid, mem - limit, INF))
        # the CPU the bytes of its messages cost one F (and one B): in at the stage's start, out at its end
        by = bytes_ms(scenario.overheads, layout.replicas, k, msg[idx][:, None] / M, msg[endc] / M, samples)
        work.append((fs + bs) / speed + M * (extra_f[k] + extra_b[k] + 2 * by))
        fwd.append(fs / speed + M * (extra_f[k] + by))
        # zeros for one replica; past the last unit U is INF, so ``upd`` is too
        ar = update_allreduce_ms(scenario, devs, grads[idx[:, None], endc], allreduce, last=k == K - 1)
        upd.append(U / speed + ar + extra_u[k])
    comm, hop = [], []
    for k in range(K - 1):
        a_total, a_hop = _boundary(scenario, layout.devices[k], layout.devices[k + 1], msg / M, samples)
        g_total, g_hop = _boundary(scenario, layout.devices[k + 1], layout.devices[k], msg / M, samples)
        comm.append(a_total + g_total)
        hop.append(np.maximum(a_hop, g_hop))
    return Band(n=n, K=K, width=W, work=work, fwd=fwd, upd=upd, overflow=overflow, comm=comm, hop=hop,
                measured=measured, masks=_masks(K, n, W), tails=tail_ms(scenario.overheads, layout.replicas, samples))


def _boundary(scenario: Scenario, src: Sequence[str], dst: Sequence[str], message: np.ndarray,
              samples: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(slowest piece's route time, busiest link direction) of one round of a boundary's pieces,
    each a function of the message size (``message[u]`` bytes for the whole micro-batch of
    ``samples``; ``None``: equal shards)."""
    routes, load = max_plus.piece_loads(scenario, src, dst, samples)
    total = np.zeros_like(message)
    for route in routes:
        t = np.zeros_like(message)
        for h in route:
            lat, per = load[h]
            t = t + lat + message * per
        total = np.maximum(total, t)
    busiest = np.zeros_like(message)
    for lat, per in load.values():
        busiest = np.maximum(busiest, lat + message * per)
    return total, busiest


# ---------------------------------------------------------------- the DPs


def _diagonal_min(val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every end v: the least ``val[u, w]`` with ``u + 1 + w = v``, and that u (−1: none).

    A strided view does the shear without copying: with ``W`` rows of ``inf`` in front and an
    ``inf`` column after, ``val[v−1−w, w]`` sits at flat index ``(W+v−1)(W+1) − w·W``."""
    n1, W = val.shape
    padded = np.full((W + n1, W + 1), INF)
    padded[W:, :W] = val
    flat = padded.ravel()
    item = flat.itemsize
    sheared = np.lib.stride_tricks.as_strided(
        flat[(W - 1) * (W + 1):], shape=(n1, W), strides=((W + 1) * item, -W * item), writeable=False)
    w = np.argmin(sheared, axis=1)
    best = sheared[np.arange(n1), w]
    return best, np.where(best < INF, np.arange(n1) - 1 - w, -1)


def _masks(K: int, n: int, W: int) -> list[np.ndarray]:
    """Per stage: allowed (start, end) pairs on the band (every stage keeps ≥ 1 unit)."""
    idx = np.arange(n + 1)
    ends = idx[:, None] + 1 + np.arange(W)[None, :]
    out = []
    for starts, ends_ok in reach(K, n):
        out.append(starts[:, None] & np.where(ends <= n, ends_ok[np.minimum(ends, n)], False))
    return out


def _backtrack(back: Sequence[np.ndarray], n: int) -> list[int]:
    split, v = [], n
    for arg in reversed(back[1:]):
        v = int(arg[v])
        split.append(v)
    return sorted(split)


def feasible(schedule: str, T: Band, P: float) -> list[int] | None:
    """A split with closed-form period ≤ P that fits in memory, or None (exact on the band)."""
    K, n = T.K, T.n
    masks = T.masks
    cycle = get_schedule(schedule).closed_form
    if cycle is Cycle.ROUND_TRIP:  # bp
        # Backward over stages: V = suffix time from stage k's start; need V + u_k ≤ P.
        nxt = np.full(n + 1, INF)
        nxt[n] = 0.0
        idx = np.arange(n + 1)
        endc = np.minimum(idx[:, None] + 1 + np.arange(T.width)[None, :], n)
        rows: list[np.ndarray] = []
        for k in range(K - 1, -1, -1):
            tf, tb, tu = T.tail(k)
            # V: the longest trip from stage k's start, turning back at stage k (F→B after F's
            # tail) or past it (closed_form); the least V over the next cuts is still exact.
            tail = nxt + tf  # the last stage ends at unit n (nxt is 0 there, ∞ elsewhere)
            if k < K - 1:
                tail = np.where(T.hop[k] <= P, np.maximum(tf, nxt + T.comm[k]), INF)
            V = T.work[k] + tail[endc]
            ok = T.fits(k) & (V + T.upd[k] + tb + tu <= P) & masks[k]
            V = np.where(ok, V, INF)
            w = np.argmin(V, axis=1)
            nxt = V[idx, w]
            rows.append(idx + 1 + w)
        if not np.isfinite(nxt[0]):
            return None
        split, u = [], 0
        for k, end in enumerate(reversed(rows)):
            v = int(end[u])
            if k < K - 1:
                split.append(v)
            u = v
        return split
    prev = np.full(n + 1, INF)
    back: list[np.ndarray] = []
    for k in range(K):
        mask = T.fits(k) & masks[k]
        tf, tb, tu = T.tail(k)
        close = T.upd[k] + tb + tu  # a cycle closes on its first stage with B→U→F (closed_form)
        if k == 0:
            if cycle is Cycle.WINDOW_MEAN:  # ddg-pipelined
                S = T.work[k] - P + close
                val = np.where(mask & (S + tf <= 0), S, INF)
            else:  # ddg
                val = np.where(mask & (T.work[k] + close + tf <= P), T.fwd[k], INF)
        else:
            cut_ok = np.isfinite(prev) & (T.hop[k - 1] <= P)
            carry = np.where(cut_ok, prev + T.comm[k - 1], INF)[:, None]
            if cycle is Cycle.WINDOW_MEAN:
                S = T.work[k] - P + np.maximum(close, carry)
                val = np.where(mask & (S + tf <= 0), S, INF)  # a window turns on its last stage: F→B
            else:
                ok = mask & (T.work[k] + close + tf <= P) & (carry + T.work[k] + tf <= P)
                val = np.where(ok, T.fwd[k], INF)
        prev, arg = _diagonal_min(val)
        back.append(arg)
    if not np.isfinite(prev[n]):
        return None
    return _backtrack(back, n)


def min_overflow(T: Band) -> tuple[list[int], float]:
    """The split whose worst stage overflows memory the least (min-max DP on the full band, exact)."""
    found = minmax(T, T.overflow)
    assert found is not None  # every stage can hold one unit: some split exists
    return found


def minmax(T: Band, costs: Sequence[np.ndarray]) -> tuple[list[int], float] | None:
    """Exact min-max DP on the band: the split minimising max_k costs[k][u, w] (inf = not allowed)."""
    K, n = T.K, T.n
    masks = T.masks
    prev = np.full(n + 1, INF)
    prev[0] = -INF
    back: list[np.ndarray] = []
    for k in range(K):
        val = np.where(masks[k], np.maximum(prev[:, None], costs[k]), INF)
        prev, arg = _diagonal_min(val)
        back.append(arg)
    if not prev[n] < INF:
        return None
    return _backtrack(back, n), float(prev[n])


def stage_costs(T: Band, split: Sequence[int]) -> StageCosts:
    """The closed forms' per-stage figures of one split, read off the tables (S = 1)."""
    bounds = [0, *split, T.n]
    at = [(bounds[k], bounds[k + 1] - bounds[k] - 1) for k in range(T.K)]
    if any(w >= T.width for _, w in at):
        raise ValueError("a stage of this split is longer than the band")
    f = np.array([[T.fwd[k][u, w] for k, (u, w) in enumerate(at)]])
    work = np.array([[T.work[k][u, w] for k, (u, w) in enumerate(at)]])
    u_ = np.array([[T.upd[k][u, w] for k, (u, w) in enumerate(at)]])
    a = np.array([[T.comm[k][bounds[k + 1]] for k in range(T.K - 1)]]).reshape(1, T.K - 1)
    hops = [T.hop[k][bounds[k + 1]] for k in range(T.K - 1)]
    return StageCosts(f=f, b=work - f, u=u_, a=a, g=np.zeros_like(a), hop_max=np.array([max(hops, default=0.0)]),
                      tails=T.tails)


def period(schedule: str, T: Band, split: Sequence[int]) -> float:
    """Closed-form period of one split on these tables (what :func:`feasible` decides against)."""
    return float(closed_form_period(schedule, stage_costs(T, split))[0])
