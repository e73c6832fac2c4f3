"""The ``plan`` use case: a typed request in, the chosen plan and everything it was weighed against out.

    from ddgsim.planner import PlanRequest, plan
    outcome = plan(PlanRequest(profile=profile, devices=4))
    outcome.plan.save("plan.json")

For each schedule asked for: the layout search over K stages × D replicas (K·D ≤ devices,
:mod:`ddgsim.plan.layouts`) and its winner re-planned with the baselines, or with ``replicas=1``
every K of a pure pipeline (:func:`ddgsim.plan.build.plan_for_k`); the fastest schedule's best
K becomes the :class:`~ddgsim.plan.format.Plan`. ``objective="time-to-loss"`` first ranks the
Ks by pilot trainings (:mod:`ddgsim.converge.objective`). ``python -m ddgsim plan`` is a thin
adapter over :func:`plan`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ddgsim.converge.usecase import PilotProgress, Pilots, run_pilots
from ddgsim.errors import ParameterError, UserError, choices
from ddgsim.plan.build import KResult, choose, plan_for_k, to_plan
from ddgsim.plan.format import Plan
from ddgsim.plan.inputs import DEFAULT_BATCH, InputError, check_one_source, load_profile_file
from ddgsim.plan.layouts import LayoutSearch, search_layouts
from ddgsim.plan.records import ProfileRef
from ddgsim.predict.scenario import Scenario, load_scenario
from ddgsim.profile.format import Profile
from ddgsim.replicas import ALLREDUCE, DEFAULT_ALLREDUCE
from ddgsim.schedule import DEFAULT_SCHEDULE, MICRO_SCHEDULES, SCHEDULES

__all__ = ["OBJECTIVES", "NamedPlan", "PilotProgress", "Pilots", "PlanInputs", "PlanOutcome", "PlanRequest",
           "TargetNotReached", "layouts_summary", "plan", "run_pilots"]

OBJECTIVES = ("throughput", "time-to-loss")
ALL = "all"
"""The schedule name of :class:`PlanInputs` that plans every schedule."""
GIB = 2**30

@dataclass(frozen=True, kw_only=True)
class PlanRequest:
    """Everything a plan depends on; validated once, here."""

    profile: Profile
    """The model's measured costs at its batch size (the plan's batch is ``profile.batch_size``)."""
    devices: int
    """Devices available: K·D ≤ devices."""
    scenario: Scenario | None = None
    """The hardware; ``None``: ``ideal-<devices>``, copies of the profiled device on free links (assumed)."""
    scenario_ref: str = ""
    """How the plan file names the scenario (a name or a path); empty: the scenario's name."""
    profile_ref: ProfileRef | Mapping[str, Any] | None = None
    """The plan file's reference to the profile (:meth:`ProfileRef.of`; a mapping is read as its JSON form);
    ``None``: model and batch size only."""
    schedules: tuple[str, ...] = (DEFAULT_SCHEDULE,)
    """Schedules to plan; the fastest one's plan is chosen."""
    stages: int | None = None
    """Plan exactly this K; ``None``: every K in 1..devices."""
    replicas: int | None = None
    """Replicas per stage: ``None`` searches every D (and per-stage D_k); 1 plans pure pipelines and keeps every K."""
    allreduce: str = DEFAULT_ALLREDUCE
    """How replicas sum their gradients in the prediction: ring or tree."""
    micro_batches: int | None = None
    """Micro-batches of gpipe and 1f1b; ``None``: 4 for those, 1 for the others."""
    memory_limit_bytes: float | None = None
    """Memory per device; ``None``: each device's own, from the scenario."""
    objective: str = "throughput"
    """throughput (least time per iteration) or time-to-loss (least predicted time to the pilots' target)."""
    max_staleness: int | None = None
    """Only plans whose gradients are at most this many iterations old."""
    pilots: Pilots | None = None
    """The pilot trainings of ``objective="time-to-loss"``."""

    def __post_init__(self) -> None:
        n = self.devices
        _check_devices(n, self.stages)
        _check_choices(self)
        if not self.schedules or any(s not in SCHEDULES for s in self.schedules):
            raise UserError(f"unknown schedules {list(self.schedules)!r} (choose from {choices(SCHEDULES)})")
        if self.memory_limit_bytes is not None and not self.memory_limit_bytes > 0:
            raise ParameterError("memory_limit_bytes", f" must be > 0, got {self.memory_limit_bytes}")
        if (self.objective == "time-to-loss") != (self.pilots is not None):
            raise UserError(f"objective '{self.objective}' {'needs' if self.pilots is None else 'takes no'} pilots")
        if self.pilots is not None and len(self.schedules) != 1:
            raise UserError(f"time-to-loss plans one schedule, got {len(self.schedules)}: {list(self.schedules)!r}")
        if self.scenario is not None and len(self.scenario.devices) < n:
            raise ParameterError("devices", f" {n} but scenario '{self.scenario.name}' has "
                                            f"{len(self.scenario.devices)} devices")
        if self.stages is not None and self.stages > self.profile.num_units:
            raise ParameterError("stages", f" {self.stages} is more stages than the {self.profile.num_units} units "
                                           f"of '{self.profile.model}'")


