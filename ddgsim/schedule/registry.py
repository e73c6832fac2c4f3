"""The schedule registry: every schedule by name (:class:`ScheduleKind`), and its traits and order
(:class:`ScheduleSpec`, one subclass per family), found by :func:`get_schedule`. The only place
that knows the schedules' names; everything else asks a schedule's traits."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ddgsim.errors import UserError, choices
from ddgsim.schedule.actions import Action


class ScheduleKind(enum.StrEnum):
    """The schedules by name; a kind equals its name (``ScheduleKind.BP == "bp"``), so plan files and
    JSON hold the plain string. Its traits come from its registry entry (:func:`get_schedule`)."""

    BP = "bp"
    DDG = "ddg"
    DDG_PIPELINED = "ddg-pipelined"
    GPIPE = "gpipe"
    ONE_F_ONE_B = "1f1b"

    @property
    def spec(self) -> ScheduleSpec:
        """The registry entry of this kind."""
        return _REGISTRY[self]

    # The traits, read from the registry entry (their docstrings are ScheduleSpec's).
    @property
    def micro_batched(self) -> bool:
        return self.spec.micro_batched

    @property
    def delayed(self) -> bool:
        return self.spec.delayed

    @property
    def closed_form(self) -> Cycle | None:
        return self.spec.closed_form


class Cycle(enum.Enum):
    """The shape of the critical cycles of a schedule's steady state with one micro-batch: what its
    closed-form period maximises over (:mod:`ddgsim.predict.closed_form` has one formula per shape)."""

    ROUND_TRIP = "round-trip"
    """A stage's forward down to a turning stage and backwards back up, closed by its update (bp)."""
    WINDOW_MEAN = "window-mean"
    """The same windows, each spread over the j−k+1 iterations it spans (ddg-pipelined)."""
    NEIGHBOURS = "neighbours"
    """Each stage's own F+B+U, and a stage's wait for its neighbour's same-iteration gradient (ddg)."""


SCHEDULES: tuple[ScheduleKind, ...] = tuple(ScheduleKind)
DEFAULT_SCHEDULE = ScheduleKind.DDG_PIPELINED
"""What plan and simulate assume when no --schedule is given: DDG's updates without its coupling waits."""


@dataclass(frozen=True)
class Steady:
    """A schedule by name only, for models that need no action lists (the closed forms, the steady
    state's memory): a 600-stage list is millions of actions."""

    name: str
    micro_batches: int = 1

    @property
    def spec(self) -> ScheduleSpec:
        """The registry entry of :attr:`name` (:func:`get_schedule`)."""
        return get_schedule(self.name)


@dataclass(frozen=True)
class ScheduleSpec:
    """One schedule's traits and its order: the registry entry :func:`get_schedule` finds by name.
    Subclasses give the order (:meth:`stage_actions`) and the steady state's flights."""

    kind: ScheduleKind
    micro_batched: bool = False
    """It splits a batch into micro-batches (accepts M > 1; its actions carry micro indices)."""
    delayed: bool = False
    """Stage k applies gradients K−1−k iterations old (stale: DDG's updates)."""
    closed_form: Cycle | None = None
    """The shape of its steady state's critical cycles with one micro-batch; ``None``: no closed form."""
    in_turn: bool = False
    """Its stages take turns: one batch at a time, whole, so two stages never compute at once (but
    for a stage's update beside the backward of the stage before)."""

    @property
    def name(self) -> str:
        return str(self.kind)

    def delay(self, stage: int, stages: int) -> int:
        """Promised steady-state staleness of ``stage`` of ``stages``: K-1-k when delayed, else 0."""
        return stages - 1 - stage if self.delayed else 0

    def stage_actions(self, k: int, K: int, N: int, M: int) -> list[Action]:
        """Stage k's list for K stages, N iterations and M micro-batches."""
        raise NotImplementedError

    def steady_flight(self, k: int, K: int, M: int) -> tuple[float, int]:
        """Stage k's steady state: (batches in flight, micro-batches counting 1/M; older weight versions
        kept) — what walking its built list gives (``ddgsim.predict.memory.in_flight_and_versions``)."""
        raise NotImplementedError

    def steady_flights(self, K: int, M: int = 1) -> list[tuple[float, int]]:
        """:meth:`steady_flight` of every stage."""
        return [self.steady_flight(k, K, M) for k in range(K)]


