"""From a profile and a scenario to a plan: search every K, price the baselines, confirm in SimPy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ddgsim.plan import search as planner
from ddgsim.plan.format import Plan
from ddgsim.plan.records import Prediction, ProfileRef
from ddgsim.plan.split import even_split, parameter_balanced_split
from ddgsim.predict.closed_form import CLOSED_FORM
from ddgsim.predict.event_sim import SimResult, closed_form_result, simulate
from ddgsim.predict.max_plus import default_iterations
from ddgsim.predict.scenario import Scenario
from ddgsim.profile.format import Profile
from ddgsim.replicas import DEFAULT_ALLREDUCE, Layout
from ddgsim.schedule import Schedule, make_schedule


@dataclass(frozen=True, kw_only=True)
class Option:
    """One split of one schedule, confirmed by the SimPy model."""

    label: str
    """``planned``, ``even`` (the authors' rule) or ``parameters`` (DeepSpeed's balance)."""
    schedule: str
    split: list[int]
    devices: tuple[str, ...]
    analytic_ms: float
    """The search's prediction (closed form / recursion)."""
    sim: SimResult
    """The SimPy model's run of the same split."""
    fits: bool
    layout: Layout | None = None
    """Replicated stages: the devices of every replica (``devices`` is its flat list)."""

    @property
    def iteration_ms(self) -> float:
        return self.sim.iteration_ms


@dataclass(frozen=True, kw_only=True)
class KResult:
    """The planned split and the baselines for one number of stages."""

    stages: int
    schedule: str
    planned: Option | None
    baselines: list[Option]
    overflow: planner.MemoryOverflow | None
    exact: bool
    notes: list[str] = field(default_factory=list)
    allreduce: str = DEFAULT_ALLREDUCE


SIM_EVENT_BUDGET = 60_000
"""Confirm a split in SimPy only when its run is estimated below this many transfers and actions
(about two SimPy events each, some 60 k transfers a second on a 2-core VM: 294 k of them, resnet20
on 64 replicas with its three all-reduces per iteration, took 5 s; 83 k, a 64-device layout with a
stage of 26 replicas, 1.4 s), so that a plan stays within a second or two of simulation; larger
layouts keep the closed form's figures, and say so."""


def simulation_size(layout: Layout, micro_batches: int, iterations: int,
                    collectives: Sequence[int] | None = None) -> int:
    """Rough count of SimPy actions and transfers of one run (compute, pieces, ring chunks):
    ``collectives[k]`` all-reduces per iteration on stage k (its gradient buckets and the loss;
    one each where not given), each a ring of 2(D−1) steps on every replica."""
    counts = collectives if collectives is not None else [1] * layout.stages
    per = sum(D * 5 * micro_batches + c * 2 * D * (D - 1) for D, c in zip(layout.replicas, counts, strict=True))
    return per * iterations


def collectives_per_stage(profile: Profile, split: Sequence[int], layout: Layout) -> list[int]:
    """All-reduces a replicated stage runs per iteration, as the simulator runs them: one per
    gradient bucket (:func:`ddgsim.replicas.bucket_ready`), and the loss's on the last stage."""
    from ddgsim.predict.collective import after_gradients
    from ddgsim.replicas import bucket_ready

    bounds = [0, *split, profile.num_units]
    out = []
    for k, D in enumerate(layout.replicas):
        units = profile.units[bounds[k]:bounds[k + 1]]
        out.append(len(bucket_ready([float(u.param_bytes) for u in units], [u.backward_ms for u in units]))
                   + len(after_gradients(k == layout.stages - 1)) if D > 1 else 0)
    return out


def _option(
    label: str, profile: Profile, scenario: Scenario, schedule: Schedule, split: Sequence[int],
    layout: Layout, memory_limit_bytes: float | None, analytic_ms: float | None = None,
    allreduce: str = DEFAULT_ALLREDUCE,
) -> Option:
    """Simulate one split; it fits if every stage is within its device's memory (or the limit)."""
    replicated = layout.world_size > layout.stages
    size = simulation_size(layout, schedule.micro_batches, schedule.iterations,
                           collectives_per_stage(profile, split, layout))
    if size > SIM_EVENT_BUDGET and schedule.name in CLOSED_FORM and schedule.micro_batches == 1:
        sim = closed_form_result(profile, split, scenario, schedule, layout, allreduce,
                              f"not simulated: a SimPy run of {layout.world_size} processes would take ~{size:,} "
                              f"steps (budget {SIM_EVENT_BUDGET:,}); the figures are the closed form's")
    elif replicated:
        sim = simulate(profile, list(split), scenario, schedule, layout=layout, allreduce=allreduce)
    else:
        sim = simulate(profile, list(split), scenario, schedule, devices=layout.flat)
    ms = analytic_ms if analytic_ms is not None else planner.evaluate(
        profile, split, scenario, schedule, layout=layout, allreduce=allreduce)
    fits = (all(sim.memory_fits) if memory_limit_bytes is None
            else all(m.total <= memory_limit_bytes for m in sim.memory))
    return Option(label=label, schedule=schedule.name, split=list(split), devices=tuple(layout.flat),
                  analytic_ms=ms, sim=sim, fits=fits, layout=layout if replicated else None)