def _check_devices(devices: int, stages: int | None) -> None:
    """The device count, and the stage count within it."""
    if devices < 1:
        raise ParameterError("devices", f" must be >= 1, got {devices}")
    if stages is not None and not 1 <= stages <= devices:
        raise ParameterError("stages", f" must be in 1..{devices} ({{devices}}), got {stages}", ["devices"])


def _check_choices(r: PlanRequest | PlanInputs) -> None:
    """What ``r`` asks for beyond the devices and stages, checked without a profile: the objective,
    micro-batches, replicas (and stages × replicas), the all-reduce and the staleness bound."""
    n = r.devices
    replicas = r.replica_count if isinstance(r, PlanInputs) else r.replicas
    if r.objective not in OBJECTIVES:
        raise UserError(f"unknown objective '{r.objective}' (choose from {choices(OBJECTIVES)})")
    if r.micro_batches is not None and r.micro_batches < 1:
        raise ParameterError("micro_batches", f" must be >= 1, got {r.micro_batches}")
    if replicas is not None and not 1 <= replicas <= n:
        what = "auto or a number in" if isinstance(r, PlanInputs) else "None (search) or in"
        raise ParameterError("replicas", f" must be {what} 1..{n} ({{devices}}), got {r.replicas!r}", ["devices"])
    if r.allreduce not in ALLREDUCE:
        raise InputError(f"unknown {{allreduce}} '{r.allreduce}' (choose from {', '.join(map(repr, ALLREDUCE))})")
    if r.stages is not None and replicas is not None and r.stages * replicas > n:
        raise ParameterError("stages", f" {r.stages} × {{replicas}} {replicas} needs more than the {n} devices of "
                                       "{devices}", ["replicas", "devices"])
    if r.max_staleness is not None and r.max_staleness < 0:
        raise ParameterError("max_staleness", f" must be >= 0, got {r.max_staleness}")


class NamedPlan(NamedTuple):
    """What :meth:`PlanInputs.request` loaded."""

    request: PlanRequest
    profile_file: str
    """The profile's file (the model's name when none was written): for notes about it."""
    profile_note: str
    """Where the profile came from, in one line: ``FILE (given)``, ``FILE (bundled; cpu, 1 thread(s), batch 128)``."""


