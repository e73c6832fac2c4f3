"""SimPy discrete-event model of a schedule on a hardware scenario: :func:`simulate` and its result.

Each device is a ``simpy.Resource`` (capacity 1), each direction of each link another;
one process per stage runs its action list in order; every message is its own
process that crosses the hops of its route one after the other (store-and-forward),
holding each link direction while on it. Durations and message sizes are those of
:mod:`ddgsim.predict.max_plus` (see its docstring for the exact rules); the two models agree
exactly whenever each link direction carries one flow. The run is deterministic:
SimPy orders simultaneous events by insertion, and nothing here is random.

Replicas (``layout``, :mod:`ddgsim.replicas`): every replica of every stage is its own
process on its own device; every piece of a re-sharded (micro-)batch is its own message
over its route. The replicas of a stage sum their weight gradients bucket by bucket as the
executor does, each bucket's all-reduce overlapping the backward that completes the batch;
``U`` waits for the last (the exposed part shows as a ``cat="allreduce"`` interval on the
replica's row), then, on the last stage, an 8-byte all-reduce of the loss shares, then the
optimizer step (:mod:`ddgsim.predict.sim_allreduce` has the rules). The closed forms add the
all-reduces to ``U`` unhidden (an upper bound where the buckets overlap the backward).

The model's parts: :mod:`ddgsim.predict.sim_run` (one run: environment, events table,
trace), :mod:`ddgsim.predict.sim_processes` (stage and replica processes),
:mod:`ddgsim.predict.sim_links` (link directions), :mod:`ddgsim.predict.sim_allreduce`
(collectives), :mod:`ddgsim.predict.contention` (devices of one host slowing each other),
:mod:`ddgsim.predict.link_load` (per-link load).

Steady state: run N iterations (default 4K+8); for each stage take the mean spacing
of its batches' first-forward start times over the second half of the run; report the
largest (see :mod:`ddgsim.predict.max_plus` for why the slowest stage).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ddgsim.errors import UserError
from ddgsim.predict.closed_form import closed_form_period, stage_costs
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
from ddgsim.predict.scenario import Scenario
from ddgsim.predict.sim_processes import run_pipeline, run_replicas
from ddgsim.predict.splits import check_split, stage_ranges
from ddgsim.profile.format import Profile
from ddgsim.replicas import DEFAULT_ALLREDUCE, Layout, check_batch
from ddgsim.schedule import (
    Action,
    Schedule,
    ScheduleKind,
    Steady,
    get_schedule,
    resolve,
    staleness_of,
)
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
        run, events = run_replicas(schedule, costs, scenario)
    else:
        run, events = run_pipeline(schedule, costs)
    return run.timeline, run.executed, events


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
    schedule: Schedule | str = ScheduleKind.DDG,
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
    bp_ms = float(closed_form_period(ScheduleKind.BP, stage_costs(bp_costs))[0])
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
    bp_ms = float(closed_form_period(ScheduleKind.BP, stage_costs(costs))[0])
    delayed = get_schedule(schedule.name).delayed
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
