"""Peak memory per stage for a split and a schedule (a static byte count, no allocator model).

Per stage k, with units ``[start, end)``:

* parameters, gradients (same size) and ``optimizer_buffers`` copies for the
  optimizer state (SGD with momentum = 1 buffer, Adam = 2, plain SGD = 0);
* activations: what the stage holds per batch in flight, times the most batches in
  flight at once — forwarded but not yet backpropagated — counted by walking the stage's
  action list; a micro-batch counts 1/M of a batch. Per batch: the units'
  ``activation_bytes`` (what autograd saves) with every tensor counted once — a boundary
  tensor that one unit saves as its output and the next as its input
  (``saved_output_bytes``, ``saved_input_bytes``) is one storage — plus, on a stage
  k > 0, the received input when its first unit does not save it (the executor keeps
  it until the batch's backward);
* stashed weights: the most weight versions, other than the current one, that
  in-flight batches were forwarded with (the executor stashes them so a delayed
  backward uses the weights of its forward). Under DDG stage k keeps K-1-k copies;
* message buffers (/M): on a stage k > 0 the :data:`RECEIVE_WINDOW` receives of input
  activations the executor keeps posted and the error gradient it sends back; on a stage
  k < K-1 the receive window of error gradients and the activation it sends, unless its
  last unit saves that tensor (then it is already counted).

A profile without the saved-input/output fields (older ones) counts every boundary
tensor as if no unit shared it: an over-estimate, never an under-estimate.

With D_k replicas of stage k (:mod:`ddgsim.replicas`) the figures are per replica: its
activations and message buffers are those of its shard, 1/D_k of each (micro-)batch;
parameters, gradients, optimizer state and stashed weight versions are whole copies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ddgsim.profile.format import Profile
from ddgsim.replicas import shard_share
from ddgsim.schedule import RECEIVE_WINDOW, SCHEDULES, Action, Schedule, ScheduleKind, Steady

SGD_MOMENTUM_BUFFERS = 1
"""Optimizer state per parameter for SGD with momentum (the paper's optimizer)."""


@dataclass(frozen=True, kw_only=True)
class StageMemory:
    """Peak-memory breakdown of one stage, in bytes."""

    params: int
    """The stage's parameters."""
    grads: int
    """Their gradients (same size as the parameters)."""
    optimizer: int
    """Optimizer state (``optimizer_buffers`` × parameters)."""
    activations: int
    """Saved activations of the batches in flight at the peak."""
    stashed_weights: int
    """Older weight versions kept for delayed backwards."""
    buffers: int
    """Message buffers at the stage's boundaries: posted receives and sends in flight."""
    in_flight: float
    """Most batches in flight at once (micro-batches count 1/M)."""
    stashed_versions: int
    """Most older weight versions kept at once."""

    @property
    def total(self) -> int:
        return self.params + self.grads + self.optimizer + self.activations + self.stashed_weights + self.buffers


def in_flight_and_versions(actions: Sequence[Action], micro_batches: int) -> tuple[float, int]:
    """Walk one stage's list: (max batches in flight, max stashed weight versions).

    A batch is in flight from its forward to its backward (per micro-batch); it pins
    the weight version (number of ``U`` so far) its forward used.
    """
    version = 0
    live: dict[tuple[int, int], int] = {}
    pinned: dict[int, int] = {}  # weight version -> live micro-batches that pin it
    max_live = 0
    max_stash = 0

    def stashed() -> int:
        return len(pinned) - (1 if version in pinned else 0)

    for a in actions:
        if a.kind == "F":
            live[(a.batch, a.micro)] = version
            pinned[version] = pinned.get(version, 0) + 1
            max_live = max(max_live, len(live))
            max_stash = max(max_stash, stashed())
        elif a.kind == "B":
            v = live.pop((a.batch, a.micro), None)
            if v is not None:
                pinned[v] -= 1
                if not pinned[v]:
                    del pinned[v]
        elif a.kind == "U":
            version += 1
            max_stash = max(max_stash, stashed())
    return max_live / micro_batches, max_stash


def steady_flights(schedule: str, stages: int, micro_batches: int = 1) -> list[tuple[float, int]]:
    """:func:`in_flight_and_versions` of every stage of a schedule's steady state, without building it
    (:meth:`ddgsim.schedule.ScheduleSpec.steady_flight`): ``ddg``/``ddg-pipelined`` keep ``K−k`` batches
    in flight and ``K−1−k`` older versions on stage k (its delay plus one); ``1f1b`` ``min(K−k, M)``
    micro-batches; ``bp`` and ``gpipe`` one batch. (The walk over the built lists gives the same;
    property-tested.)"""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}")
    return ScheduleKind(schedule).spec.steady_flights(stages, micro_batches)