@dataclass(frozen=True, kw_only=True)
class PlanInputs:
    """A plan asked for by name, as ``python -m ddgsim plan`` asks: a model or a profile file, a
    scenario's name or file, a schedule's name or ``all``, the memory in GiB. Its values are checked
    when it is built, before anything is loaded (a model without a profile is profiled on the spot);
    :meth:`request` loads them into a :class:`PlanRequest`."""

    devices: int
    model: str | None = None
    """A model name (``ddgsim models``): its bundled or cached profile, else one measured now and cached."""
    profile: str | None = None
    """A ``ddgsim-profile/1`` file instead of a model."""
    batch_size: int | None = None
    """The profile's batch size; ``None``: the file's own, or :data:`DEFAULT_BATCH` for a model."""
    scenario: str | None = None
    """A bundled scenario, ``ideal-N`` or a ``.toml`` file; ``None``: ``ideal-<devices>``."""
    schedule: str = DEFAULT_SCHEDULE
    """A schedule's name, or ``all``."""
    stages: int | None = None
    replicas: int | str | None = None
    """Replicas per stage: a number, or ``auto`` (``None``) to search every D (and per-stage D_k)."""
    allreduce: str = DEFAULT_ALLREDUCE
    micro_batches: int | None = None
    memory_limit_gib: float | None = None
    """Memory per device in GiB; ``None``: the scenario's."""
    objective: str = "throughput"
    max_staleness: int | None = None
    """As :class:`PlanRequest`'s."""

    def __post_init__(self) -> None:
        _check_devices(self.devices, self.stages)
        if self.batch_size is not None and self.batch_size <= 0:
            raise ParameterError("batch_size", f" must be > 0, got {self.batch_size}")
        if self.memory_limit_gib is not None and not self.memory_limit_gib > 0:
            raise ParameterError("memory_limit_gib", f" must be > 0 GiB, got {self.memory_limit_gib}")
        _check_choices(self)
        if self.objective == "time-to-loss":
            if self.schedule == ALL:
                raise ParameterError("objective", " time-to-loss plans one schedule: give {schedule} NAME, not all",
                                     ["schedule"])
            if self.profile:
                raise ParameterError("objective", " time-to-loss trains the model in its pilots: give {model}, "
                                                  "not {profile}", ["model", "profile"])
        if self.schedule != ALL and self.schedule not in SCHEDULES:
            raise UserError(f"unknown schedule '{self.schedule}' (choose from {choices((*SCHEDULES, ALL))})")
        check_one_source(self.model, self.profile)
        if not self.profile and not self.model:
            raise InputError("give a {model} (see `python -m ddgsim models`) or {profile} FILE")

    @property
    def schedules(self) -> tuple[str, ...]:
        return tuple(SCHEDULES) if self.schedule == ALL else (self.schedule,)

    @property
    def replica_count(self) -> int | None:
        """``replicas`` as :class:`PlanRequest` takes it (``None``: search; 0: not a number)."""
        r = self.replicas
        if r is None or isinstance(r, int):
            return r
        return None if r == "auto" else int(r) if r.isdigit() else 0

    def request(self, *, pilots: Pilots | None = None, progress: bool = False) -> NamedPlan:
        """Load the profile (with a progress bar if it must be measured and ``progress``) and the
        scenario: the request, with ``pilots`` for ``objective="time-to-loss"``."""
        if self.profile:
            profile = load_profile_file(self.profile, self.batch_size)
            ref, note = ProfileRef.of(profile, self.profile), f"{self.profile} (given)"
        else:
            from ddgsim.profile.store import get_profile

            assert self.model is not None
            profile, path, source = get_profile(self.model, self.batch_size or DEFAULT_BATCH, "cpu", 1,
                                                this_machine=False, progress=progress)
            ref = ProfileRef.of(profile, path, source=source)
            what = {"bundled": "bundled", "cache": "cached", "measured": "measured now and cached"}[source]
            note = f"{path} ({what}; {profile.device}, {profile.threads} thread(s), batch {profile.batch_size})"
        request = PlanRequest(
            profile=profile, devices=self.devices, scenario=load_scenario(self.scenario) if self.scenario else None,
            scenario_ref=self.scenario or "", profile_ref=ref, schedules=self.schedules, stages=self.stages,
            replicas=self.replica_count, allreduce=self.allreduce, micro_batches=self.micro_batches,
            memory_limit_bytes=self.memory_limit_gib * GIB if self.memory_limit_gib is not None else None,
            objective=self.objective, max_staleness=self.max_staleness, pilots=pilots)
        return NamedPlan(request, ref.path or profile.model, note)


