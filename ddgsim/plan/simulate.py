"""The ``simulate`` use case: predict the run of a plan, or of a split and schedule, on a scenario.

    from ddgsim.plan.simulate import simulate_plan
    result = simulate_plan(plan, profile)   # a ddgsim.plan.format.Plan, as the executor runs it
    result.iteration_ms

:func:`simulate_split` takes a :class:`SimulateRequest` (a split or a stage count, devices or
replicas, a scenario or ``ideal-K·D``). :class:`SimulateInputs` names them as a user does (a model,
a profile or a plan file, a split written ``15,30,45``): ``python -m ddgsim simulate`` builds one
from its options, :meth:`SimulateInputs.request` loads what it names, and it simulates that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

from ddgsim.errors import ParameterError, UserError
from ddgsim.plan.format import Plan
from ddgsim.plan.inputs import DEFAULT_BATCH, InputError, check_one_source, load_profile_file
from ddgsim.predict.event_sim import SimResult
from ddgsim.predict.scenario import Scenario
from ddgsim.profile.format import Profile
from ddgsim.replicas import ALLREDUCE, DEFAULT_ALLREDUCE, Layout
from ddgsim.schedule import DEFAULT_SCHEDULE


def _positive(values: object, *names: str) -> None:
    """Each of ``names`` that ``values`` has set is > 0."""
    for name in names:
        value = getattr(values, name)
        if value is not None and value <= 0:
            raise ParameterError(name, f" must be > 0, got {value}")


@dataclass(frozen=True, kw_only=True)
class SimulateRequest:
    """One split and schedule to simulate; validated once, here."""

    profile: Profile
    """The model's measured costs at its batch size."""
    split: tuple[int, ...] | None = None
    """Unit indices where stages 1..K-1 begin; ``None``: the authors' even split of ``stages``."""
    stages: int | None = None
    """K; ``None``: from the split."""
    schedule: str = DEFAULT_SCHEDULE
    micro_batches: int = 1
    """Micro-batches per batch (gpipe, 1f1b)."""
    iterations: int | None = None
    """Iterations to simulate; ``None``: 4K+8."""
    scenario: Scenario | str | None = None
    """A scenario, or its bundled name, ``ideal-N`` or ``.toml`` path; ``None``: ``ideal-K·D`` (assumed)."""
    devices: tuple[str, ...] | None = None
    """The device of each stage; ``None``: the scenario's first K."""
    layout: Layout | None = None
    """The devices of every replica of every stage (a plan's); exclusive with ``devices`` and ``replicas``."""
    replicas: int | None = None
    """D replicas of every stage on the scenario's first K·D devices, a stage's replicas together."""
    allreduce: str = DEFAULT_ALLREDUCE
    """How replicas sum their gradients: ring or tree."""

    def __post_init__(self) -> None:
        from ddgsim.plan.split import check_split
        from ddgsim.predict.max_plus import min_iterations
        from ddgsim.schedule import check_schedule_args

        if self.split is None and self.stages is None:
            raise InputError("give {stages} K or {split} CUTS")
        _positive(self, "stages", "iterations", "replicas")
        stages, units = self.num_stages, self.profile.num_units
        if stages > units:
            raise ParameterError("stages", f" {stages} is more stages than the {units} units of "
                                           f"'{self.profile.model}'")
        if self.split is not None:
            check_split(self.split, units, stages)
        least = min_iterations(stages)
        check_schedule_args(self.schedule, stages, self.iterations or least, self.micro_batches)
        if self.iterations is not None and self.iterations < least:
            raise ParameterError("iterations", f" must be >= {least} (2K+2) for K = {stages}, got {self.iterations}")
        if self.allreduce not in ALLREDUCE:
            raise InputError(f"unknown {{allreduce}} '{self.allreduce}' (choose from "
                             f"{', '.join(map(repr, ALLREDUCE))})")
        placed = [f"{name}={value}" for name, value in (("devices", self.devices), ("layout", self.layout),
                  ("replicas", self.replicas if self.replicas != 1 else None)) if value is not None]
        if len(placed) > 1:
            raise UserError(f"give one of devices, layout and replicas > 1, got {', '.join(placed)}")

    @property
    def num_stages(self) -> int:
        """K: ``stages``, or one more than the split's cuts."""
        return self.stages if self.stages is not None else len(self.split or ()) + 1

    def load_scenario(self) -> Scenario:
        """The scenario: the request's, loaded by name, or ``ideal-K·D`` (K·D copies of the profiled
        device on free links) without one."""
        from ddgsim.predict.scenario import load_scenario

        if isinstance(self.scenario, Scenario):
            return self.scenario
        return load_scenario(self.scenario or f"ideal-{self.num_stages * (self.replicas or 1)}")

    @classmethod
    def for_plan(cls, plan: Plan, profile: Profile) -> SimulateRequest:
        """The request that reproduces ``plan``'s prediction: its split, schedule, micro-batches,
        scenario, and devices or replicas."""
        replicated = plan.world_size > plan.num_stages
        return cls(profile=profile, split=tuple(plan.split), schedule=plan.schedule, micro_batches=plan.micro_batches,
                   scenario=plan.scenario or None, allreduce=plan.allreduce, layout=plan.layout if replicated else None,
                   devices=None if replicated else tuple(s.device for s in plan.stages))


