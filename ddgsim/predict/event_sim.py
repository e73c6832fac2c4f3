"""SimPy discrete-event model of a schedule on a hardware scenario.

Each device is a ``simpy.Resource`` (capacity 1), each direction of each link another;
one process per stage runs its action list in order; every message is its own
process that crosses the hops of its route one after the other (store-and-forward),
holding each link direction while on it. Durations and message sizes are those of
:mod:`ddgsim.predict.max_plus` (see its docstring for the exact rules); the two models agree
exactly whenever each link direction carries one flow. The run is deterministic:
SimPy orders simultaneous events by insertion, and nothing here is random.

Replicas (``layout``, :mod:`ddgsim.replicas`): every replica of every stage is its own
process on its own device; every piece of a re-sharded (micro-)batch is its own message
over its route. The replicas of a stage sum its weight gradients as the executor does
(:mod:`ddgsim.execute.buckets`): bucket by bucket (``Costs.grad_buckets``), each bucket's
all-reduce starting when the backward that completes the batch has computed its
gradients (its fraction of that backward, from the profile's per-unit backward times)
and every replica has reached it (a rendezvous, as a collective call), in bucket order;
``U`` waits for the last (the exposed part shows as a ``cat="allreduce"`` interval on the
replica's row), then, on the last stage, an 8-byte all-reduce of the loss shares, then
the optimizer step. Each all-reduce runs as the chunk transfers of the algorithm
(:mod:`ddgsim.predict.collective`) on the same link FIFOs as the pipeline messages —
ring: 2(D−1) steps, each replica sending one n/D chunk to its successor once its
previous step's chunk has arrived; tree: the pipelined binary tree, reduce to replica 0
then broadcast, in the chunk count ``tree_ms`` picks. Where the scenario has a measured
all-reduce for the stage's devices (``[[allreduce]]``, one host), that curve's time
replaces the chunk transfers, holding the ring's link directions from when they are all
free. The closed forms add the all-reduces to ``U`` unhidden (an upper bound where the
buckets overlap the backward).

Steady state: run N iterations (default 4K+8); for each stage take the mean spacing
of its batches' first-forward start times over the second half of the run; report the
largest (see :mod:`ddgsim.predict.max_plus` for why the slowest stage).
"""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import simpy

from ddgsim.errors import UserError
from ddgsim.predict.closed_form import closed_form_period, stage_costs
from ddgsim.predict.collective import after_gradients, ring_edges, tree_chunks
from ddgsim.predict.contention import CONTENTION_PASSES as CONTENTION_PASSES  # re-exported
from ddgsim.predict.contention import contention_factors as contention_factors  # re-exported
from ddgsim.predict.link_load import LinkStats as LinkStats  # re-exported
from ddgsim.predict.link_load import link_stats as link_stats  # re-exported
from ddgsim.predict.link_load import replicated_link_stats as replicated_link_stats  # re-exported
from ddgsim.predict.max_plus import (
    UPDATE_GB_S,
    Costs,
    costs_for_splits,
    default_iterations,
    min_iterations,
    single_device_ms,
    steady_period,
)
from ddgsim.predict.memory import SGD_MOMENTUM_BUFFERS, StageMemory, stage_memory
from ddgsim.predict.scenario import Hop, Scenario
from ddgsim.predict.splits import check_split, stage_ranges
from ddgsim.profile.format import Profile
from ddgsim.replicas import DEFAULT_ALLREDUCE, Layout, Piece, check_batch
from ddgsim.schedule import Action, Message, Schedule, Steady, resolve, staleness_of
from ddgsim.trace import TraceEvent