class TargetNotReached(InputError):
    """No K's pilots reached the target loss on every seed."""

    def __init__(self, target: float, steps: int) -> None:
        super().__init__(f"no K reached {{target_loss}} {target:g} in {steps} pilot steps on every seed "
                         "(raise {steps} or the target)")
        self.target = target
        self.steps = steps

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.target, self.steps))


@dataclass(frozen=True, kw_only=True)
class PlanOutcome:
    """The chosen plan, and what it was chosen from."""

    plan: Plan
    """The ``ddgsim-plan/1`` plan of the chosen K (save it with ``plan.save(path)``)."""
    chosen: KResult
    """The chosen K: its planned split (``chosen.planned``, with the SimPy run) and baselines."""
    schedule: str
    """The chosen schedule (the fastest one when several were planned)."""
    per_schedule: dict[str, list[KResult]]
    """Each schedule's table rows: one KResult per K with ``replicas=1``, else the layout search's winner."""
    layouts: LayoutSearch | None
    """The chosen schedule's layout search (``None`` with ``replicas=1``)."""
    scenario: Scenario
    assumed: bool
    """The scenario was not given: ``ideal-<devices>``."""
    time_to_loss: dict[str, Any] | None = None
    """The time-to-loss table (``objective="time-to-loss"``), as the plan file keeps it."""
    notes: list[str] = field(default_factory=list)
    """The chosen K's search and simulation notes."""

    @property
    def iteration_ms(self) -> float:
        """The chosen plan's predicted time per iteration (SimPy's)."""
        assert self.chosen.planned is not None
        return self.chosen.planned.iteration_ms

    @property
    def bound_ms(self) -> float | None:
        """No layout of any K, D_k, split or mapping beats this (``None`` without a layout search)."""
        return self.layouts.any_layout_bound_ms if self.layouts is not None else None

    def best_per_schedule(self) -> dict[str, dict[str, Any] | None]:
        """Each schedule's best K: stages, split and iteration time (``None``: nothing fits)."""
        out: dict[str, dict[str, Any] | None] = {}
        for s, rows in self.per_schedule.items():
            c = choose(rows)
            out[s] = (None if c is None or c.planned is None else
                      {"stages": c.stages, "split": c.planned.split, "iteration_ms": c.planned.iteration_ms})
        return out


