"""The executor's fixed cost of each action, beyond the compute the profile gives its units.

A profile times the units' kernels (in situ: forward and backward of each unit inside a
training step). The executor does more for every action: it takes the message the action
consumes, fetches the batch's samples or labels, swaps the stashed weights in, runs the
loss, posts the message it produces, samples its memory and records the action. On a GPU
where a CIFAR ResNet's kernels take microseconds, or on a CPU running a small model, those
fixed costs are most of a step: without them the model predicted short steps 48–86 % too
fast (issue 28).

:class:`Overheads` holds them as a scenario's ``[overheads]`` table (written by ``ddgsim
calibrate``, which measures them by running the executor itself on a probe model,
:mod:`ddgsim.calibrate.overhead_probe`)::

    [overheads]
    forward_us = 48.0     # one F action, beyond its units' forward
    backward_us = 21.0    # one B action, beyond its units' backward
    update_us = 35.0      # one U action, beyond the profile's optimizer step
    send_us = 30.0        # posting one message (an activation or an error gradient), after it left
    receive_us = 25.0     # taking one message that has arrived
    tail_us = 40.0        # every F, B, U: after its message is posted (bookkeeping, the loop)
    message_sizes = [262144, 1048576, 8388608]   # bytes of one message ...
    message_cpu_us = [110.0, 290.0, 1350.0]      # ... and the CPU each end spends on it beyond a small one
    [overheads.alone]     # a job of one process (no other stage process on the host)
    forward_us = 30.0
    backward_us = 12.0
    update_us = 10.0

:func:`action_ms` and :func:`tail_ms` turn them into what one ``F``, ``B`` and ``U`` of each
stage costs on top of its compute, before its message leaves (its fixed cost, taking the
messages it consumes) and after (posting its messages, the loop's bookkeeping), counting the
messages each action takes and posts (a stage between two others receives its input and
sends its output at every ``F``; with replicas, one message per piece of the micro-batch). Every timing model adds exactly these: the SimPy simulator
and the max-plus recursion through :func:`ddgsim.predict.max_plus.costs_for_splits`, and the
planner's tables (:mod:`ddgsim.plan.band`). They are host time: not divided by a device's
speed. Scenarios without the table (every bundled one) have none.

**The bytes of a message.** Between CPU processes (gloo) a message is copied through the
kernel's loopback socket by the two processes it joins, on the cores the stages compute on:
each end spends CPU that grows with its size (0.04 ms for 4 KiB, 0.3 ms for 1 MiB, 1.4 ms for
8 MiB on the development VM). ``send_us`` and ``receive_us`` are measured on the probe's
messages of a few hundred bytes; ``message_sizes`` and ``message_cpu_us`` (written by
``calibrate`` from its ping-pong timed in process CPU time, the gloo backend only: NCCL moves the
bytes with the GPU) give what a larger message costs each end beyond that, interpolated
linearly in bytes (:func:`message_cpu_ms`). :func:`bytes_ms` charges it to every ``F`` and ``B`` for each message it takes
and posts, per piece with replicas, before the action's message leaves: the sender's copy is
how the message leaves, and the receiver's comes before it can use it. The link's time (its
ping-pong's wall time) already holds the copies; so on a path that waits for the message it
is counted twice, at most the figure above per message, while a stage busy with other work
(the pipelined schedules) pays it in full, as the model says.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from ddgsim.errors import UserError, choices
from ddgsim.replicas import piece_counts, piece_share

CURVE = ("message_sizes", "message_cpu_us")
"""The two fields of the message-size curve (not of ``[overheads.alone]``: one process posts no messages)."""


def _number(v: object) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) and v >= 0


@dataclass(frozen=True, kw_only=True)
class Overheads:
    """Fixed host cost of each action of the executor, in µs (module docstring)."""

    forward_us: float = 0.0
    """One ``F``, beyond its units' forward (the loss, the weight swap, fetching samples, bookkeeping)."""
    backward_us: float = 0.0
    """One ``B``, beyond its units' backward."""
    update_us: float = 0.0
    """One ``U``, beyond the profile's optimizer step for the stage's parameters."""
    send_us: float = 0.0
    """Posting one message to a neighbouring stage, on the sender: part of the action's tail (the
    message is on its way as soon as the post begins)."""
    receive_us: float = 0.0
    """Taking one message that has arrived, on the receiver (posting the next receive included)."""
    tail_us: float = 0.0
    """Of every ``F``, ``B`` and ``U``: the part that comes after the action's message has been posted
    (sampling memory, recording the action, the loop): it keeps the stage busy but does not
    delay the message, and overlaps a wait for the next action's input."""
    message_sizes: tuple[float, ...] = ()
    """Message sizes, bytes, ascending, at which ``message_cpu_us`` was measured (module docstring)."""
    message_cpu_us: tuple[float, ...] = ()
    """CPU each of a message's two ends spends on it beyond a message of a few hundred bytes, at each
    of ``message_sizes``; empty: none (:func:`message_cpu_ms`)."""
    alone: Overheads | None = None
    """The figures of a job of one process (``[overheads.alone]``): measured apart, as a process
    alone on its host runs its actions faster than two that share the cores (and its optimizer
    step is the profile's whole step); ``None``: the same as above."""

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name in ("alone", *CURVE):
                continue
            v = getattr(self, f.name)
            if not _number(v):
                raise UserError(f"field '{f.name}' of [overheads] must be a number >= 0 (µs), got {v!r}")
        sizes, cpu = self.message_sizes, self.message_cpu_us
        for name, values in zip(CURVE, (sizes, cpu), strict=True):
            if not isinstance(values, (list, tuple)) or not all(_number(v) for v in values):
                raise UserError(f"field '{name}' of [overheads] must be a list of numbers >= 0, got {values!r}")
        if len(sizes) != len(cpu):
            raise UserError(f"[overheads]: message_sizes has {len(sizes)} entries and message_cpu_us {len(cpu)}; "
                            "they must pair up")
        if any(b <= a for a, b in itertools.pairwise(sizes)):
            raise UserError(f"field 'message_sizes' of [overheads] must be strictly ascending, got {list(sizes)}")
        object.__setattr__(self, "message_sizes", tuple(float(v) for v in sizes))
        object.__setattr__(self, "message_cpu_us", tuple(float(v) for v in cpu))

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))

    @classmethod
    def from_dict(cls, table: Mapping[str, Any], where: str = "[overheads]") -> Overheads:
        allowed = [f.name for f in fields(cls) if f.name not in ("alone", *CURVE) or where == "[overheads]"]
        extra = sorted(set(table) - set(allowed))
        if extra:
            raise UserError(f"{where}: unknown field '{extra[0]}' (allowed: {choices(allowed)})")
        alone = table.get("alone")
        if alone is not None and not isinstance(alone, Mapping):
            raise UserError("field 'alone' of [overheads] must be a table ([overheads.alone])")
        return cls(**{**table, "alone": cls.from_dict(alone, "[overheads.alone]") if alone is not None else None})

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {f.name: float(getattr(self, f.name)) for f in fields(self)
                               if f.name not in ("alone", *CURVE)}
        if self.message_sizes:
            out.update(message_sizes=list(self.message_sizes), message_cpu_us=list(self.message_cpu_us))
        if self.alone is not None:
            out["alone"] = self.alone.as_dict()
        return out

    def for_job(self, processes: int) -> Overheads:
        """The figures that apply to a job of ``processes`` stage processes."""
        return self.alone if processes == 1 and self.alone is not None else self