@dataclass(frozen=True, kw_only=True)
class SimResult:
    """What one simulation predicts; times are ms per iteration in steady state."""

    schedule: str
    """Schedule name."""
    scenario: str
    """Scenario name."""
    devices: tuple[str, ...]
    """Device of each stage."""
    split: tuple[int, ...]
    """Unit indices where stages 1..K-1 begin."""
    micro_batches: int
    """M (1 unless gpipe/1f1b)."""
    iterations: int
    """N, the simulated iterations."""
    batch_size: int
    """Samples per iteration (from the profile)."""
    iteration_ms: float
    """Steady-state period (see the module docstring)."""
    samples_per_s: float
    """batch_size / iteration time."""
    single_device_ms: float
    """Whole model (compute + update) on the scenario's fastest device."""
    speedup_vs_1_device: float
    """single_device_ms / iteration_ms."""
    bp_iteration_ms: float
    """Same split and devices under ``bp``."""
    speedup_vs_bp: float
    """bp_iteration_ms / iteration_ms."""
    busy_ms: tuple[float, ...]
    """Per iteration on each stage: compute (F + B + U) and the stage's all-reduce."""
    idle_ms: tuple[float, ...]
    """iteration_ms − busy_ms per stage."""
    bubble_fraction: tuple[float, ...]
    """idle_ms / iteration_ms per stage."""
    links: tuple[LinkStats, ...]
    """Every link direction that carries traffic."""
    staleness: tuple[int, ...]
    """Observed steady-state staleness per stage (U's between F and U of the last batch)."""
    memory: tuple[StageMemory, ...]
    """Peak-memory breakdown per stage."""
    memory_fits: tuple[bool, ...]
    """Peak memory ≤ the device's memory, per stage."""
    analytic_exact: bool
    """True when no link direction carries two flows: :mod:`ddgsim.predict.max_plus` then gives exactly this period."""
    events: int
    """SimPy events processed."""
    wall_s: float
    """Wall time of the SimPy run."""
    replicas: tuple[int, ...] = ()
    """D_k, the replicas of every stage (all 1 without a layout)."""
    layout: tuple[tuple[str, ...], ...] = ()
    """Device of every replica of every stage (``devices`` is replica 0's)."""
    allreduce: str = DEFAULT_ALLREDUCE
    """All-reduce algorithm among a stage's replicas."""
    allreduce_ms: tuple[float, ...] = ()
    """Per stage: the all-reduce before every ``U`` (closed form; 0 with one replica)."""
    notes: tuple[str, ...] = ()
    """Where a cost is an estimate (e.g. shard costs scaled from the batch), one line each."""
    timeline: list[TraceEvent] = field(repr=False, default_factory=list)
    """Every compute action and every hop of every message, in ms."""

    @property
    def peak_memory_bytes(self) -> list[int]:
        return [m.total for m in self.memory]

    def summary(self) -> dict[str, Any]:
        """JSON-ready dict (no timeline)."""
        return {
            "schedule": self.schedule, "scenario": self.scenario, "devices": list(self.devices),
            "split": list(self.split), "micro_batches": self.micro_batches,
            "iterations": self.iterations, "batch_size": self.batch_size,
            "iteration_ms": self.iteration_ms, "samples_per_s": self.samples_per_s,
            "single_device_ms": self.single_device_ms, "speedup_vs_1_device": self.speedup_vs_1_device,
            "bp_iteration_ms": self.bp_iteration_ms, "speedup_vs_bp": self.speedup_vs_bp,
            "busy_ms": list(self.busy_ms), "idle_ms": list(self.idle_ms),
            "bubble_fraction": list(self.bubble_fraction), "staleness": list(self.staleness),
            "peak_memory_bytes": self.peak_memory_bytes,
            "memory": [dict(m.__dict__, total=m.total) for m in self.memory],
            "memory_fits": list(self.memory_fits),
            "links": [dict(link.__dict__) for link in self.links],
            "analytic_exact": self.analytic_exact, "events": self.events,
            "replicas": list(self.replicas), "layout": [list(row) for row in self.layout],
            "allreduce": self.allreduce, "allreduce_ms": list(self.allreduce_ms), "notes": list(self.notes),
        }


