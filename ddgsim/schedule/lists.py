"""A run's action lists: :class:`Schedule` (per stage, for one K, N and M) and its dependencies,
built from the registry by :func:`make_schedule`."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from ddgsim.errors import UserError, choices
from ddgsim.schedule.actions import Action, Message, needs, sends
from ddgsim.schedule.registry import _REGISTRY, MICRO_SCHEDULES, get_schedule


@dataclass(frozen=True)
class Schedule:
    """An ordered list of actions per stage."""

    name: str
    stages: int
    iterations: int
    micro_batches: int
    actions: tuple[tuple[Action, ...], ...]

    def delay(self, stage: int) -> int:
        """Promised steady-state staleness of ``stage``: K-1-k under DDG, 0 otherwise (and for lists
        under a name outside the registry, such as a test's hand-made ones)."""
        spec = _REGISTRY.get(self.name)  # type: ignore[call-overload]
        return spec.delay(stage, self.stages) if spec is not None else 0

    def iteration(self, a: Action) -> int:
        """The iteration of its stage's loop that ``a`` belongs to: ``F t`` → t; ``B``/``U`` of batch
        t → t + d; ``W t`` closes iteration t + d − 1 (``ddg`` waits at the end of an iteration)."""
        d = self.delay(a.stage)
        return {"F": a.batch, "B": a.batch + d, "U": a.batch + d, "W": a.batch + d - 1}[a.kind]

    def needs(self, a: Action) -> tuple[Message, ...]:
        """:func:`needs` in this schedule (its K and M)."""
        return needs(a, self.stages, self.micro_batches)

    def sends(self, a: Action) -> Message | None:
        """:func:`sends` in this schedule (its K)."""
        return sends(a, self.stages)

    def received(self, stage: int) -> list[Message]:
        """The messages ``stage`` receives, in the order its actions consume them."""
        return [m for a in self.actions[stage] if a.kind in "FB" for m in self.needs(a)]

    @cached_property
    def _consumed(self) -> frozenset[Message]:
        return frozenset(m for k in range(self.stages) for m in self.received(k))

    def delivered(self, a: Action) -> Message | None:
        """What ``a`` sends that its receiver consumes: :meth:`sends`, less the error gradients of
        batches the receiver never backprops (a run of N iterations does not drain the pipeline)."""
        msg = self.sends(a)
        return msg if msg in self._consumed else None

    def __str__(self) -> str:
        return "\n".join(f"stage {k}: " + " ".join(map(repr, acts)) for k, acts in enumerate(self.actions))


def check_schedule_args(name: str, stages: int, iterations: int, micro_batches: int = 1) -> None:
    """Raise :class:`UserError` naming the bad argument."""
    spec = get_schedule(name)
    for key, value in (("stages", stages), ("iterations", iterations), ("micro-batches", micro_batches)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{key} must be an integer >= 1, got {value!r}")
    if micro_batches > 1 and not spec.micro_batched:
        raise UserError(
            f"schedule '{name}' takes no micro-batches (got {micro_batches}); "
            f"only {choices(MICRO_SCHEDULES)} split a batch into micro-batches"
        )


def make_schedule(name: str, stages: int, iterations: int, micro_batches: int = 1) -> Schedule:
    """Action lists of schedule ``name`` for K = ``stages`` and N = ``iterations``."""
    check_schedule_args(name, stages, iterations, micro_batches)
    spec = get_schedule(name)
    acts = tuple(tuple(spec.stage_actions(k, stages, iterations, micro_batches)) for k in range(stages))
    return Schedule(name, stages, iterations, micro_batches, acts)


def resolve(schedule: Schedule | str, stages: int, iterations: int, micro_batches: int = 1) -> Schedule:
    """The schedule a caller passed, built from its name only at the edge: a :class:`Schedule`
    is used as it is (it must have ``stages`` stages and ``micro_batches`` micro-batches), a
    name is built once with ``iterations``."""
    if isinstance(schedule, str):
        return make_schedule(schedule, stages, iterations, micro_batches)
    if schedule.stages != stages or schedule.micro_batches != micro_batches:
        raise ValueError(f"schedule '{schedule.name}' has K={schedule.stages}, M={schedule.micro_batches}; "
                         f"expected K={stages}, M={micro_batches}")
    return schedule

