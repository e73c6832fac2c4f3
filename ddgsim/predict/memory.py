"""Peak memory per stage for a split and a schedule (a static byte count, no allocator model).

Per stage k, with units ``[start, end)``:

* parameters, gradients (same size) and ``optimizer_buffers`` copies for the
  optimizer state (SGD with momentum = 1 buffer, Adam = 2, plain SGD = 0);
* activations: the stage's ``activation_bytes`` (what autograd saves) times the most
  batches in flight at once — forwarded but not yet backpropagated — counted by
  walking the stage's action list; a micro-batch counts 1/M of a batch;
* stashed weights: the most weight versions, other than the current one, that
  in-flight batches were forwarded with (the executor stashes them so a delayed
  backward uses the weights of its forward). Under DDG stage k keeps K-1-k copies;
* send/receive buffers: one buffer per direction per boundary, of the boundary's
  ``output_bytes`` (/M): input activation + its gradient for k > 0, output
  activation + its gradient for k < K-1.

With D_k replicas of stage k (:mod:`ddgsim.replicas`) the figures are per replica: its
activations and message buffers are those of its shard, 1/D_k of each (micro-)batch;
parameters, gradients, optimizer state and stashed weight versions are whole copies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ddgsim.profile.format import Profile
from ddgsim.schedule import Action, Schedule, Steady

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
    """Send/receive buffers at the stage's boundaries."""
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
    """:func:`in_flight_and_versions` of every stage of a schedule's steady state, without building it:
    ``ddg``/``ddg-pipelined`` keep ``K−k`` batches in flight and ``K−1−k`` older versions on stage k
    (its delay plus one); ``1f1b`` ``min(K−k, M)`` micro-batches; ``bp`` and ``gpipe`` one batch.
    (The walk over the built lists gives the same; property-tested.)"""
    K, M = stages, micro_batches
    if schedule in ("ddg", "ddg-pipelined"):
        return [(float(K - k), K - 1 - k) for k in range(K)]
    if schedule == "1f1b":
        return [(min(K - k, M) / M, 0) for k in range(K)]
    if schedule in ("bp", "gpipe"):
        return [(1.0, 0)] * K
    raise ValueError(f"unknown schedule {schedule!r}")


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
    out = []
    for k, (start, end) in enumerate(ranges):
        units = profile.units[start:end]
        params = sum(u.param_bytes for u in units)
        act = sum(u.activation_bytes for u in units)
        in_bytes = profile.units[start - 1].output_bytes if k > 0 else 0
        out_bytes = units[-1].output_bytes if k < K - 1 else 0
        flight, versions = flights[k]
        out.append(
            StageMemory(
                params=params,
                grads=params,
                optimizer=optimizer_buffers * params,
                activations=round(flight * act / D[k]),
                stashed_weights=versions * params,
                buffers=round(2 * (in_bytes + out_bytes) / (M * D[k])),
                in_flight=flight,
                stashed_versions=versions,
            )
        )
    return out