NONE = Overheads()


def message_cpu_ms(overheads: Overheads, nbytes: np.ndarray | float) -> np.ndarray:
    """CPU one end of a message of ``nbytes`` spends on it beyond a small message, ms (any shape):
    ``message_cpu_us`` interpolated linearly in bytes (rising from nothing at 0 bytes to the first
    point: ``calibrate`` writes its smallest size, a few bytes, with 0), the last segment's slope past
    the last size; zeros without the curve."""
    n = np.asarray(nbytes, dtype=np.float64)
    xs, ys = overheads.message_sizes, overheads.message_cpu_us
    if not xs:
        return np.zeros_like(n)
    x = np.array([0.0, *xs]) if xs[0] > 0 else np.array(xs)  # from nothing at 0 bytes
    y = np.array([0.0, *ys]) if xs[0] > 0 else np.array(ys)
    out = np.interp(n, x, y)
    if len(x) >= 2:  # past the last size: the last segment's slope (never down)
        slope = (y[-1] - y[-2]) / (x[-1] - x[-2])
        out = np.where(n > x[-1], y[-1] + max(slope, 0.0) * (n - x[-1]), out)
    return np.asarray(np.maximum(out, 0.0) * 1e-3)


def bytes_ms(overheads: Overheads, replicas: Sequence[int], k: int, bytes_in: np.ndarray | float,
             bytes_out: np.ndarray | float, samples: int | None = None) -> np.ndarray:
    """ms one ``F`` of stage ``k`` — and one ``B``, which takes and posts as many — spends on the bytes
    of its messages (:func:`message_cpu_ms` per piece it takes and posts): ``bytes_in`` and ``bytes_out``
    are the whole micro-batch's message across the stage's first and last boundary (arrays broadcast;
    ignored where the stage has no such boundary). Zeros without the curve or for a job of one process."""
    K = len(replicas)
    zero = np.zeros(np.broadcast(np.asarray(bytes_in), np.asarray(bytes_out)).shape)
    if not overheads.message_sizes or K == 1:
        return zero
    recv, send = messages(replicas, samples)
    out = zero
    if k > 0:
        piece = np.asarray(bytes_in, dtype=np.float64) * piece_share(samples, replicas[k - 1], replicas[k])
        out = out + recv[k] * message_cpu_ms(overheads, piece)
    if k < K - 1:
        piece = np.asarray(bytes_out, dtype=np.float64) * piece_share(samples, replicas[k], replicas[k + 1])
        out = out + send[k] * message_cpu_ms(overheads, piece)
    return np.asarray(out)