@dataclass(frozen=True)
class BackProp(ScheduleSpec):
    """``bp``: F, B, U of each batch; the next batch starts after it fully finished."""

    closed_form: Cycle | None = Cycle.ROUND_TRIP
    in_turn: bool = True

    def stage_actions(self, k: int, K: int, N: int, M: int) -> list[Action]:
        return [Action(k, kind, t) for t in range(N) for kind in "FBU"]

    def steady_flight(self, k: int, K: int, M: int) -> tuple[float, int]:
        return 1.0, 0


@dataclass(frozen=True)
class Decoupled(ScheduleSpec):
    """``ddg`` (``waits``: the paper's order) and ``ddg-pipelined``: stage k backprops batch t−d at
    iteration t, d = K−1−k."""

    delayed: bool = True
    waits: bool = False
    """Block at the end of each iteration for the next stage's gradient (``ddg``)."""

    def stage_actions(self, k: int, K: int, N: int, M: int) -> list[Action]:
        d = K - 1 - k
        out: list[Action] = []
        for t in range(N):
            out.append(Action(k, "F", t))
            if t >= d:
                out += [Action(k, "B", t - d), Action(k, "U", t - d)]
            # ddg blocks at the end of its iteration t until stage k+1's iteration-t
            # gradient (batch t-d+1) is in, if this stage will ever backprop that batch.
            if self.waits and k < K - 1 and 0 <= t - d + 1 <= N - 1 - d:
                out.append(Action(k, "W", t - d + 1))
        return out

    def steady_flight(self, k: int, K: int, M: int) -> tuple[float, int]:
        return float(K - k), K - 1 - k  # its delay plus one batch in flight, its delay in older versions


@dataclass(frozen=True)
class GPipe(ScheduleSpec):
    """``gpipe``: every micro-batch forward, then every backward (last first), then the update."""

    micro_batched: bool = True

    def stage_actions(self, k: int, K: int, N: int, M: int) -> list[Action]:
        out: list[Action] = []
        for t in range(N):
            out += [Action(k, "F", t, m) for m in range(M)]
            out += [Action(k, "B", t, m) for m in reversed(range(M))]
            out.append(Action(k, "U", t))
        return out

    def steady_flight(self, k: int, K: int, M: int) -> tuple[float, int]:
        return 1.0, 0


@dataclass(frozen=True)
class OneFOneB(ScheduleSpec):
    """``1f1b`` (PipeDream-flush): min(K−1−k, M) warm-up forwards, then one forward one backward."""

    micro_batched: bool = True

    def stage_actions(self, k: int, K: int, N: int, M: int) -> list[Action]:
        warm = min(K - 1 - k, M)
        out: list[Action] = []
        for t in range(N):
            out += [Action(k, "F", t, m) for m in range(warm)]
            for i in range(M - warm):
                out += [Action(k, "F", t, warm + i), Action(k, "B", t, i)]
            out += [Action(k, "B", t, m) for m in range(M - warm, M)]
            out.append(Action(k, "U", t))
        return out

    def steady_flight(self, k: int, K: int, M: int) -> tuple[float, int]:
        return min(K - k, M) / M, 0


_REGISTRY: dict[ScheduleKind, ScheduleSpec] = {spec.kind: spec for spec in (
    BackProp(ScheduleKind.BP),
    Decoupled(ScheduleKind.DDG, closed_form=Cycle.NEIGHBOURS, waits=True),
    Decoupled(ScheduleKind.DDG_PIPELINED, closed_form=Cycle.WINDOW_MEAN),
    GPipe(ScheduleKind.GPIPE),
    OneFOneB(ScheduleKind.ONE_F_ONE_B),
)}
MICRO_SCHEDULES = tuple(k for k in ScheduleKind if k.micro_batched)
"""Schedules that accept more than one micro-batch."""


def get_schedule(name: str) -> ScheduleSpec:
    """The registry entry of schedule ``name``; :class:`UserError` listing the valid names otherwise."""
    if name not in SCHEDULES:
        raise UserError(f"unknown schedule '{name}' (choose from {choices(SCHEDULES)})")
    return _REGISTRY[ScheduleKind(name)]

