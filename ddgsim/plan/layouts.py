"""Search over layouts: K stages × D replicas on N devices, the split, and the device mapping.

Candidates are every (K, D) with K·D ≤ N, K ≤ the model's units, and D among the replica
counts worth trying (:func:`ddgsim.replicas.useful_replicas`: shards may differ by a sample;
of the counts with the same largest shard, the fewest). Each has a lower bound on its period
that holds for every split:

    LB(K, D) = max( (W_D + U) / K,  max unit work_D ) / fastest speed

(W_D: one replica's shard work of the whole model per iteration, U: the whole model's
optimizer step; a stage's window alone is ``work + update ≤ P``, and some stage holds at
least the mean). Candidates are searched exactly (:func:`ddgsim.plan.search.search` on
each mapping) in increasing order of the bound, and the search stops when the bound of the
next one is no better than the best found: the result is the exact optimum over uniform D,
every K, every split and the mappings tried. Pure pipelines (D = 1) and pure data
parallelism (K = 1) are kept as baselines the same way.

Mappings for D > 1 on the scenario's first K·D devices, in its order (clusters list a node's
devices together): ``replicas together`` (stage k on devices ``[kD, (k+1)D)``: all-reduce
inside a node, pipeline messages across nodes) and ``stages together`` (replica r's stages
on devices ``[rK, (r+1)K)``: pipeline inside a node, all-reduce across nodes). D = 1 keeps
the pipeline search's own device orders.

Per-stage replica counts D_k that differ (PipeDream's): :mod:`ddgsim.plan.mixed` gives a
bound no layout at all beats (the least period at which each stage's work + update fits on
the fastest device, for the best packing of stages and D_k into N devices; free
communication) and a candidate layout with differing D_k. The candidate's own split bounds
out the uniform candidates that cannot come within ``MIXED_MARGIN`` of it; where the bound
leaves room for a layout that much faster than the best uniform one, the candidate's split is
searched exactly, and it is chosen if it is that much faster. The stated gap is the best
found against the larger of that bound and ``min_D (D·W_D + U) / (N · fastest speed)``
(perfect balance).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ddgsim.errors import UserError
from ddgsim.plan import exact as exact_layouts
from ddgsim.plan import mixed as mixed_layouts
from ddgsim.plan.search import Candidate, MemoryOverflow, evaluate, search
from ddgsim.predict import max_plus
from ddgsim.predict.closed_form import CLOSED_FORM
from ddgsim.predict.memory import SGD_MOMENTUM_BUFFERS, stage_memory, unit_bytes
from ddgsim.predict.scenario import Scenario
from ddgsim.profile.format import Profile
from ddgsim.replicas import DEFAULT_ALLREDUCE, Layout, check_batch, useful_replicas
from ddgsim.schedule import Cycle, Schedule, ScheduleKind, Steady, get_schedule, make_schedule

MAPPINGS = ("replicas together", "stages together")
MIXED = "per-stage D_k"
MIXED_MARGIN = 0.01
"""A per-stage D_k layout is chosen only when predicted this much faster than the best uniform one:
within the cost model's error the uniform layout is simpler to run (the same D everywhere, no
re-sharding between stages) and usually has fewer stages, so less staleness."""
MEMORY_DP_LIMIT = 65_536
"""The memory-aware per-stage packing (devices × stages states) runs up to this many states."""
MIXED_UNITS_LIMIT = 1500
"""Models with more units skip the per-stage D_k bound and candidate ((n+1)² tables per D)."""


@dataclass(frozen=True, kw_only=True)
class LayoutResult:
    """The best split of one (K, D) over the mappings tried."""

    stages: int
    replicas: int
    lower_bound_ms: float
    best: Candidate | None
    mapping: str = ""
    overflow: MemoryOverflow | None = None

    @property
    def iteration_ms(self) -> float:
        return self.best.iteration_ms if self.best is not None else math.inf

    @property
    def replica_counts(self) -> tuple[int, ...]:
        """D_k of every stage."""
        if self.best is not None and self.best.layout is not None:
            return self.best.layout.replicas
        return (self.replicas,) * self.stages

    @property
    def devices(self) -> int:
        return sum(self.replica_counts)


@dataclass(frozen=True, kw_only=True)
class LayoutSearch:
    """Every (K, D) candidate's fate, the winners and the bound for any layout."""

    best: LayoutResult | None
    pipeline: LayoutResult | None
    """Best pure pipeline (D = 1)."""
    data_parallel: LayoutResult | None
    """Best pure data parallelism (K = 1, the most replicas that shard the batch)."""
    per_replicas: dict[int, LayoutResult]
    """The best result found for each D (searched candidates only)."""
    mixed: LayoutResult | None
    """The per-stage D_k candidate (:mod:`ddgsim.plan.mixed`), when one with differing D_k was searched:
    only where the bound leaves room to beat the best uniform layout by ``MIXED_MARGIN``."""
    candidates: int
    searched: int
    any_layout_bound_ms: float
    """No layout (any K, D_k, split, mapping) is faster than this."""
    nearest_miss: MemoryOverflow | None = None
    """When no layout fits in memory: the searched one that overflows least."""
    replica_options: tuple[int, ...] = ()
    """Every D the search considered."""
    replicas_searched: tuple[int, ...] = ()
    """The D of which some K was searched (the others were bounded out; those searched but
    missing from ``per_replicas`` never fit in memory)."""
    mixed_note: str = ""
    """Why per-stage D_k were not searched or not chosen (empty when the candidate is the result)."""
    exact_bound: bool = False
    """The bound is the exact per-stage search's optimum (:mod:`ddgsim.plan.exact`: the closed
    form with every cost), not the relaxation's."""
    wall_s: float
    notes: list[str] = field(default_factory=list)

    @property
    def gap(self) -> float:
        """How far the best found may be from the best of any layout (a bound, ≥ the true gap)."""
        if self.best is None or not self.any_layout_bound_ms > 0:
            return math.inf
        return self.best.iteration_ms / self.any_layout_bound_ms - 1.0


