"""Closed forms of the steady-state period of ``ddg-pipelined``, ``ddg`` and ``bp`` (the first of
the three timing models: closed forms, the max-plus recursion, the SimPy discrete-event model).

The steady state of every schedule here is a max-plus linear system, so its period
is the largest mean weight of a cycle of its dependency graph (durations on the
nodes, transfers on the edges). With f_k, b_k, u_k the forward, backward and update
time of stage k on its device (u_k includes the stage's all-reduce among its replicas,
``Costs.allreduce_ms``; f_k, b_k are one replica's shard), and a_k, g_k the activation and gradient transfer
time across boundary k (stage k → k+1, summed over the route's hops):

* ``ddg-pipelined`` — a cycle leaves stage k with a forward, goes down to stage j,
  comes back with backwards and closes at stage k's update; it spans j−k+1
  iterations (stage k backprops batch t at iteration t+K−1−k)::

      P = max over k ≤ j of [u_k + Σ_{i=k..j}(f_i + b_i) + Σ_{i=k..j-1}(a_i + g_i)] / (j−k+1)

* ``ddg`` (the authors' order) — stage k waits, before its next forward, for the
  gradient stage k+1 sends in the same iteration, so neighbours are coupled::

      P = max( max_k f_k + b_k + u_k,  max_{k<K-1} f_k + a_k + f_{k+1} + b_{k+1} + g_k )

* ``bp`` — the whole round trip, closed by a stage's update (``max_plus.bp_period_closed_form``);
  with tails, a trip from stage k may turn back at any stage m ≥ k (F_m → B_m waits for F_m's
  tail), the ddg-pipelined window without the division::

      P = max over k ≤ m of  u_k + Σ_{i=k..m}(f_i + b_i) + Σ_{i=k..m-1}(a_i + g_i) + tails

With the executor's overheads (:mod:`ddgsim.predict.overheads`) every action has a tail, host
time after its message leaves: a cycle's step from one action to the next on the same stage
adds the tail of the first (for ``ddg-pipelined`` and ``bp``: F→B at the stage the cycle turns at,
B→U and U→F at its first; ``ddg``'s pair: F→B on stage k+1), a message step does not.

In all three, each link direction carries one message per iteration, so also
``P ≥`` the longest single hop time. These closed forms agree with the max-plus
recursion of :mod:`ddgsim.predict.max_plus` and with the SimPy model (property-tested).

The planner's exact search (:mod:`ddgsim.plan.search`) bisects on these.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ddgsim.predict import max_plus
from ddgsim.schedule import SCHEDULES, Cycle, ScheduleKind

CLOSED_FORM: tuple[ScheduleKind, ...] = tuple(k for k in ScheduleKind if k.closed_form is not None)
"""Schedules whose period has a closed form (a :class:`~ddgsim.schedule.Cycle` shape in the registry)."""


@dataclass(frozen=True)
class StageCosts:
    """Per-stage durations of S splits (arrays of shape (S, K) and (S, K-1))."""

    f: np.ndarray
    b: np.ndarray
    u: np.ndarray
    a: np.ndarray
    """Activation transfer across boundary k, all hops."""
    g: np.ndarray
    """Gradient transfer across boundary k, all hops."""
    hop_max: np.ndarray
    """(S,) the longest single hop time (either direction) of any boundary."""
    tails: np.ndarray | None = None
    """(K, 3): the tail of one F, B, U of each stage (``Costs.tail_ms``); ``None``: zeros."""

    def tail(self, kind: int) -> np.ndarray:
        """(1, K): the tail of kind 0 = F, 1 = B, 2 = U of every stage (zeros without tails)."""
        K = self.f.shape[1]
        return np.zeros((1, K)) if self.tails is None else self.tails[None, :, kind]


def stage_costs(costs: max_plus.Costs) -> StageCosts:
    """Collapse the recursion's cost arrays to what the closed forms need (M = 1)."""
    S = costs.forward_ms.shape[0]
    hop = np.concatenate([costs.act_hop_ms.reshape(S, -1), costs.grad_hop_ms.reshape(S, -1)], axis=1)
    return StageCosts(
        f=costs.forward_ms, b=costs.backward_ms, u=costs.u_ms,
        a=costs.act_hop_ms.sum(axis=2), g=costs.grad_hop_ms.sum(axis=2),
        hop_max=hop.max(axis=1) if hop.size else np.zeros(S), tails=costs.tail_ms,
    )


def closed_form_period(schedule: str, c: StageCosts) -> np.ndarray:
    """Steady-state period (S,) of ``ddg-pipelined``, ``ddg`` or ``bp`` (module docstring): the formula
    of the schedule's cycle shape (:attr:`ddgsim.schedule.ScheduleSpec.closed_form`)."""
    cycle = ScheduleKind(schedule).closed_form if schedule in SCHEDULES else None
    S, K = c.f.shape
    work = c.f + c.b
    # A cycle's same-stage steps add the tail of the action they leave (F→B at the turning stage,
    # B→U and U→F at the closing one); its message steps do not (the message leaves before it).
    tf, tb, tu = c.tail(0), c.tail(1), c.tail(2)
    close = c.u + tb + tu
    if cycle in (Cycle.WINDOW_MEAN, Cycle.ROUND_TRIP):
        # Window [k, j]: u_k + Σ_{i=k..j} work_i + Σ_{i=k..j-1} comm_i = u_k + W[j+1] − W[k] + C[j] − C[k],
        # with W, C the prefix sums of work and comm (one vectorised row per k), + the tails.
        # ddg-pipelined: the window's mean over its j − k + 1 stages. bp: the window itself, a round
        # trip from stage k turning back at stage j (F_j → B_j waits for F_j's tail): at j = K−1 the
        # whole trip, earlier where a tail outlasts the trip beyond j.
        best = np.zeros(S)
        comm = np.concatenate([c.a + c.g, np.zeros((S, 1))], axis=1)
        W = np.concatenate([np.zeros((S, 1)), np.cumsum(work, axis=1)], axis=1)
        C = np.concatenate([np.zeros((S, 1)), np.cumsum(comm, axis=1)], axis=1)
        for k in range(K):
            j = np.arange(k, K)
            total = close[:, k, None] + tf[:, j] + W[:, j + 1] - W[:, k, None] + C[:, j] - C[:, k, None]
            if cycle is Cycle.WINDOW_MEAN:
                total = total / (j - k + 1)
            best = np.maximum(best, total.max(axis=1))
    elif cycle is Cycle.NEIGHBOURS:
        best = np.max(work + close + tf, axis=1)
        if K > 1:
            pair = c.f[:, :-1] + c.a + work[:, 1:] + tf[:, 1:] + c.g
            best = np.maximum(best, pair.max(axis=1))
    else:
        raise ValueError(f"no closed form for schedule '{schedule}'")
    return np.asarray(np.maximum(best, c.hop_max))