def plan(request: PlanRequest, *, pilot_progress: PilotProgress | None = None) -> PlanOutcome:
    """Plan ``request``: the fastest K × D layout and split of the fastest schedule (or the least
    predicted time to the pilots' target loss). ``pilot_progress`` shows the pilot runs' progress.
    Raises :class:`~ddgsim.errors.UserError` when nothing fits in memory or nothing is allowed."""
    r = request
    profile = r.profile
    assumed = r.scenario is None
    scenario = r.scenario if r.scenario is not None else load_scenario(f"ideal-{r.devices}")
    ks = [r.stages] if r.stages is not None else list(range(1, min(r.devices, profile.num_units) + 1))
    restricted = r.stages is not None
    if r.max_staleness is not None and not any(_allowed([min(ks)], s, r.max_staleness) for s in r.schedules):
        raise ParameterError("max_staleness", f" {r.max_staleness}: the fewest stages asked for, {min(ks)}, "
                                              f"train on gradients {min(ks) - 1} iterations old")
    ttl: dict[str, Any] | None = None
    if r.pilots is not None:
        sched = r.schedules[0]
        ks, ttl = _time_to_loss(r, r.pilots, scenario, sched, _allowed(ks, sched, r.max_staleness), pilot_progress)
        restricted = True
    per_schedule: dict[str, list[KResult]] = {}
    layouts: dict[str, LayoutSearch] = {}
    for sched in r.schedules:
        per_schedule[sched], found = _plan_schedule(r, scenario, sched, ks, restricted)
        if found is not None:
            layouts[sched] = found
    best = {s: choose(rs) for s, rs in per_schedule.items()}
    primary = min(r.schedules, key=lambda s: _ms(best[s]))  # the one schedule, or the fastest
    chosen = best[primary]
    if chosen is None or chosen.planned is None:
        worst = min((x.overflow for x in per_schedule[primary] if x.overflow is not None), key=lambda o: o.over_bytes)
        reps = worst.layout.replicas if worst.layout is not None else (1,)
        where = worst.layout.devices[worst.stage][0] if worst.layout is not None else worst.devices[worst.stage]
        raise UserError(
            f"no split of '{profile.model}' into {worst.stages} stage(s){_replica_label(reps)} fits in memory: at "
            f"best stage {worst.stage} on {where} needs {worst.need_bytes / GIB:.3f} GiB, "
            f"{worst.over_bytes / GIB:.3f} GiB over its {worst.limit_bytes / GIB:.3f} GiB"
        )
    extra: dict[str, Any] = {"objective": r.objective, "scenario_assumed": assumed}
    if r.max_staleness is not None:
        extra["max_staleness"] = r.max_staleness
    if ttl is not None:
        extra["time_to_loss"] = ttl
    if primary in layouts:
        extra["layouts"] = layouts_summary(layouts[primary])
    the_plan = to_plan(chosen, profile, _profile_ref(r.profile_ref, profile), r.scenario_ref or scenario.name,
                       chosen.planned.sim.micro_batches, extra=extra)
    return PlanOutcome(plan=the_plan, chosen=chosen, schedule=primary, per_schedule=per_schedule,
                       layouts=layouts.get(primary), scenario=scenario, assumed=assumed, time_to_loss=ttl,
                       notes=[*chosen.notes, *chosen.planned.sim.notes])


def _profile_ref(ref: ProfileRef | Mapping[str, Any] | None, profile: Profile) -> ProfileRef:
    """The request's reference, typed; without one, the profile's model and batch size alone."""
    if isinstance(ref, ProfileRef):
        return ref
    if ref is None:
        return ProfileRef(model=profile.model, batch_size=profile.batch_size)
    return ProfileRef.from_json(ref)


def _replica_label(replicas: tuple[int, ...]) -> str:
    """`` × D = d``, `` × D_k = a–b (per stage)`` or nothing: as the tables say it
    (:func:`ddgsim.commands._table.replica_label`, which a library module does not import)."""
    lo, hi = min(replicas, default=1), max(replicas, default=1)
    if lo != hi:
        return f" × D_k = {lo}–{hi} (per stage)"
    return f" × D = {hi}" if hi > 1 else ""


def _ms(c: KResult | None) -> float:
    return c.planned.iteration_ms if c is not None and c.planned is not None else float("inf")


def _micro_batches(r: PlanRequest, schedule: str) -> int:
    """Micro-batches of ``schedule``: the request's, or 4 for the micro-batched ones (gpipe, 1f1b:
    :data:`~ddgsim.schedule.MICRO_SCHEDULES`) and 1 for the others;
    with several schedules one that takes none runs 1."""
    micro = r.micro_batches or (4 if schedule in MICRO_SCHEDULES else 1)
    if micro > 1 and schedule not in MICRO_SCHEDULES:
        if len(r.schedules) > 1:
            return 1
        raise UserError(f"schedule '{schedule}' takes no micro-batches (got {micro}); only {choices(MICRO_SCHEDULES)} do")
    return micro