def messages(replicas: Sequence[int], samples: int | None = None) -> tuple[list[int], list[int]]:
    """Per stage: (messages its ``F`` receives, messages its ``F`` sends) for one micro-batch of
    ``samples`` samples (``None``: shards of equal size), on its busiest replica. A ``B`` sends as
    many as the ``F`` received and receives as many as it sent (the error gradients go back piece
    by piece)."""
    K = len(replicas)
    recv, send = [0] * K, [0] * K
    for k in range(K - 1):
        a, b = replicas[k], replicas[k + 1]
        recv[k + 1], send[k] = piece_counts(samples if samples is not None else a * b, a, b)
    return recv, send


def tail_ms(overheads: Overheads, replicas: Sequence[int], samples: int | None = None) -> np.ndarray:
    """(K, 3): the tail of one ``F``, ``B`` and ``U`` of each stage, ms: what comes after the action's
    message has left — posting it (``send_us`` per message: the message is on its way as the post
    begins), then the loop's bookkeeping (``tail_us``)."""
    recv, send = messages(replicas, samples)
    o = overheads.for_job(sum(replicas))
    out = np.array([[o.tail_us + o.send_us * s, o.tail_us + o.send_us * r, o.tail_us]
                    for r, s in zip(recv, send, strict=True)], dtype=np.float64)
    return out.reshape(len(replicas), 3) * 1e-3


def action_ms(overheads: Overheads, replicas: Sequence[int], samples: int | None = None,
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(K,) arrays: ms added to one ``F`` (per micro-batch), one ``B`` and one ``U`` of each stage
    before its message leaves: its fixed cost and taking the messages it consumes (the tail,
    :func:`tail_ms`, comes after)."""
    recv, send = messages(replicas, samples)
    o = overheads.for_job(sum(replicas))
    f = np.array([o.forward_us + o.receive_us * r for r in recv])
    b = np.array([o.backward_us + o.receive_us * s for s in send])
    u = np.full(len(replicas), float(o.update_us))
    return f * 1e-3, b * 1e-3, u * 1e-3
