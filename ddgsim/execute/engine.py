"""Run every stage's action list in one process: the reference executor for tests.

The engine interleaves the K per-stage action lists of a
:class:`ddgsim.schedule.Schedule` in one process, with the schedule's own
dependencies (:meth:`~ddgsim.schedule.Schedule.needs`: an ``F`` waits for the
previous stage's activation, a ``B`` for the next stage's error gradient, a ``W``
for the error gradients of every micro-batch of its batch; :meth:`~ddgsim.schedule.
Schedule.sends`: what an action hands on). It repeatedly sweeps the stages in order
and runs each stage's next action as soon as what it needs is there, so every stage
executes its own list in order — which is all the numerics depend on: the result
equals the distributed runner's bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from ddgsim.execute.stage import Applied, LossFn, OptimConfig, StageWorker
from ddgsim.schedule import Action, Message, Schedule

BatchFn = Callable[[int], tuple[Tensor, Tensor]]


class DeadlockError(RuntimeError):
    """No stage can make progress: the schedule's dependencies cannot be met."""


@dataclass(kw_only=True)
class EngineResult:
    """What an in-process run produced."""

    weights: list[list[Tensor]]
    """``weights[t][k]``: stage k's flat parameters after t iterations (t = 0..N; w^0 initial)."""
    applied: list[list[Applied]]
    """Per stage, every update in order (grads and stashed weights when ``record=True``)."""
    losses: list[float]
    """Loss of every batch the last stage forwarded, by batch index (NaN if never forwarded)."""


def micro_slices(n: int, micro_batches: int) -> list[slice]:
    """Split a batch of n samples into ``micro_batches`` contiguous slices (torch.tensor_split sizes)."""
    base, extra = divmod(n, micro_batches)
    out, start = [], 0
    for m in range(micro_batches):
        size = base + (1 if m < extra else 0)
        out.append(slice(start, start + size))
        start += size
    return out


def make_workers(stages: Sequence[nn.Module], schedule: Schedule, loss_fn: LossFn, optim: OptimConfig,
                 *, record: bool = False, seed: int = 0) -> list[StageWorker]:
    """One :class:`StageWorker` per stage, with the schedule's delay and micro-batch count."""
    k_total = len(stages)
    return [
        StageWorker(
            mod, index=k, num_stages=k_total, delay=schedule.delay(k), optim=optim,
            loss_fn=loss_fn if k == k_total - 1 else None,
            micro_batches=schedule.micro_batches, record=record, seed=seed,
        )
        for k, mod in enumerate(stages)
    ]


def run_inprocess(
    stages: Sequence[nn.Module],
    schedule: Schedule,
    batch_fn: BatchFn,
    loss_fn: LossFn,
    optim: OptimConfig,
    record: bool = False,
    *,
    seed: int = 0,
    on_action: Callable[[int, Any, list[StageWorker]], None] | None = None,
    one_per_round: bool = False,
) -> EngineResult:
    """Execute ``schedule`` on ``stages`` in this process and return weights, updates, losses.

    ``batch_fn(t)`` gives the batch ``(x, y)`` entering at iteration t; stage 0 sees
    ``x``, the last stage ``y``. With micro-batches, both are cut with
    :func:`micro_slices` and each micro-batch's loss is weighted by its share.
    ``seed`` seeds each stage's private RNG (as the distributed runner's ``--seed``);
    ``on_action(k, action, workers)`` is called after every action (tests, memory probes).
    Each sweep runs every stage as far as it can; ``one_per_round`` runs at most one action
    per stage per sweep instead (another interleaving: the numerics do not depend on it).
    For bit-identity with the distributed runner use the same torch thread count (1).
    """
    k_total = len(stages)
    if schedule.stages != k_total:
        raise ValueError(f"schedule has {schedule.stages} stages but {k_total} modules were given")
    n_iter = schedule.iterations
    workers = make_workers(stages, schedule, loss_fn, optim, record=record, seed=seed)
    arrived: dict[Message, Tensor] = {}
    batches: dict[int, tuple[Tensor, Tensor]] = {}
    labels: dict[tuple[int, int], tuple[Tensor, float]] = {}
    pos = [0] * k_total
    lists = [list(a) for a in schedule.actions]
    weights: list[list[Tensor | None]] = [[None] * k_total for _ in range(n_iter + 1)]
    for k, w in enumerate(workers):
        weights[0][k] = w.flat_weights()

    def batch(t: int) -> tuple[Tensor, Tensor]:
        if t not in batches:
            batches[t] = batch_fn(t)
        return batches[t]

    def ready(a: Action) -> bool:
        return all(msg in arrived for msg in schedule.needs(a))

    def run(k: int, a: Action) -> None:
        w = workers[k]
        if a.kind == "F":
            if k == 0:
                x, y = batch(a.batch)
                sl = micro_slices(len(x), schedule.micro_batches)[a.micro]
                xin = x[sl]
                labels[(a.batch, a.micro)] = (y[sl], (sl.stop - sl.start) / len(x))
            else:
                (msg,) = schedule.needs(a)
                xin = arrived.pop(msg)
            y_m, share = labels[(a.batch, a.micro)]
            out = w.forward(a.batch, xin, y_m if k == k_total - 1 else None, micro=a.micro,
                            weight=share if schedule.micro_batches > 1 else 1.0)
        elif a.kind == "B":
            g = arrived.pop(schedule.needs(a)[0]) if k < k_total - 1 else None
            out = w.backward(a.batch, g, micro=a.micro)
        elif a.kind == "U":
            w.update(a.batch)
        sent = schedule.delivered(a)
        if sent is not None:
            assert out is not None
            arrived[sent] = out
        # "W" only orders: the gradients stay queued for their B.

    while any(pos[k] < len(lists[k]) for k in range(k_total)):
        progressed = False
        for k in range(k_total):
            start = pos[k]
            while pos[k] < len(lists[k]) and ready(lists[k][pos[k]]) and not (one_per_round and pos[k] > start):
                a = lists[k][pos[k]]
                run(k, a)
                if on_action is not None:
                    on_action(k, a, workers)
                pos[k] += 1
                progressed = True
                it = schedule.iteration(a)
                nxt = lists[k][pos[k]] if pos[k] < len(lists[k]) else None
                upto = n_iter if nxt is None else schedule.iteration(nxt)
                if upto > it:
                    for t in range(it + 1, upto + 1):
                        weights[t][k] = workers[k].flat_weights()
        if not progressed:
            stuck = ", ".join(
                f"stage {k} at {lists[k][pos[k]]!r}" for k in range(k_total) if pos[k] < len(lists[k])
            )
            raise DeadlockError(f"no stage can progress: {stuck}")
    for t in range(n_iter + 1):
        for k in range(k_total):
            if weights[t][k] is None:
                weights[t][k] = weights[t - 1][k] if t else workers[k].flat_weights()
    last = workers[-1]
    losses = [last.losses.get(t, float("nan")) for t in range(n_iter)]
    return EngineResult(
        weights=[[w for w in row if w is not None] for row in weights],
        applied=[list(w.applied) for w in workers],
        losses=losses,
    )
