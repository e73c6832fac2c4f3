"""Schedules as data: per-stage action lists, and the one validator of their invariants.

Pure Python, no SimPy and no torch: the simulator adds durations to these lists and
the executor runs the very same lists. Indices are 0-based; the delay of stage k
under DDG is ``d = K-1-k``.

Per-stage lists for K = 2 stages, N = 3 iterations (``repr`` of each action)::

    schedule        stage 0 (d=1 for ddg)                 stage 1 (d=0)
    bp              0F0 0B0 0U0 0F1 0B1 0U1 0F2 0B2 0U2    1F0 1B0 1U0 1F1 1B1 1U1 ...
    ddg             0F0 0W0 0F1 0B0 0U0 0W1 0F2 0B1 0U1    1F0 1B0 1U0 1F1 1B1 1U1 1F2 1B2 1U2
    ddg-pipelined   0F0 0F1 0B0 0U0 0F2 0B1 0U1            same as ddg
    gpipe (M=2)     0F0 0F0.1 0B0.1 0B0 0U0 ...            1F0 1F0.1 1B0.1 1B0 1U0 ...
    1f1b  (M=2)     0F0 0F0.1 0B0 0B0.1 0U0 ...            1F0 1B0 1F0.1 1B0.1 1U0 ...

Dependencies between stages are defined once, here — :func:`needs` (the messages an
action waits for) and :func:`sends` (the message it sends when it ends); the
validator, the SimPy model, the max-plus model and the executors all derive their
waits and messages from these two functions:

* ``F k t m`` (k > 0) needs the activation that ``F k-1 t m`` sends after it ends.
* ``B k t m`` (k < K-1) needs the error gradient that ``B k+1 t m`` sends after it
  ends; on the last stage it follows its own ``F K-1 t m`` (the loss is computed there).
* ``W k t`` blocks stage k until the error gradients of batch t from stage k+1 have
  arrived — of *every* micro-batch of t (no compute; the later ``B k t m`` use them).
* ``U k t`` applies the gradient of batch t (all its micro-batches) to stage k; a
  forward uses the weights produced by every ``U`` before it in its stage's list,
  and a backward uses the weights its forward used (weight stashing).

In a run of N iterations stage k backprops batches ``0..N-1-d`` only (no drain).
Observed staleness of batch t on stage k = number of ``U`` between ``F k t`` and
``U k t`` in the stage's list. Under ``ddg``/``ddg-pipelined`` it is ``min(t, d)``:
the first d batches (warm-up) see fewer updates; every later batch sees exactly d.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

from ddgsim.errors import UserError, choices


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
KINDS = ("F", "B", "U", "W")
RECEIVE_WINDOW = 2
"""Receives of one kind (activations, error gradients) a stage keeps posted ahead of the one it
waits for, per incoming link: the executor's mailboxes, and the memory model's buffers."""

_ACTION = re.compile(r"^(\d+)([FBUW])(\d+)(?:\.(\d+))?$")


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


class Action(NamedTuple):
    """One step of one stage: ``0F3`` = stage 0 forwards batch 3; ``1B2.1`` = micro-batch 1."""

    stage: int
    """0-based stage index."""
    kind: str
    """``F`` forward, ``B`` backward, ``U`` update, ``W`` wait for an error gradient."""
    batch: int
    """The batch (iteration) index t; for ``U``: the batch whose gradient is applied."""
    micro: int = 0
    """Micro-batch index (gpipe, 1f1b); 0 otherwise."""

    def __repr__(self) -> str:
        tail = f".{self.micro}" if self.micro else ""
        return f"{self.stage}{self.kind}{self.batch}{tail}"

    @classmethod
    def from_str(cls, text: str) -> Action:
        """Parse ``repr`` output back: ``Action.from_str(repr(a)) == a``."""
        m = _ACTION.match(text.strip())
        if not m:
            raise ValueError(f"not an action: {text!r} (expected e.g. '0F3', '1B2.1', '0U1', '2W4')")
        return cls(int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4) or 0))


class Message(NamedTuple):
    """What crosses a stage boundary: the activation ``F`` sends down, or the error gradient
    ``B`` sends back, of one (micro-)batch."""

    kind: str
    """``act`` (activation, stage k → k+1) or ``grad`` (error gradient, stage k → k−1)."""
    src: int
    """Sending stage."""
    dst: int
    """Receiving stage."""
    batch: int
    micro: int = 0

    @property
    def boundary(self) -> int:
        """The boundary crossed: b between stages b and b+1."""
        return min(self.src, self.dst)

    @property
    def producer(self) -> Action:
        """The action that sends it when it ends."""
        return Action(self.src, "F" if self.kind == "act" else "B", self.batch, self.micro)

    @property
    def consumer(self) -> Action:
        """The action that uses its data (a ``W`` may wait for it earlier)."""
        return Action(self.dst, "F" if self.kind == "act" else "B", self.batch, self.micro)


def sends(a: Action, stages: int) -> Message | None:
    """The message ``a`` sends when it ends (``None``: it sends nothing)."""
    k, t, m = a.stage, a.batch, a.micro
    if a.kind == "F" and k < stages - 1:
        return Message("act", k, k + 1, t, m)
    if a.kind == "B" and k > 0:
        return Message("grad", k, k - 1, t, m)
    return None


def needs(a: Action, stages: int, micro_batches: int) -> tuple[Message, ...]:
    """The messages that must have arrived before ``a`` may start."""
    k, t, m = a.stage, a.batch, a.micro
    if a.kind == "F" and k > 0:
        return (Message("act", k - 1, k, t, m),)
    if a.kind == "B" and k < stages - 1:
        return (Message("grad", k + 1, k, t, m),)
    if a.kind == "W" and k < stages - 1:
        return tuple(Message("grad", k + 1, k, t, j) for j in range(micro_batches))
    return ()


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


class ScheduleError(ValueError):
    """A schedule breaks an invariant; ``grid`` shows where (``<-- ERROR HERE``)."""

    def __init__(self, message: str, grid: str) -> None:
        super().__init__(f"{message}\n{grid}")
        self.message = message
        self.grid = grid


# ---------------------------------------------------------------- generation


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


# ---------------------------------------------------------------- validation


def staleness_of(order: Iterable[Action]) -> dict[int, int]:
    """Observed staleness per updated batch: ``U`` actions between its first ``F`` and its ``U``."""
    updates = 0
    at_forward: dict[int, int] = {}
    out: dict[int, int] = {}
    for a in order:
        if a.kind == "F":
            at_forward.setdefault(a.batch, updates)
        elif a.kind == "U":
            if a.batch in at_forward:
                out[a.batch] = updates - at_forward[a.batch]
            updates += 1
    return out


def _grid(schedule: Schedule, marks: Sequence[tuple[int, int]], context: int = 4) -> str:
    """Step-by-stage table of the action lists, the marked cells flagged ``<-- ERROR HERE``."""
    acts = schedule.actions
    steps = max((len(a) for a in acts), default=0)
    rows = {i for _, i in marks}
    lo = max(0, min(rows, default=0) - context)
    hi = min(steps, max(rows, default=0) + context + 1)
    width = max([7] + [len(repr(a)) + 2 for stage in acts for a in stage])
    head = "step  " + " ".join(f"{'stage ' + str(k):>{width}}" for k in range(len(acts)))
    lines = [head]
    if lo > 0:
        lines.append("  ...")
    for i in range(lo, hi):
        cells = []
        for k, stage in enumerate(acts):
            text = repr(stage[i]) if i < len(stage) else ""
            if (k, i) in marks:
                text = f"*{text or '?'}*"
            cells.append(f"{text:>{width}}")
        flag = "  <-- ERROR HERE" if i in rows else ""
        lines.append(f"{i:>4}  " + " ".join(cells) + flag)
    if hi < steps:
        lines.append("  ...")
    return "\n".join(lines)


def _fail(schedule: Schedule, message: str, marks: Sequence[tuple[int, int]]) -> ScheduleError:
    return ScheduleError(f"schedule '{schedule.name}' is invalid: {message}", _grid(schedule, marks))


def _deps(a: Action, K: int, M: int) -> list[Action]:
    """Actions on other stages that must have ended before ``a`` (the senders of its :func:`needs`)."""
    return [msg.producer for msg in needs(a, K, M)]


def execution_order(schedule: Schedule) -> tuple[list[Action], list[int]]:
    """Run the lists with zero durations until done or stuck.

    Returns the actions in a dependency-respecting order and the index in each stage's
    list where it stopped (equal to the list length when the stage finished).
    """
    K, M = schedule.stages, schedule.micro_batches
    ptr = [0] * K
    done: set[Action] = set()
    order: list[Action] = []
    progress = True
    while progress:
        progress = False
        for k, stage in enumerate(schedule.actions):
            while ptr[k] < len(stage) and all(d in done for d in _deps(stage[ptr[k]], K, M)):
                done.add(stage[ptr[k]])
                order.append(stage[ptr[k]])
                ptr[k] += 1
                progress = True
    return order, ptr


def validate(schedule: Schedule) -> None:
    """Check every invariant; raise :class:`ScheduleError` with a grid at the first broken one.

    Rules: (1) actions are well formed and on their own stage; (2) on each stage every
    forward runs once and before its backward, every backward once; (3) every transfer
    an action needs is produced by some action; (4) each ``U`` follows all backwards of
    its batch on that stage, and every backpropagated batch is updated exactly once;
    (5) no deadlock (zero-duration execution finishes); (6) observed staleness never
    exceeds ``delay(k)`` and equals it for batches ``t >= delay(k)`` (warm-up batches
    may see fewer updates).
    """
    K, N, M = schedule.stages, schedule.iterations, schedule.micro_batches
    acts = schedule.actions
    if len(acts) != K:
        raise ScheduleError(f"schedule '{schedule.name}' has {len(acts)} stage lists for {K} stages", "")
    present = {a for stage in acts for a in stage}
    for k, stage in enumerate(acts):
        seen_f: set[tuple[int, int]] = set()
        seen_b: set[tuple[int, int]] = set()
        backs: dict[int, set[int]] = {}
        updated: set[int] = set()
        for i, a in enumerate(stage):
            bad = None
            if a.stage != k:
                bad = f"{a!r} is in the list of stage {k}"
            elif a.kind not in KINDS:
                bad = f"{a!r} has unknown kind {a.kind!r} (kinds: {choices(KINDS)})"
            elif not 0 <= a.batch < N or not 0 <= a.micro < M or (a.kind in "UW" and a.micro):
                bad = f"{a!r} is out of range (batches 0..{N - 1}, micro-batches 0..{M - 1})"
            elif a.kind == "F" and (a.batch, a.micro) in seen_f:
                bad = f"{a!r} forwards the same batch twice"
            elif a.kind == "B" and (a.batch, a.micro) in seen_b:
                bad = f"{a!r} backprops the same batch twice"
            elif a.kind == "B" and (a.batch, a.micro) not in seen_f:
                bad = f"{a!r} runs before its forward {Action(k, 'F', a.batch, a.micro)!r}"
            elif a.kind == "U" and (a.batch in updated or len(backs.get(a.batch, ())) != M):
                bad = (f"{a!r} applies batch {a.batch} twice" if a.batch in updated else
                       f"{a!r} applies batch {a.batch} before all its {M} backward(s) ran on stage {k}")
            elif a.kind == "W" and k == K - 1:
                bad = f"{a!r}: the last stage has no next stage to wait for"
            else:
                missing = [d for d in _deps(a, K, M) if d not in present]
                if missing:
                    bad = f"{a!r} needs {missing[0]!r}, which no stage runs"
            if bad:
                raise _fail(schedule, bad, [(k, i)])
            if a.kind == "F":
                seen_f.add((a.batch, a.micro))
            elif a.kind == "B":
                seen_b.add((a.batch, a.micro))
                backs.setdefault(a.batch, set()).add(a.micro)
            elif a.kind == "U":
                updated.add(a.batch)
        never = sorted(set(backs) - updated)
        if never:
            i = max(j for j, a in enumerate(stage) if a.kind == "B" and a.batch == never[0])
            raise _fail(schedule, f"stage {k} backprops batch {never[0]} but never applies it (no U)", [(k, i)])
    _order, ptr = execution_order(schedule)
    stuck = [(k, ptr[k]) for k in range(K) if ptr[k] < len(acts[k])]
    if stuck:
        waits = ", ".join(
            f"{acts[k][i]!r} waits for {next(d for d in _deps(acts[k][i], K, M) if d.stage != k)!r}"
            for k, i in stuck
        )
        raise _fail(schedule, f"deadlock: {waits}", stuck)
    for k, stage in enumerate(acts):
        d = schedule.delay(k)
        for t, seen in staleness_of(stage).items():
            if seen > d or (t >= d and seen != d):
                i = stage.index(Action(k, "U", t))
                raise _fail(
                    schedule,
                    f"stage {k} applies batch {t} after {seen} update(s) since its forward; promised delay is {d}",
                    [(k, i)],
                )
