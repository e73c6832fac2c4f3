"""The one validator of a schedule's invariants (:func:`validate`), with the zero-duration run
(:func:`execution_order`) and the observed staleness (:func:`staleness_of`) it checks with."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ddgsim.errors import choices
from ddgsim.schedule.actions import KINDS, Action, needs
from ddgsim.schedule.lists import Schedule


class ScheduleError(ValueError):
    """A schedule breaks an invariant; ``grid`` shows where (``<-- ERROR HERE``)."""

    def __init__(self, message: str, grid: str) -> None:
        super().__init__(f"{message}\n{grid}")
        self.message = message
        self.grid = grid


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
