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

**Replicated stages** (``replicas``, ``ddgsim.replicas``): stage k runs as D_k
:class:`StageWorker` s, each on its own copy of the module and its shard of every
(micro-)batch; the replicas of a stage execute each action together. What crosses a
boundary is kept whole (the replicas' outputs concatenated in sample order) and each
receiving replica takes its shard: the same values the distributed runner's pieces carry.
The last stage's replicas scale their shard's mean loss by its share of the batch (:func:`loss_share`);
before ``U`` the stage's weight gradients are summed in replica order 0..D-1 and the
same sum is given to every replica, so their weights stay identical. A batch's loss is
the sum of the replicas' losses, in replica order.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ddgsim.execute.stage import Applied, LossFn, OptimConfig, StageWorker
from ddgsim.replicas import shard
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
    replica_weights: list[list[Tensor]] = field(default_factory=list)
    """``replica_weights[k][r]``: replica r of stage k's final flat parameters (``weights`` holds
    replica 0's)."""


def micro_slices(n: int, micro_batches: int) -> list[slice]:
    """Split a batch of n samples into ``micro_batches`` contiguous slices (torch.tensor_split sizes)."""
    base, extra = divmod(n, micro_batches)
    out, start = [], 0
    for m in range(micro_batches):
        size = base + (1 if m < extra else 0)
        out.append(slice(start, start + size))
        start += size
    return out


def loss_share(shard_size: int, batch_size: int) -> float:
    """Weight of one shard's mean loss in its batch's loss: its share of the batch's samples
    (1 for the whole batch; shards may differ by a sample, :func:`ddgsim.replicas.shard`), so the
    weighted means add up to the batch's mean loss (shared by both executors)."""
    return 1.0 if shard_size == batch_size else shard_size / batch_size


def sum_in_order(parts: Sequence[Sequence[Tensor]]) -> list[Tensor]:
    """Element-wise sum of the replicas' gradient lists, added in replica order 0..D-1."""
    total = list(parts[0])
    for more in parts[1:]:
        total = [a + b for a, b in zip(total, more, strict=True)]
    return total


def make_worker(module: nn.Module, k: int, k_total: int, schedule: Schedule, loss_fn: LossFn, optim: OptimConfig,
                *, record: bool = False, seed: int = 0) -> StageWorker:
    """Stage k's :class:`StageWorker` (any of its replicas), with the schedule's delay and micro-batch count."""
    return StageWorker(
        module, index=k, num_stages=k_total, delay=schedule.delay(k), optim=optim,
        loss_fn=loss_fn if k == k_total - 1 else None,
        micro_batches=schedule.micro_batches, record=record, seed=seed,
    )


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
    replicas: Sequence[int] | None = None,
    every_iteration: bool = True,
) -> EngineResult:
    """Execute ``schedule`` on ``stages`` in this process and return weights, updates, losses.

    ``every_iteration=False`` keeps a copy of the weights only at the start and the end
    (``weights[t]`` of the iterations between refer to the initial ones): long runs (pilots,
    thousands of steps) would otherwise hold a copy of the model per iteration.

    ``batch_fn(t)`` gives the batch ``(x, y)`` entering at iteration t; stage 0 sees
    ``x``, the last stage ``y``. With micro-batches, both are cut with
    :func:`micro_slices` and each micro-batch's loss is weighted by its share.
    ``seed`` seeds each stage's private RNG (as the distributed runner's ``--seed``);
    ``on_action(k, action, workers)`` is called after every action (tests, memory probes).
    Each sweep runs every stage as far as it can; ``one_per_round`` runs at most one action
    per stage per sweep instead (another interleaving: the numerics do not depend on it).
    For bit-identity with the distributed runner use the same torch thread count (1).
    ``replicas`` (D_k per stage, default all 1) runs replicated stages (module docstring);
    ``on_action`` and ``applied`` then see replica 0's workers.
    """
    k_total = len(stages)
    if schedule.stages != k_total:
        raise ValueError(f"schedule has {schedule.stages} stages but {k_total} modules were given")
    reps = list(replicas) if replicas is not None else [1] * k_total
    if len(reps) != k_total or min(reps) < 1:
        raise ValueError(f"replicas {reps} do not give every one of the {k_total} stages at least one replica")
    n_iter = schedule.iterations
    group_of = [
        [make_worker(stages[k] if r == 0 else copy.deepcopy(stages[k]), k, k_total, schedule, loss_fn, optim,
                     record=record, seed=seed) for r in range(reps[k])]
        for k in range(k_total)
    ]
    workers = [g[0] for g in group_of]
    arrived: dict[Message, Tensor] = {}
    batches: dict[int, tuple[Tensor, Tensor]] = {}
    labels: dict[tuple[int, int], tuple[Tensor, int, int]] = {}
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

    def shards(whole: Tensor, d: int) -> list[Tensor]:
        return [whole[slice(*shard(len(whole), d, r))] for r in range(d)]

    def whole(parts: list[Tensor | None]) -> Tensor | None:
        if parts[0] is None:
            return None
        return parts[0] if len(parts) == 1 else torch.cat([p for p in parts if p is not None])

    def run(k: int, a: Action) -> None:
        group = group_of[k]
        d = len(group)
        out: Tensor | None = None
        if a.kind == "F":
            if k == 0:
                x, y = batch(a.batch)
                sl = micro_slices(len(x), schedule.micro_batches)[a.micro]
                xin = x[sl]
                labels[(a.batch, a.micro)] = (y[sl], sl.stop - sl.start, len(x))
            else:
                (msg,) = schedule.needs(a)
                xin = arrived.pop(msg)
            y_m, _, n_batch = labels[(a.batch, a.micro)]
            last = k == k_total - 1
            ys = shards(y_m, d)
            out = whole([w.forward(a.batch, xs, ys[r] if last else None, micro=a.micro,
                                   weight=loss_share(len(ys[r]), n_batch) if last else 1.0)
                         for r, (w, xs) in enumerate(zip(group, shards(xin, d), strict=True))])
        elif a.kind == "B":
            g = arrived.pop(schedule.needs(a)[0]) if k < k_total - 1 else None
            gs: list[Tensor | None] = [None] * d if g is None else list(shards(g, d))
            out = whole([w.backward(a.batch, gr, micro=a.micro) for w, gr in zip(group, gs, strict=True)])
        elif a.kind == "U":
            if d > 1:
                total = sum_in_order([w.grads[a.batch] for w in group])
                for w in group:
                    w.grads[a.batch] = [g.clone() for g in total]
            for w in group:
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
                        if every_iteration or t == n_iter:
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
    nan = float("nan")
    losses = [sum((w.losses.get(t, nan) for w in group_of[-1]), 0.0) if len(group_of[-1]) > 1
              else workers[-1].losses.get(t, nan) for t in range(n_iter)]
    return EngineResult(
        weights=[[w for w in row if w is not None] for row in weights],
        applied=[list(w.applied) for w in workers],
        losses=losses,
        replica_weights=[[w.flat_weights() for w in g] for g in group_of],
    )