@dataclass(frozen=True)
class UnitBytes:
    """The per-unit and per-cut terms of the model, for a profile of n units (cuts 0..n)."""

    own: list[int]
    """``own[i]``: unit i's saved bytes less the tensor it shares with unit i−1 (a stage's
    activations per batch are the sum of ``own`` over its units, plus ``entry`` at its start)."""
    entry: list[int]
    """``entry[u]``: what a stage starting at unit u holds per batch besides ``own``: the shared
    tensor subtracted from ``own[u]`` (its input, which it saves), or else its received input."""
    message: list[int]
    """``message[c]``: bytes of the tensor crossing cut c (unit c−1's output; 0 at cut 0)."""
    unsaved_out: list[int]
    """``unsaved_out[c]``: of ``message[c]``, the bytes unit c−1 does not save (a sent
    activation its stage holds on top of its activations)."""


def unit_bytes(profile: Profile) -> UnitBytes:
    """:class:`UnitBytes` of ``profile`` (unknown saved-input/output fields count as not shared)."""
    units = profile.units
    s_in = [u.saved_input_bytes or 0 for u in units]
    s_out = [u.saved_output_bytes or 0 for u in units]
    shared = [0] + [min(s_out[i - 1], s_in[i]) for i in range(1, len(units))]
    message = [0] + [u.output_bytes for u in units]
    return UnitBytes(
        own=[u.activation_bytes - shared[i] for i, u in enumerate(units)],
        entry=[0] + [shared[i] + message[i] - s_in[i] for i in range(1, len(units))],
        message=message,
        unsaved_out=[0] + [u.output_bytes - s_out[i] for i, u in enumerate(units)],
    )


def message_buffers(in_bytes: Any, out_bytes: Any, out_unsaved: Any) -> Any:
    """Message buffers of one stage per (micro-)batch shard: the receive window and the sent
    error gradient on its input side (``in_bytes``; 0 on stage 0), the receive window and the
    sent activation not otherwise held on its output side (``out_bytes``, ``out_unsaved``; 0 on
    the last stage). Numbers or numpy arrays (the planner's tables)."""
    return (RECEIVE_WINDOW + 1) * in_bytes + RECEIVE_WINDOW * out_bytes + out_unsaved


def stage_memory(
    profile: Profile,
    ranges: Sequence[tuple[int, int]],
    schedule: Schedule | Steady,
    optimizer_buffers: int = SGD_MOMENTUM_BUFFERS,
    replicas: Sequence[int] | None = None,
) -> list[StageMemory]:
    """Peak-memory breakdown for each stage ``[start, end)`` of ``ranges`` (per replica with ``replicas``);
    a :class:`Steady` schedule takes the steady state's figures (:func:`steady_flights`)."""
    M = schedule.micro_batches
    K = len(ranges)
    D = list(replicas) if replicas is not None else [1] * K
    flights = (steady_flights(schedule.name, K, M) if isinstance(schedule, Steady)
               else [in_flight_and_versions(a, M) for a in schedule.actions])
    ub = unit_bytes(profile)
    out = []
    samples = profile.batch_size // M
    for k, (start, end) in enumerate(ranges):
        share = shard_share(samples, D[k])  # of a micro-batch: the largest shard's (1/D_k when equal)
        params = sum(u.param_bytes for u in profile.units[start:end])
        act = sum(ub.own[start:end]) + ub.entry[start]
        first, last = k == 0, k == K - 1
        buf = message_buffers(0 if first else ub.message[start], 0 if last else ub.message[end],
                              0 if last else ub.unsaved_out[end])
        flight, versions = flights[k]
        out.append(
            StageMemory(
                params=params,
                grads=params,
                optimizer=optimizer_buffers * params,
                activations=round(flight * act * share),
                stashed_weights=versions * params,
                buffers=round(buf * share / M),
                in_flight=flight,
                stashed_versions=versions,
            )
        )
    return out