def _plan_schedule(r: PlanRequest, scenario: Scenario, schedule: str, ks: list[int],
                   restricted: bool) -> tuple[list[KResult], LayoutSearch | None]:
    """One schedule's rows (every K of a pure pipeline, or the layout search's winner re-planned
    with its baselines) and its layout search."""
    micro = _micro_batches(r, schedule)
    sched_ks = _allowed(ks, schedule, r.max_staleness)
    if not sched_ks:
        return [], None
    limit = r.memory_limit_bytes
    if r.replicas == 1:
        return [plan_for_k(r.profile, scenario, schedule, k, micro_batches=micro, memory_limit_bytes=limit)
                for k in sched_ks], None
    found = search_layouts(r.profile, scenario, schedule, r.devices, micro_batches=micro, memory_limit_bytes=limit,
                           replicas=None if r.replicas is None else [r.replicas],
                           stages=sched_ks if restricted or sched_ks != ks else None, allreduce=r.allreduce)
    top = found.best
    if top is None or top.best is None:
        miss = found.nearest_miss
        return [KResult(stages=miss.stages if miss else ks[0], schedule=schedule, planned=None, baselines=[],
                        overflow=miss, exact=True)], found
    return [plan_for_k(r.profile, scenario, schedule, top.stages, micro_batches=micro, memory_limit_bytes=limit,
                       layout=top.best.layout, allreduce=r.allreduce, baselines=False, searched=top.best)], found


def _allowed(ks: list[int], schedule: str, max_staleness: int | None) -> list[int]:
    """The Ks of ``ks`` within ``max_staleness`` under ``schedule``."""
    from ddgsim.converge.objective import staleness_of

    if max_staleness is None:
        return ks
    return [k for k in ks if staleness_of(schedule, k) <= max_staleness]


def _time_to_loss(r: PlanRequest, pilots: Pilots, scenario: Scenario, schedule: str, ks: list[int],
                  progress: PilotProgress | None) -> tuple[list[int], dict[str, Any]]:
    """The K with the least predicted time to the target (pilots × iteration time), and the table."""
    from ddgsim.converge.objective import rank

    micro = r.micro_batches or (4 if schedule in MICRO_SCHEDULES else 1)
    best: dict[int, tuple[str, tuple[int, ...], float]] = {}
    for k in ks:
        if r.replicas == 1:
            res = plan_for_k(r.profile, scenario, schedule, k, micro_batches=micro,
                             memory_limit_bytes=r.memory_limit_bytes, baselines=False)
            if res.planned is not None:
                best[k] = (f"{k} × 1", tuple(res.planned.split), res.planned.iteration_ms)
            continue
        found = search_layouts(r.profile, scenario, schedule, r.devices, micro_batches=micro,
                               memory_limit_bytes=r.memory_limit_bytes,
                               replicas=None if r.replicas is None else [r.replicas], stages=[k],
                               allreduce=r.allreduce)
        b = found.best
        if b is not None and b.best is not None:
            reps = b.best.layout.replicas if b.best.layout is not None else (1,)
            best[k] = (f"{k}{_replica_label(reps)}", tuple(b.best.split), b.iteration_ms)
    if not best:
        return ks, {}
    batch = r.profile.batch_size
    target, rows = rank(schedule, best,
                        lambda splits: run_pilots(pilots, r.profile.model, splits, schedule, batch, progress))
    table = {"target_loss": target, "data": pilots.data, "pilot_steps": pilots.steps, "seeds": pilots.seeds,
             "pilot_batch": batch, "base_lr": pilots.lr, "window": pilots.window,
             "rows": [row.to_json() for row in rows]}
    if rows[0].median_steps is None:
        raise TargetNotReached(target, pilots.steps)
    return [rows[0].stages], table


def layouts_summary(found: LayoutSearch) -> dict[str, Any]:
    """What the layout search found, for the plan file's ``extra``."""

    def one(r: Any) -> dict[str, Any] | None:
        if r is None or r.best is None:
            return None
        return {"stages": r.stages, "replicas": r.replicas, "replica_counts": list(r.replica_counts),
                "mapping": r.mapping, "split": r.best.split, "iteration_ms": r.iteration_ms, "exact": r.best.exact}

    return {
        "candidates": found.candidates, "searched": found.searched, "wall_s": found.wall_s,
        "best": one(found.best), "pipeline": one(found.pipeline), "data_parallel": one(found.data_parallel),
        "per_replicas": {str(d): one(r) for d, r in found.per_replicas.items()}, "mixed": one(found.mixed),
        "any_layout_bound_ms": found.any_layout_bound_ms, "gap_bound": found.gap,
    }