def _run_to_end(env: simpy.Environment) -> int:
    """Step until nothing is scheduled; the number of events processed."""
    events = 0
    while True:
        try:
            env.step()
        except simpy.core.EmptySchedule:
            return events
        events += 1


def run_schedule(schedule: Schedule, costs: Costs,
                 scenario: Scenario | None = None) -> tuple[list[TraceEvent], list[list[Action]], int]:
    """Run the action lists in SimPy; return (timeline, executed order per stage, events).

    With replicas (``costs.layout``) every replica runs (``scenario`` is then needed for the
    pieces' routes and the all-reduce); the executed order is replica 0's.
    """
    if costs.forward_ms.shape[0] != 1:
        raise ValueError("run_schedule() takes the costs of one split")
    if max(costs.replicas) > 1:
        if scenario is None:
            raise ValueError("run_schedule() needs the scenario to run replicas")
        return _run_replicated(schedule, costs, scenario)
    K = schedule.stages
    env = simpy.Environment()
    device = [simpy.Resource(env, capacity=1) for _ in range(K)]
    hops = {h for r in costs.act_hops + costs.grad_hops for h in r}
    link = {h: simpy.Resource(env, capacity=1) for h in sorted(hops)}
    arrived: dict[Message, simpy.Event] = {}
    timeline: list[TraceEvent] = []
    executed: list[list[Action]] = [[] for _ in range(K)]
    f = costs.forward_ms[0].tolist()
    b = costs.backward_ms[0].tolist()
    u = costs.update_ms[0].tolist()
    assert costs.tail_ms is not None
    tails = [dict(zip("FBU", costs.tail_ms[k].tolist(), strict=True)) for k in range(K)]
    routes = {"act": costs.act_hops, "grad": costs.grad_hops}
    hop_ms = {"act": [costs.act_hop_ms[0, k].tolist() for k in range(K - 1)],
              "grad": [costs.grad_hop_ms[0, k].tolist() for k in range(K - 1)]}

    def message(msg: Message) -> simpy.Event:
        if msg not in arrived:
            arrived[msg] = env.event()
        return arrived[msg]

    def transfer(msg: Message, name: str) -> Generator[simpy.Event, Any, None]:
        route = routes[msg.kind][msg.boundary]
        for hop, ms in zip(route, hop_ms[msg.kind][msg.boundary][: len(route)], strict=True):
            with link[hop].request() as req:
                yield req
                start = env.now
                yield env.timeout(ms)
                timeline.append(TraceEvent(row=f"{hop[0]}->{hop[1]}", name=name, start_ms=start, end_ms=env.now, cat="link"))
        message(msg).succeed()

    def stage(k: int) -> Generator[simpy.Event, Any, None]:
        dev = costs.devices[k]
        for a in schedule.actions[k]:
            start = env.now
            waits = [message(msg) for msg in schedule.needs(a)]
            if len(waits) == 1:
                yield waits[0]
            elif waits:
                yield simpy.AllOf(env, waits)
            if a.kind == "W":  # blocks the stage, not the device; shown as a wait interval
                executed[k].append(a)
                timeline.append(TraceEvent(row=dev, name=repr(a), start_ms=start, end_ms=env.now, cat="W"))
                continue
            ms = {"F": f[k], "B": b[k], "U": u[k]}[a.kind]
            with device[k].request() as req:
                yield req
                start = env.now
                yield env.timeout(ms)
                executed[k].append(a)
                timeline.append(TraceEvent(row=dev, name=repr(a), start_ms=start, end_ms=env.now, cat=a.kind))
                sent = schedule.sends(a)
                if sent is not None:
                    env.process(transfer(sent, f"{'act' if sent.kind == 'act' else 'grad'} {a!r}"))
                if tails[k][a.kind]:  # the action's tail: after its message left, before the next action
                    yield env.timeout(tails[k][a.kind])

    procs = [env.process(stage(k)) for k in range(K)]
    events = _run_to_end(env)
    stuck = [k for k, p in enumerate(procs) if p.is_alive]
    if stuck:
        raise ValueError(f"schedule '{schedule.name}' deadlocked on stage(s) {stuck}; validate() it")
    return timeline, executed, events