def simulate_split(request: SimulateRequest) -> SimResult:
    """Simulate ``request`` with the SimPy model (:func:`ddgsim.predict.event_sim.simulate`)."""
    from ddgsim.plan.layouts import layouts_for
    from ddgsim.plan.split import even_split
    from ddgsim.predict.event_sim import simulate
    from ddgsim.replicas import check_batch

    r = request
    K, n = r.num_stages, r.profile.num_units
    split = even_split(n, K) if r.split is None else list(r.split)
    scenario = r.load_scenario()
    layout = r.layout
    if r.replicas is not None and r.replicas > 1:
        check_batch(r.profile.batch_size, r.micro_batches, [r.replicas] * K)
        layout = layouts_for(scenario, K, r.replicas, len(scenario.devices))[0][1]
    if layout is None and r.devices is None and len(scenario.devices) < K:
        raise ParameterError("stages", f" {K} needs {K} devices but scenario '{scenario.name}' has "
                                       f"{len(scenario.devices)}")
    if layout is not None:
        return simulate(r.profile, split, scenario, r.schedule, iterations=r.iterations,
                        micro_batches=r.micro_batches, layout=layout, allreduce=r.allreduce)
    return simulate(r.profile, split, scenario, r.schedule, iterations=r.iterations,
                    micro_batches=r.micro_batches, devices=r.devices)


def simulate_plan(plan: Plan, profile: Profile, *, scenario: Scenario | str | None = None,
                  iterations: int | None = None) -> SimResult:
    """Simulate ``plan`` as the executor runs it, on its own scenario (or ``scenario``): the
    prediction its file records, reproduced."""
    if plan.model != profile.model or plan.batch_size != profile.batch_size:
        raise UserError(f"plan is for model '{plan.model}' at batch {plan.batch_size}, the profile for "
                        f"'{profile.model}' at batch {profile.batch_size}")
    request = SimulateRequest.for_plan(plan, profile)
    if scenario is not None or iterations is not None:
        request = replace(request, scenario=scenario if scenario is not None else request.scenario,
                          iterations=iterations)
    return simulate_split(request)


class NamedSimulation(NamedTuple):
    """What :meth:`SimulateInputs.request` loaded."""

    request: SimulateRequest
    """With its scenario loaded."""
    profile_file: str
    """The profile's file: for notes about it."""
    assumed: bool
    """No scenario was named (neither given nor in the plan): ``ideal-K·D``."""