def plan_for_k(
    profile: Profile, scenario: Scenario, schedule: str, stages: int, *,
    micro_batches: int = 1, memory_limit_bytes: float | None = None,
    layout: Layout | None = None, allreduce: str = DEFAULT_ALLREDUCE, baselines: bool = True,
    searched: planner.Candidate | None = None,
) -> KResult:
    """Search the best split for ``stages`` stages (on ``layout``'s replicas when given) and price
    the two usual baselines on the same devices (``baselines=False``: the planned split only).
    ``searched``: that search's result, already found (the layout search's), not searched again."""
    sched = make_schedule(schedule, stages, default_iterations(stages), micro_batches)  # the one build
    if searched is not None:
        if searched.stages != stages or (layout is not None and searched.layout != layout):
            raise ValueError("the searched candidate is not of these stages and layout")
        res = planner.SearchResult(best=searched, mappings_tried=1)
    else:
        res = planner.search(profile, scenario, sched, stages, memory_limit_bytes=memory_limit_bytes,
                             layout=layout, allreduce=allreduce)
    planned = None
    found = res.best if res.best is not None else res.overflow
    assert found is not None
    lay = found.layout if found.layout is not None else Layout.pipeline(found.devices)
    if res.best is not None:
        planned = _option("planned", profile, scenario, sched, res.best.split, lay,
                          memory_limit_bytes, res.best.iteration_ms, allreduce)
    priced = []
    n = profile.num_units
    for label, split in (("even", even_split(n, stages)),
                         ("parameters", parameter_balanced_split(profile, stages))) if baselines else ():
        priced.append(_option(label, profile, scenario, sched, split, lay, memory_limit_bytes,
                              allreduce=allreduce))
    exact = res.best.exact if res.best is not None else True
    return KResult(stages=stages, schedule=schedule, planned=planned, baselines=priced,
                   overflow=res.overflow, exact=exact and res.mapping_exact, notes=res.notes, allreduce=allreduce)


def choose(results: Sequence[KResult]) -> KResult | None:
    """The fastest planned option; ties (within 1e-9) go to fewer stages."""
    best: KResult | None = None
    for r in results:
        if r.planned is None:
            continue
        if best is None or best.planned is None or r.planned.iteration_ms < best.planned.iteration_ms * (1 - 1e-9):
            best = r
    return best


def plan_from_prediction(
    profile: Profile, profile_ref: ProfileRef | None, scenario_ref: str, schedule: str, split: Sequence[int],
    sim: SimResult, *, micro_batches: int = 1, analytic_ms: float | None = None,
    extra: dict[str, Any] | None = None, layout: Layout | None = None, allreduce: str = DEFAULT_ALLREDUCE,
) -> Plan:
    """The ``ddgsim-plan/1`` object of one split whose run the simulator predicted (the one builder:
    ``plan`` and ``validate`` both write their plans with it)."""
    return Plan.for_split(
        model=profile.model, split=split, num_units=profile.num_units, schedule=schedule,
        batch_size=profile.batch_size, micro_batches=micro_batches, devices=sim.devices,
        unit_names=[u.name for u in profile.units], scenario=scenario_ref, profile_ref=profile_ref,
        predicted=Prediction.of(sim, analytic_ms), extra=dict(extra or {}), layout=layout, allreduce=allreduce,
    )


def to_plan(
    r: KResult, profile: Profile, profile_ref: ProfileRef | None, scenario_ref: str,
    micro_batches: int = 1, extra: dict[str, Any] | None = None,
) -> Plan:
    """The ``ddgsim-plan/1`` object of a KResult's planned option."""
    assert r.planned is not None
    opt = r.planned
    baselines = {
        b.label: {"split": b.split, "iteration_ms": b.iteration_ms, "fits": b.fits,
                  "gap_pct": 100.0 * (b.iteration_ms / opt.sim.iteration_ms - 1.0)}
        for b in r.baselines
    }
    return plan_from_prediction(
        profile, profile_ref, scenario_ref, r.schedule, opt.split, opt.sim, micro_batches=micro_batches,
        analytic_ms=opt.analytic_ms, extra={"baselines": baselines, "search_exact": r.exact, **(extra or {})},
        layout=opt.layout, allreduce=r.allreduce,
    )
