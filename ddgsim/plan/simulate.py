"""The ``simulate`` use case: predict the run of a plan, or of a split and schedule, on a scenario.

    from ddgsim.plan.simulate import simulate_plan
    result = simulate_plan(plan, profile)   # a ddgsim.plan.format.Plan, as the executor runs it
    result.iteration_ms

:func:`simulate_split` takes a :class:`SimulateRequest` (a split or a stage count, devices or
replicas, a scenario or ``ideal-K·D``); ``python -m ddgsim simulate`` is a thin adapter over it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ddgsim.errors import UserError, choices
from ddgsim.plan.format import Plan
from ddgsim.predict.event_sim import SimResult
from ddgsim.predict.scenario import Scenario
from ddgsim.profile.format import Profile
from ddgsim.replicas import ALLREDUCE, DEFAULT_ALLREDUCE, Layout
from ddgsim.schedule import DEFAULT_SCHEDULE


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
        if self.split is None and self.stages is None:
            raise UserError("a simulation needs a split or a number of stages, got neither")
        for name in ("stages", "iterations", "replicas"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserError(f"{name} must be >= 1, got {value}")
        if self.allreduce not in ALLREDUCE:
            raise UserError(f"unknown allreduce '{self.allreduce}' (choose from {choices(ALLREDUCE)})")
        placed = [f"{name}={value}" for name, value in (("devices", self.devices), ("layout", self.layout),
                  ("replicas", self.replicas if self.replicas != 1 else None)) if value is not None]
        if len(placed) > 1:
            raise UserError(f"give one of devices, layout and replicas > 1, got {', '.join(placed)}")
        if self.num_stages > self.profile.num_units:
            raise UserError(f"{self.num_stages} stages is more stages than the {self.profile.num_units} units "
                            f"of '{self.profile.model}'")

    @property
    def num_stages(self) -> int:
        """K: ``stages``, or one more than the split's cuts."""
        return self.stages if self.stages is not None else len(self.split or ()) + 1

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
    from ddgsim.plan.split import check_split, even_split
    from ddgsim.predict.event_sim import simulate
    from ddgsim.predict.max_plus import min_iterations
    from ddgsim.predict.scenario import load_scenario
    from ddgsim.replicas import check_batch
    from ddgsim.schedule import check_schedule_args

    r = request
    K, n = r.num_stages, r.profile.num_units
    split = even_split(n, K) if r.split is None else check_split(r.split, n, K)
    check_schedule_args(r.schedule, K, r.iterations or min_iterations(K), r.micro_batches)
    if r.iterations is not None and r.iterations < min_iterations(K):
        raise UserError(f"iterations must be >= {min_iterations(K)} (2K+2) for K = {K}, got {r.iterations}")
    scenario = (r.scenario if isinstance(r.scenario, Scenario)
                else load_scenario(r.scenario or f"ideal-{K * (r.replicas or 1)}"))
    layout = r.layout
    if r.replicas is not None and r.replicas > 1:
        check_batch(r.profile.batch_size, r.micro_batches, [r.replicas] * K)
        layout = layouts_for(scenario, K, r.replicas, len(scenario.devices))[0][1]
    if layout is None and r.devices is None and len(scenario.devices) < K:
        raise UserError(f"{K} stages need {K} devices but scenario '{scenario.name}' has {len(scenario.devices)}")
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
        from dataclasses import replace

        request = replace(request, scenario=scenario if scenario is not None else request.scenario,
                          iterations=iterations)
    return simulate_split(request)