@dataclass(frozen=True, kw_only=True)
class SimulateInputs:
    """A simulation asked for by name, as ``python -m ddgsim simulate`` asks: a model (its bundled
    or cached profile), a profile file or a plan file, and values that override the plan's. Its
    values are checked when it is built; :meth:`request` loads what it names."""

    model: str | None = None
    profile: str | None = None
    """A ``ddgsim-profile/1`` file instead of the model's."""
    plan: str | None = None
    """A ``ddgsim-plan/1`` file: its split, schedule, micro-batches, scenario, devices or replicas,
    all-reduce, model and profile, each unless given here."""
    stages: int | None = None
    """K; ``None``: from the split."""
    split: str | Sequence[int] | None = None
    """Unit indices where stages 1..K-1 begin (``"15,30,45"``); ``None``: the plan's, or the even split."""
    schedule: str | None = None
    scenario: str | None = None
    """A bundled scenario, ``ideal-N`` or a ``.toml`` file; ``None``: the plan's, or ``ideal-K·D``."""
    devices: str | Sequence[str] | None = None
    """The device of each stage (``"gpu0,gpu1"``)."""
    replicas: int | None = None
    allreduce: str | None = None
    iterations: int | None = None
    micro_batches: int | None = None
    batch_size: int | None = None
    """The profile's (and the plan's) batch size; ``None``: the plan's, or :data:`DEFAULT_BATCH`."""

    def __post_init__(self) -> None:
        check_one_source(self.model, self.profile)
        _positive(self, "stages", "micro_batches", "batch_size", "iterations", "replicas")
        if self.replicas is not None and self.replicas > 1 and self.devices:
            raise InputError("give {devices} or {replicas}, not both")

    def request(self) -> NamedSimulation:
        """Load the plan, the profile and the scenario: the request, the profile's file, and whether
        the scenario is assumed."""
        from ddgsim.plan import format as plan_file
        from ddgsim.plan.split import parse_split

        plan = plan_file.load(self.plan) if self.plan else None
        if plan is not None and self.model and self.model != plan.model:
            raise UserError(f"plan {self.plan} is for model '{plan.model}', not '{self.model}'")
        if plan is not None and self.batch_size is not None and self.batch_size != plan.batch_size:
            raise ParameterError("batch_size", f" {self.batch_size} but plan {self.plan} is for batch "
                                               f"{plan.batch_size}; plan that batch: python -m ddgsim plan "
                                               f"{plan.model} --batch-size {self.batch_size}")
        profile, path = self._profile(plan)
        split = (tuple(parse_split(self.split) if isinstance(self.split, str) else self.split)
                 if self.split is not None else tuple(plan.split) if plan else None)
        devices = (tuple(self.devices.split(",") if isinstance(self.devices, str) else self.devices)
                   if self.devices else None)
        layout = (plan.layout if plan is not None and plan.world_size > plan.num_stages and not (devices or self.replicas)
                  else None)
        if plan is not None and devices is None and layout is None and not (self.replicas or 1) > 1:
            devices = tuple(s.device for s in plan.stages)
        scenario = self.scenario or (plan.scenario if plan else None)
        request = SimulateRequest(
            profile=profile, split=split, stages=self.stages, scenario=scenario or None, devices=devices,
            layout=layout, replicas=self.replicas, allreduce=self.allreduce or (plan.allreduce if plan else "ring"),
            schedule=self.schedule or (plan.schedule if plan else DEFAULT_SCHEDULE), iterations=self.iterations,
            micro_batches=self.micro_batches or (plan.micro_batches if plan else 1))
        return NamedSimulation(replace(request, scenario=request.load_scenario()), path, scenario is None)

    def _profile(self, plan: Plan | None) -> tuple[Profile, str]:
        """The profile: the file given, the plan's (when its file is there and no model is named), or
        the model's bundled or cached one; and its file."""
        from ddgsim.profile import format as profile_format
        from ddgsim.profile.store import find_profile

        if self.profile:
            return load_profile_file(self.profile, self.batch_size), self.profile
        ref = plan.profile_ref if plan is not None else None
        if not self.model and ref is not None and ref.path and Path(ref.path).is_file():
            return profile_format.load(ref.path), ref.path
        model = self.model or (plan.model if plan is not None else None)
        if not model:
            raise InputError("give a {model}, {profile} FILE or {plan} PLAN")
        batch = self.batch_size or (plan.batch_size if plan is not None else DEFAULT_BATCH)
        path = find_profile(model, batch)
        if path is None:
            raise InputError(f"no bundled or cached profile for model '{model}' at batch size {batch}; measure one "
                             f"with `python -m ddgsim profile {model} --batch-size {batch}` or pass {{profile}} FILE")
        return profile_format.load(path), str(path)