def _run_replicated(schedule: Schedule, costs: Costs,
                    scenario: Scenario) -> tuple[list[TraceEvent], list[list[Action]], int]:
    K = schedule.stages
    assert costs.layout is not None and costs.micro_bytes is not None and costs.allreduce_ms is not None
    rows = costs.layout.devices
    D = costs.replicas
    env = simpy.Environment()
    arrived: dict[object, simpy.Event] = {}
    timeline: list[TraceEvent] = []
    executed: list[list[Action]] = [[] for _ in range(K)]
    record = timeline.append

    def route_ms(src: str, dst: str, nbytes: float) -> list[tuple[Hop, float]]:
        return [(h, scenario.link(h).hop_ms(nbytes)) for h in scenario.route(src, dst)]

    # Per boundary: pieces, and per piece the act route (k -> k+1) and the grad route back.
    bpieces: list[list[Piece]] = []
    act: list[list[list[tuple[Hop, float]]]] = []
    grad: list[list[list[tuple[Hop, float]]]] = []
    for k in range(K - 1):
        span = costs.boundary_span(k)
        ps = costs.boundary_pieces(k)
        whole = float(costs.micro_bytes[0, k])
        bpieces.append(ps)
        act.append([route_ms(rows[k][p.src], rows[k + 1][p.dst], whole * (p.hi - p.lo) / span) for p in ps])
        grad.append([route_ms(rows[k + 1][p.dst], rows[k][p.src], whole * (p.hi - p.lo) / span) for p in ps])
    # Pieces a replica receives / sends, per boundary: (index, piece).
    act_in = [[[i for i, p in enumerate(bpieces[k - 1]) if p.dst == r] if k > 0 else [] for r in range(D[k])]
              for k in range(K)]
    act_out = [[[i for i, p in enumerate(bpieces[k]) if p.src == r] if k < K - 1 else [] for r in range(D[k])]
               for k in range(K)]

    def event(key: object) -> simpy.Event:
        ev = arrived.get(key)
        if ev is None:
            ev = arrived[key] = env.event()
        return ev

    # A link direction is a FIFO server: a transfer that reaches it at ``now`` starts when the
    # transfers queued before it are done. Events are processed in time order, so every
    # earlier arrival is already queued: start = max(now, end of the last one). No processes.
    free: dict[Hop, float] = {}

    def send(hops: list[tuple[Hop, float]], done: simpy.Event, name: str, i: int = 0) -> None:
        if i == len(hops):
            done.succeed()
            return
        hop, ms = hops[i]
        now = env.now
        start = max(now, free.get(hop, 0.0))
        end = free[hop] = start + ms
        record(TraceEvent(row=f"{hop[0]}->{hop[1]}", name=name, start_ms=start, end_ms=end, cat="link"))
        env.timeout(end - now).callbacks.append(lambda _: send(hops, done, name, i + 1))

    assert costs.allreduce_bytes is not None
    # Per stage: the gradients' buckets, each started during the backward that completes a batch
    # when its gradients are computed (fraction of that backward, bytes; one bucket at its end
    # when the costs have none), then before the update, on the last stage, the loss shares.
    buckets = [(list(costs.grad_buckets[k]) if costs.grad_buckets is not None else
                [(1.0, float(costs.allreduce_bytes[0, k]))]) if D[k] > 1 else [] for k in range(K)]
    messages = [[b for _, b in buckets[k]] + (list(after_gradients(k == K - 1)) if D[k] > 1 else [])
                for k in range(K)]
    completing = [{a.batch: i for i, a in enumerate(schedule.actions[k]) if a.kind == "B"} for k in range(K)]
    chunks = {(k, j): tree_chunks(scenario, rows[k], nb) if costs.allreduce == "tree" else 1
              for k in range(K) for j, nb in enumerate(messages[k])}
    curves = [scenario.measured_allreduce(rows[k]) for k in range(K)]

    def collective(k: int, r: int, t: int, j: int) -> Generator[simpy.Event, Any, None]:
        # The collective starts once every replica has called it (a rendezvous).
        here = ready[(k, t, j)] = ready.get((k, t, j), 0) + 1
        if here == D[k]:
            event(("ready", k, t, j)).succeed()
        yield event(("ready", k, t, j))
        tag, nbytes = (k, t, j), messages[k][j]
        if curves[k] is not None:
            yield from measured(k, r, tag, nbytes)
        elif costs.allreduce == "ring":
            yield from ring(k, r, tag, nbytes)
        else:
            yield from tree(k, r, tag, nbytes, chunks[(k, j)])

    def grad_buckets(k: int, r: int, t: int, start: float, dur: float) -> Generator[simpy.Event, Any, None]:
        for j, (frac, _) in enumerate(buckets[k]):  # in index order, each when its gradients exist
            at = start + frac * dur
            if at > env.now:
                yield env.timeout(at - env.now)
            yield from collective(k, r, t, j)
        event(("grads", k, r, t)).succeed()

    def measured(k: int, r: int, tag: tuple[int, int, int], nbytes: float) -> Generator[simpy.Event, Any, None]:
        # A measured curve (one host): the ring's link directions are held for its whole time,
        # from when they are all free; replica 0 books them, the others wait for the end.
        if r == 0:
            curve = curves[k]
            assert curve is not None
            hops = [h for a, b in ring_edges(rows[k]) for h in scenario.route(a, b)]
            start = max([env.now, *(free.get(h, 0.0) for h in hops)])
            end = start + float(curve.time_ms(nbytes))
            for h in hops:
                free[h] = end
                record(TraceEvent(row=f"{h[0]}->{h[1]}", name=f"ar {k}U{tag[1]} (measured)", start_ms=start,
                                  end_ms=end, cat="link"))
            done = event(("measured", tag))

            def finish(_: simpy.Event) -> None:
                done.succeed()

            env.timeout(end - env.now).callbacks.append(finish)
        yield event(("measured", tag))

    def ring(k: int, r: int, tag: tuple[int, int, int], nbytes: float) -> Generator[simpy.Event, Any, None]:
        n = D[k]
        nxt = (r + 1) % n
        hops = route_ms(rows[k][r], rows[k][nxt], nbytes / n)
        for step in range(2 * (n - 1)):
            if step:
                yield event(("ring", tag, r, step - 1))
            sent = event(("ring", tag, nxt, step))
            send(hops, sent, f"ar {k}U{tag[1]} step {step}")
            yield sent
        yield event(("ring", tag, r, 2 * (n - 1) - 1))

    def tree(k: int, r: int, tag: tuple[int, int, int], nbytes: float,
             c: int) -> Generator[simpy.Event, Any, None]:
        n, t = D[k], tag[1]
        kids = [x for x in (2 * r + 1, 2 * r + 2) if x < n]
        size = nbytes / c
        up = route_ms(rows[k][r], rows[k][(r - 1) // 2], size) if r else []
        for j in range(c):  # reduce: chunk j goes up once every child's chunk j has arrived
            for x in kids:
                yield event(("up", tag, x, j))
            if r:
                sent = event(("up", tag, r, j))
                send(up, sent, f"ar {k}U{t} reduce {j}")
                yield sent
        senders = [env.process(down(k, r, x, tag, c, size)) for x in kids]
        if r:
            yield event(("down", tag, r, c - 1))
        if senders:
            yield simpy.AllOf(env, senders)

    def down(k: int, r: int, x: int, tag: tuple[int, int, int], c: int,
             size: float) -> Generator[simpy.Event, Any, None]:
        hops = route_ms(rows[k][r], rows[k][x], size)
        for j in range(c):  # broadcast: forward chunk j to child x once it is here
            if r:
                yield event(("down", tag, r, j))
            sent = event(("down", tag, x, j))
            send(hops, sent, f"ar {k}U{tag[1]} broadcast {j}")
            yield sent

    ready: dict[tuple[int, int, int], int] = {}

    # Per stage, once: each action's needed messages and the message it sends.
    plan = [[(a, schedule.needs(a), schedule.sends(a)) for a in schedule.actions[k]] for k in range(K)]

    def stage(k: int, r: int) -> Generator[simpy.Event, Any, None]:
        dev = rows[k][r]
        scale = scenario.device(rows[k][0]).speed / scenario.device(dev).speed
        dur = {"F": float(costs.forward_ms[0, k]) * scale, "B": float(costs.backward_ms[0, k]) * scale,
               "U": float(costs.update_ms[0, k]) * scale}
        assert costs.tail_ms is not None
        tail = dict(zip("FBU", costs.tail_ms[k].tolist(), strict=True))
        inbound, outbound = act_in[k][r], act_out[k][r]
        for i, (a, needs, sent) in enumerate(plan[k]):
            start = env.now
            waits = []
            for msg in needs:
                waits += [event((msg, i)) for i in (inbound if msg.kind == "act" else outbound)]
            if len(waits) == 1:
                yield waits[0]
            elif waits:
                yield simpy.AllOf(env, waits)
            if a.kind == "W":
                if r == 0:
                    executed[k].append(a)
                record(TraceEvent(row=dev, name=repr(a), start_ms=start, end_ms=env.now, cat="W"))
                continue
            if a.kind == "U" and D[k] > 1:
                start = env.now  # what is left of the gradients' all-reduces, then the loss's
                yield event(("grads", k, r, a.batch))
                for j in range(len(buckets[k]), len(messages[k])):
                    yield from collective(k, r, a.batch, j)
                record(TraceEvent(row=dev, name=f"allreduce {a!r}", start_ms=start, end_ms=env.now, cat="allreduce"))
            start = env.now
            if a.kind == "B" and D[k] > 1 and completing[k][a.batch] == i:
                env.process(grad_buckets(k, r, a.batch, start, dur["B"]))
            yield env.timeout(dur[a.kind])
            if r == 0:
                executed[k].append(a)
            record(TraceEvent(row=dev, name=repr(a), start_ms=start, end_ms=env.now, cat=a.kind))
            if sent is not None:
                b = sent.boundary
                if sent.kind == "act":
                    for i in outbound:
                        send(act[b][i], event((sent, i)), f"act {a!r}")
                else:
                    for i in inbound:
                        send(grad[b][i], event((sent, i)), f"grad {a!r}")
            if tail[a.kind]:  # the action's tail: after its messages left, before the next action
                yield env.timeout(tail[a.kind])

    procs = [env.process(stage(k, r)) for k in range(K) for r in range(D[k])]
    events = _run_to_end(env)
    stuck = sorted({k for k in range(K) for r in range(D[k]) if procs[sum(D[:k]) + r].is_alive})
    if stuck:
        raise ValueError(f"schedule '{schedule.name}' deadlocked on stage(s) {stuck}; validate() it")
    return timeline, executed, events


def _overlapped(costs: Costs) -> bool:
    """Whether a gradient bucket starts before its backward ends (the closed forms then over-count)."""
    return costs.grad_buckets is not None and any(f < 1.0 for stage in costs.grad_buckets for f, _ in stage)


def first_forward_starts(timeline: Sequence[TraceEvent], device: str, iterations: int) -> list[float]:
    """Start time of the first forward of each batch on ``device``."""
    return all_first_forward_starts(timeline, [device], iterations)[0]


def all_first_forward_starts(timeline: Sequence[TraceEvent], devices: Sequence[str],
                             iterations: int) -> list[list[float]]:
    """:func:`first_forward_starts` of every device in ``devices``, in one pass over the timeline."""
    first: dict[str, dict[int, float]] = {d: {} for d in devices}
    for e in timeline:
        if e.cat == "F":
            row = first.get(e.row)
            if row is not None:
                t = Action.from_str(e.name).batch
                row[t] = min(row.get(t, e.start_ms), e.start_ms)
    return [[first[d][t] for t in range(iterations)] for d in devices]


def simulate(
    profile: Profile,
    split: Sequence[int],
    scenario: Scenario,
    schedule: Schedule | str = "ddg",
    *,
    iterations: int | None = None,
    micro_batches: int = 1,
    devices: Sequence[str] | None = None,
    optimizer_buffers: int = SGD_MOMENTUM_BUFFERS,
    update_gb_s: float = UPDATE_GB_S,
    layout: Layout | None = None,
    allreduce: str = DEFAULT_ALLREDUCE,
) -> SimResult:
    """Simulate ``schedule`` for ``split`` on ``scenario`` and collect the predictions.

    ``schedule`` is a :class:`Schedule` (its iterations and micro-batches are used) or a
    name, built here with ``iterations`` (default 4K+8) and ``micro_batches``. ``layout``
    (exclusive with ``devices``) runs D_k replicas of stage k, with ``allreduce`` among them.
    """
    split = check_split(split, profile.num_units)
    K = len(split) + 1
    if not isinstance(schedule, str):
        iterations, micro_batches = schedule.iterations, schedule.micro_batches
    n = default_iterations(K) if iterations is None else iterations
    if n < min_iterations(K):
        raise UserError(f"iterations must be >= {min_iterations(K)} for K = {K} stages (2K+2), got {n}")
    sched = resolve(schedule, K, n, micro_batches)
    if layout is not None:
        check_batch(profile.batch_size, micro_batches, layout.replicas)

    def cost(sc: Scenario, m: int) -> Costs:
        return costs_for_splits(profile, [split], sc, devices, m, update_gb_s, layout=layout, allreduce=allreduce)

    costs = cost(scenario, micro_batches)
    assert costs.layout is not None
    lay = costs.layout
    every = lay.flat
    t0 = time.perf_counter()
    timeline, executed, events = run_schedule(sched, costs, scenario)
    slowed = scenario
    for _ in range(CONTENTION_PASSES):
        factors = contention_factors(timeline, every, scenario)
        if factors is None:
            break
        # Run again with each device slowed by the share of its compute that overlapped
        # another device of its host's in the previous pass (a fixed-point iteration).
        slowed = replace(scenario, devices=tuple(
            replace(d, speed=d.speed / factors.get(d.name, 1.0)) for d in scenario.devices))
        costs = cost(slowed, micro_batches)
        timeline, executed, events = run_schedule(sched, costs, slowed)
    wall = time.perf_counter() - t0
    starts = np.array(all_first_forward_starts(timeline, every, n))
    period = float(steady_period(starts))
    bp_costs = costs if micro_batches == 1 else cost(slowed, 1)
    # bp's closed form (the recursion's limit): the recursion needs the whole execution order,
    # seconds for a 32-stage, 64-replica layout.
    bp_ms = float(closed_form_period("bp", stage_costs(bp_costs))[0])
    stale = []
    for k in range(K):
        seen = staleness_of(executed[k])
        stale.append(seen[max(seen)] if seen else 0)
    replicated = max(costs.replicas) > 1
    return _result(
        profile, split, scenario, sched, costs, period=period, bp_ms=bp_ms, staleness=stale,
        optimizer_buffers=optimizer_buffers, update_gb_s=update_gb_s, iterations=n,
        links=replicated_link_stats(costs, scenario) if replicated else link_stats(costs),
        analytic_exact=not costs.shared_links(scenario) and not _overlapped(costs), events=events, wall_s=wall,
        notes=costs.notes,
        timeline=timeline,
    )


def closed_form_result(
    profile: Profile, split: Sequence[int], scenario: Scenario, schedule: Schedule, layout: Layout,
    allreduce: str, reason: str, *, optimizer_buffers: int = SGD_MOMENTUM_BUFFERS,
    update_gb_s: float = UPDATE_GB_S,
) -> SimResult:
    """What :func:`simulate` reports, from the closed form instead of a SimPy run (``ddg``,
    ``ddg-pipelined``, ``bp`` with one micro-batch): for layouts too large to simulate in time.
    Staleness and memory are the steady state's; ``reason`` is added to the notes."""
    split = check_split(split, profile.num_units)
    K = len(split) + 1
    costs = costs_for_splits(profile, [split], scenario, None, schedule.micro_batches, update_gb_s,
                             layout=layout, allreduce=allreduce)
    period = float(closed_form_period(schedule.name, stage_costs(costs))[0])
    bp_ms = float(closed_form_period("bp", stage_costs(costs))[0])
    delayed = schedule.name in ("ddg", "ddg-pipelined")
    return _result(
        profile, split, scenario, Steady(schedule.name, schedule.micro_batches), costs, period=period, bp_ms=bp_ms,
        staleness=[K - 1 - k if delayed else 0 for k in range(K)], optimizer_buffers=optimizer_buffers,
        update_gb_s=update_gb_s, iterations=0, links=(), analytic_exact=False, events=0, wall_s=0.0,
        notes=(*costs.notes, reason), timeline=[],
    )


def _result(
    profile: Profile, split: Sequence[int], scenario: Scenario, sched: Schedule | Steady, costs: Costs, *,
    period: float, bp_ms: float, staleness: Sequence[int], optimizer_buffers: int, update_gb_s: float,
    iterations: int, links: tuple[LinkStats, ...], analytic_exact: bool, events: int, wall_s: float,
    notes: tuple[str, ...], timeline: list[TraceEvent],
) -> SimResult:
    """The figures every prediction reports, from a period and the costs it came from."""
    lay = costs.layout
    assert lay is not None and costs.allreduce_ms is not None
    single = single_device_ms(profile, max(d.speed for d in scenario.devices), update_gb_s, scenario.overheads)
    busy = costs.busy_ms()[0].tolist()
    mem = stage_memory(profile, stage_ranges(split, profile.num_units), sched, optimizer_buffers,
                       replicas=costs.replicas)
    fits = tuple(all(m.total <= scenario.device(d).memory_bytes for d in row)
                 for m, row in zip(mem, lay.devices, strict=True))
    return SimResult(
        schedule=sched.name, scenario=scenario.name, devices=costs.devices, split=tuple(split),
        micro_batches=sched.micro_batches, iterations=iterations, batch_size=profile.batch_size,
        iteration_ms=period, samples_per_s=profile.batch_size * 1e3 / period if period > 0 else float("inf"),
        single_device_ms=single, speedup_vs_1_device=single / period if period > 0 else float("inf"),
        bp_iteration_ms=bp_ms, speedup_vs_bp=bp_ms / period if period > 0 else float("inf"),
        busy_ms=tuple(busy), idle_ms=tuple(period - x for x in busy),
        bubble_fraction=tuple((period - x) / period if period > 0 else 0.0 for x in busy),
        links=links, staleness=tuple(staleness), memory=tuple(mem), memory_fits=fits,
        analytic_exact=analytic_exact, events=events, wall_s=wall_s,
        replicas=costs.replicas, layout=lay.devices, allreduce=costs.allreduce,
        allreduce_ms=tuple(float(x) for x in costs.allreduce_ms[0]), notes=notes, timeline=timeline,
    )