def replica_counts(batch_size: int, micro_batches: int, devices: int) -> list[int]:
    """D = 1..N worth trying (:func:`ddgsim.replicas.useful_replicas` of a micro-batch's samples)."""
    check_batch(batch_size, micro_batches, [1])
    return useful_replicas(batch_size // micro_batches, devices)


def layouts_for(scenario: Scenario, stages: int, replicas: int, devices: int) -> list[tuple[str, Layout]]:
    """The mappings of K × D on the scenario's first ``devices`` devices (module docstring)."""
    names = [d.name for d in scenario.devices[:devices]]
    K, D = stages, replicas
    if len(names) < K * D:
        raise UserError(f"{K} stages × {D} replicas need {K * D} devices, the scenario gives {len(names)}")
    together = Layout.packed(names, [D] * K)
    if D == 1 or K == 1:
        return [(MAPPINGS[0], together)]
    apart = Layout(tuple(tuple(names[r * K + k] for r in range(D)) for k in range(K)))
    return [(MAPPINGS[0], together), (MAPPINGS[1], apart)]


def partition_bound(costs: np.ndarray, parts: int, steps: int = 16) -> float:
    """A lower bound on ``min over splits into parts of max stage sum`` of nonnegative unit costs.

    Greedy packing decides exactly whether a maximum X admits ``parts`` stages (fill each stage
    as far as X allows); bisection on X keeps the largest X found infeasible, which is below the
    optimum, so the result is a valid bound (and within 2**-steps of the bracket)."""
    pref = np.concatenate([[0.0], np.cumsum(costs)])
    n = len(costs)

    def fits(X: float) -> bool:
        nxt = (np.searchsorted(pref, pref + X * (1 + 1e-12), side="right") - 1).tolist()  # furthest end from u
        u, used = 0, 0
        while u < n:
            v = nxt[u]
            if v <= u:
                return False
            u, used = v, used + 1
            if used > parts:
                return False
        return True

    lo = max(float(pref[-1]) / parts, float(np.max(costs)) if n else 0.0)
    if fits(lo):
        return lo
    hi = float(pref[-1])
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        if fits(mid):
            hi = mid
        else:
            lo = mid
    return lo


def search_layouts(
    profile: Profile, scenario: Scenario, schedule: str, devices: int, *,
    micro_batches: int = 1, memory_limit_bytes: float | None = None,
    replicas: Sequence[int] | None = None, stages: Sequence[int] | None = None,
    allreduce: str = DEFAULT_ALLREDUCE, update_gb_s: float = max_plus.UPDATE_GB_S,
    optimizer_buffers: int = SGD_MOMENTUM_BUFFERS,
) -> LayoutSearch:
    """The fastest K × D layout on ``devices`` devices (exact over the space the module describes)."""
    t0 = time.perf_counter()
    n = profile.num_units
    Ds = list(replicas) if replicas is not None else replica_counts(profile.batch_size, micro_batches, devices)
    for D in Ds:
        check_batch(profile.batch_size, micro_batches, [D])
    speed = max(d.speed for d in scenario.devices[:devices])
    upd = np.asarray(max_plus.unit_update_ms(profile, update_gb_s))
    U = float(upd.sum())
    cands: list[tuple[float, int, int]] = []
    any_bound = math.inf
    exact_bound = False
    unit_costs: dict[int, np.ndarray] = {}
    for D in Ds:
        per_unit = max_plus.shard_work_ms(profile, micro_batches, D)  # one replica's shard work per unit
        unit_costs[D] = (per_unit + upd) / speed
        work, unit = float(per_unit.sum()), float(per_unit.max())
        any_bound = min(any_bound, (D * work + U) / (devices * speed))
        ks = [k for k in (stages if stages is not None else range(1, devices // D + 1)) if 1 <= k <= n and k * D <= devices]
        for K in ks:
            cands.append((max((work + U) / K, unit) / speed, K, D))
    # Ties on the bound (unit granularity) go to more devices first: where the bound is attained,
    # that candidate attains it and the rest are bounded out.
    cands.sort(key=lambda c: (c[0], -c[1] * c[2], -c[1]))
    results: list[LayoutResult] = []
    best: LayoutResult | None = None
    best_pipe: LayoutResult | None = None
    best_dp: LayoutResult | None = None
    dp_replicas = max(Ds)
    notes: list[str] = []
    mixed: LayoutResult | None = None
    cand: MixedCandidate | None = None
    why = ""
    margin = f"{100 * MIXED_MARGIN:.0f}%"
    if replicas is None:
        samples = profile.batch_size // micro_batches
        odd = [d for d in range(2, min(devices, samples) + 1) if d not in Ds]
        if odd:
            shown = ", ".join(map(str, odd[:6])) + (", …" if len(odd) > 6 else "")
            notes.append(f"D = {shown} not searched: a replica would hold as many of a micro-batch's {samples} "
                         "samples as with fewer replicas (⌈samples/D⌉), on more devices")
    if n <= MIXED_UNITS_LIMIT:
        every = replica_counts(profile.batch_size, micro_batches, devices)
        for D in every:
            if D not in unit_costs:
                unit_costs[D] = (max_plus.shard_work_ms(profile, micro_batches, D) + upd) / speed
        relaxed = mixed_layouts.least_period({D: mixed_layouts.stage_costs(unit_costs[D]) for D in every}, devices)
        if relaxed is not None:
            any_bound = max(any_bound, relaxed.period_ms * (1 - 1e-12))
        if replicas is not None or stages is not None:
            why = "not searched: the stage count or the replica count is fixed"
        elif len(Ds) == 1:
            why = f"not searched: D = {Ds[0]} is the only replica count"
        elif schedule not in CLOSED_FORM or micro_batches > 1:
            why = f"not searched: {schedule} with {micro_batches} micro-batch(es) has no closed form to search them on"
        else:
            unexact = _exact_unavailable(profile, scenario, schedule, devices, Ds)
            if not unexact:
                found = exact_layouts.exact_search(profile, scenario, devices, Ds, update_gb_s=update_gb_s,
                                                   allreduce=allreduce, lower_bound_ms=any_bound)
                # Memory aside no layout is faster (the bisection stops within REL_TOL of the optimum).
                any_bound = max(any_bound, found.period_ms * (1 - 2 * exact_layouts.REL_TOL))
                exact_bound = True
                cand, mixed = _exact_candidate(profile, scenario, schedule, devices, found, memory_limit_bytes,
                                               allreduce, update_gb_s, optimizer_buffers)
                exact_note = ("per-stage D_k searched exactly over every K, split and D_k on up to "
                              f"{devices} devices with the closed form's costs (a symmetric scenario: every "
                              "placement costs the same)")
                if cand is None:
                    why = "none: the exact search's best layout has the same D on every stage"
                if cand is None or math.isfinite(cand.attained_ms):
                    notes.append(f"{exact_note}: the bound below is the best layout's own period")
                else:
                    notes.append(f"{exact_note}; its best layout does not fit in memory, so the memory-aware "
                                 "candidate below is not proven best")
                    mixed = None
            else:
                notes.append(f"per-stage D_k not searched exactly: {unexact}; the candidate comes from a "
                             "relaxation without messages and memory (the bound too)")
            if mixed is None and (unexact or (cand is not None and not math.isfinite(cand.attained_ms))):
                cand = _mixed_candidate(profile, scenario, schedule, devices, {D: unit_costs[D] for D in Ds},
                                        memory_limit_bytes, allreduce, update_gb_s, optimizer_buffers)
                if cand is None:
                    why = "none: the best packing of stages and D_k has the same D on every stage"
                elif not math.isfinite(cand.attained_ms):
                    why = "not searched: the best packing of stages and D_k does not fit in memory"
    else:
        why = f"not searched: {n} units (more than {MIXED_UNITS_LIMIT})"

    def worth(lb: float, K: int, D: int) -> bool:
        """Could the candidate beat the overall best, or the best of its kind (pure pipeline, pure
        data parallel) that is reported as a baseline?"""
        # The D_k candidate's split bounds out the uniform candidates that cannot come within
        # MIXED_MARGIN of it (its layout's best split, searched below, is no slower).
        target = min(best.iteration_ms if best is not None else math.inf,
                     cand.attained_ms * (1 + MIXED_MARGIN) if cand is not None else math.inf)
        return (lb < target * (1 - 1e-9)
                or (D == 1 and (best_pipe is None or lb < best_pipe.iteration_ms * (1 - 1e-9)))
                or (K == 1 and dp_replicas == D))

    for lb, K, D in cands:
        if not worth(lb, K, D):
            continue
        # The tighter bound (unit granularity: the best K-part packing of work + update) costs a
        # little, so only for candidates the cheap bound leaves open.
        lb = max(lb, partition_bound(unit_costs[D], K))
        if not worth(lb, K, D):
            continue
        sched: str | Schedule = schedule
        if schedule not in CLOSED_FORM or micro_batches > 1:
            sched = make_schedule(schedule, K, max_plus.default_iterations(K), micro_batches)
        res = _search_one(profile, scenario, sched, K, D, devices, lb, memory_limit_bytes, allreduce,
                          update_gb_s, optimizer_buffers, notes)
        results.append(res)
        if res.best is None:
            continue
        if best is None or res.iteration_ms < best.iteration_ms * (1 - 1e-12):
            best = res
        if D == 1 and (best_pipe is None or res.iteration_ms < best_pipe.iteration_ms * (1 - 1e-12)):
            best_pipe = res
        if K == 1 and dp_replicas == D:
            best_dp = res
    # The candidate is searched only where some layout could beat the best uniform one by the margin.
    if cand is not None and math.isfinite(cand.attained_ms):
        searched = mixed is not None  # the exact search's layout comes searched
        if mixed is None and (best is None or any_bound * (1 + MIXED_MARGIN) < best.iteration_ms):
            mixed = _search_mixed(profile, scenario, schedule, cand, any_bound, memory_limit_bytes, allreduce,
                                  update_gb_s, optimizer_buffers, notes)
            searched = True
        if not searched:
            why = f"not searched: by the bound, no layout is {margin} faster than the best uniform one"
        elif mixed is not None and (best is None or mixed.iteration_ms * (1 + MIXED_MARGIN) < best.iteration_ms):
            best = mixed
        elif mixed is not None and best is not None and mixed.iteration_ms < best.iteration_ms:
            why = (f"not chosen: the candidate is {100 * (1 - mixed.iteration_ms / best.iteration_ms):.2f}% "
                   f"faster than the best uniform layout, less than the {margin} it must gain to be chosen "
                   "(within the model's error, the same D everywhere is simpler to run)")
        elif mixed is not None:
            why = "not chosen: the candidate is slower than the best uniform layout"
    per: dict[int, LayoutResult] = {}
    for r in results:
        if r.best is not None and (r.replicas not in per or r.iteration_ms < per[r.replicas].iteration_ms):
            per[r.replicas] = r
    misses = [r.overflow for r in results if r.overflow is not None]
    nearest = min(misses, key=lambda o: o.over_bytes) if best is None and misses else None
    return LayoutSearch(best=best, pipeline=best_pipe, data_parallel=best_dp, per_replicas=dict(sorted(per.items())),
                        mixed=mixed, candidates=len(cands), searched=len(results), any_layout_bound_ms=any_bound,
                        wall_s=time.perf_counter() - t0, notes=sorted(set(notes)), nearest_miss=nearest,
                        replica_options=tuple(Ds), replicas_searched=tuple(sorted({r.replicas for r in results})),
                        mixed_note=f"per-stage D_k {why}" if why else "", exact_bound=exact_bound)


@dataclass(frozen=True)
class MixedCandidate:
    """The per-stage D_k DP's layout and split, and what that split attains on it."""

    layout: Layout
    split: list[int]
    attained_ms: float
    """The DP's own split on the layout (the costs model); ``inf`` when it does not fit in memory.
    The layout's best split is no slower, so no uniform layout slower than this is worth searching."""


def _mixed_candidate(
    profile: Profile, scenario: Scenario, schedule: str, devices: int, unit_costs: dict[int, np.ndarray],
    memory_limit_bytes: float | None, allreduce: str, update_gb_s: float, optimizer_buffers: int,
) -> MixedCandidate | None:
    """The per-stage D_k candidate (:mod:`ddgsim.plan.mixed`) placed the better of two ways
    (all-reduce-aware, or packed in order) for the DP's own split; None when its D_k are equal (a
    uniform layout, searched already). When it does not fit in memory, the packing is found again
    with every stage within memory (up to ``MEMORY_DP_LIMIT``)."""
    names = [d.name for d in scenario.devices[:devices]]
    units = profile.units
    params = np.array([u.param_bytes for u in units], dtype=np.float64)
    costs = {D: mixed_layouts.stage_costs(c, mixed_layouts.allreduce_costs(scenario, names, D, params, allreduce))
             for D, c in unit_costs.items()}

    def realize(found: mixed_layouts.MixedSplit) -> MixedCandidate:
        options = list(dict.fromkeys([mixed_layouts.place(scenario, names, found, list(params), allreduce),
                                      Layout.packed(names, found.replicas)]))
        timed = [(evaluate(profile, found.split, scenario, schedule, layout=lay, update_gb_s=update_gb_s,
                           allreduce=allreduce), lay) for lay in options]
        ms, layout = min(timed, key=lambda t: t[0])
        ranges = list(itertools.pairwise([0, *found.split, profile.num_units]))
        mem = stage_memory(profile, ranges, Steady(schedule), optimizer_buffers, replicas=layout.replicas)
        fits = all(m.total <= scenario.memory_limit(row, memory_limit_bytes)
                   for m, row in zip(mem, layout.devices, strict=True))
        return MixedCandidate(layout=layout, split=found.split, attained_ms=ms if fits else math.inf)

    found = mixed_layouts.least_period(costs, devices)
    if found is None:
        return None
    cand = realize(found)
    stages = min(devices, profile.num_units)
    if not math.isfinite(cand.attained_ms) and devices * stages <= MEMORY_DP_LIMIT:
        limit = scenario.memory_limit(names, memory_limit_bytes)
        fit = mixed_layouts.memory_fit(list(params), unit_bytes(profile), list(costs), stages, schedule,
                                       optimizer_buffers, limit, samples=profile.batch_size)
        found = mixed_layouts.least_period(costs, devices, fit)
        if found is None:
            return None
        cand = realize(found)
    return cand if len(set(cand.layout.replicas)) > 1 else None


def _exact_unavailable(profile: Profile, scenario: Scenario, schedule: str, devices: int, Ds: Sequence[int]) -> str:
    """Why :mod:`ddgsim.plan.exact` cannot search this case (empty: it can)."""
    if get_schedule(schedule).closed_form is not Cycle.WINDOW_MEAN:
        return f"the exact search covers {ScheduleKind.DDG_PIPELINED}, not {schedule}"
    if not exact_layouts.symmetric(scenario, devices):
        return (f"the scenario's first {devices} devices are not all alike with a direct link of the same figures "
                "between every pair (placement matters)")
    work = exact_layouts.dp_work(profile.num_units, len(set(Ds) | {1}), devices)
    if work > exact_layouts.WORK_LIMIT:
        return f"{profile.num_units} units × {len(Ds)} replica counts × {devices} devices is too large for it"
    return ""


def _exact_candidate(
    profile: Profile, scenario: Scenario, schedule: str, devices: int, found: exact_layouts.ExactLayout,
    memory_limit_bytes: float | None, allreduce: str, update_gb_s: float, optimizer_buffers: int,
) -> tuple[MixedCandidate | None, LayoutResult | None]:
    """The exact search's layout (packed in device order) as a candidate and a searched result; ``(None,
    None)`` when its D_k are equal (a uniform layout: the uniform search finds it); an ``inf`` candidate
    when it does not fit in memory."""
    if len(set(found.replicas)) == 1:
        return None, None
    names = [d.name for d in scenario.devices[:devices]]
    layout = Layout.packed(names, found.replicas)
    ranges = list(itertools.pairwise([0, *found.split, profile.num_units]))
    mem = stage_memory(profile, ranges, Steady(schedule), optimizer_buffers, replicas=layout.replicas)
    fits = all(m.total <= scenario.memory_limit(row, memory_limit_bytes)
               for m, row in zip(mem, layout.devices, strict=True))
    cand = MixedCandidate(layout=layout, split=found.split, attained_ms=found.period_ms if fits else math.inf)
    if not fits:
        return cand, None
    K = layout.stages
    best = Candidate(stages=K, split=found.split, devices=tuple(layout.flat), iteration_ms=found.period_ms,
                     exact=True, evaluated=found.checks, layout=layout)
    return cand, LayoutResult(stages=K, replicas=max(found.replicas), lower_bound_ms=found.period_ms, best=best,
                              mapping=MIXED)


def _search_mixed(
    profile: Profile, scenario: Scenario, schedule: str, cand: MixedCandidate, lb: float,
    memory_limit_bytes: float | None, allreduce: str, update_gb_s: float, optimizer_buffers: int,
    notes: list[str],
) -> LayoutResult | None:
    """The candidate layout's best split, searched exactly."""
    K = cand.layout.stages
    res = search(profile, scenario, schedule, K, memory_limit_bytes=memory_limit_bytes, update_gb_s=update_gb_s,
                 optimizer_buffers=optimizer_buffers, layout=cand.layout, allreduce=allreduce, lower_bound_ms=lb)
    notes.extend(res.notes)
    if res.best is None:
        return None
    return LayoutResult(stages=K, replicas=max(cand.layout.replicas), lower_bound_ms=lb, best=res.best,
                        mapping=MIXED, overflow=res.overflow)


def _search_one(
    profile: Profile, scenario: Scenario, sched: str | Schedule, K: int, D: int, devices: int, lb: float,
    memory_limit_bytes: float | None, allreduce: str, update_gb_s: float, optimizer_buffers: int,
    notes: list[str],
) -> LayoutResult:
    """The exact best split of K × D over its mappings."""
    if D == 1:
        res = search(profile, scenario, sched, K, memory_limit_bytes=memory_limit_bytes, update_gb_s=update_gb_s,
                     optimizer_buffers=optimizer_buffers, lower_bound_ms=lb)
        notes.extend(res.notes)
        return LayoutResult(stages=K, replicas=1, lower_bound_ms=lb, best=res.best, mapping="pipeline",
                            overflow=res.overflow)
    found: LayoutResult | None = None
    for label, layout in layouts_for(scenario, K, D, devices):
        res = search(profile, scenario, sched, K, memory_limit_bytes=memory_limit_bytes, update_gb_s=update_gb_s,
                     optimizer_buffers=optimizer_buffers, layout=layout, allreduce=allreduce, lower_bound_ms=lb)
        r = LayoutResult(stages=K, replicas=D, lower_bound_ms=lb, best=res.best, mapping=label, overflow=res.overflow)
        if found is None or (r.best is not None and r.iteration_ms < found.iteration_ms * (1 - 1e-12)):
            found = r
    assert found is not None
    return found
