"""Actions and the messages between stages: what one step of one stage is, and what it waits for
and sends.

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
"""

from __future__ import annotations

import re
from typing import NamedTuple

KINDS = ("F", "B", "U", "W")
RECEIVE_WINDOW = 2
"""Receives of one kind (activations, error gradients) a stage keeps posted ahead of the one it
waits for, per incoming link: the executor's mailboxes, and the memory model's buffers."""

_ACTION = re.compile(r"^(\d+)([FBUW])(\d+)(?:\.(\d+))?$")


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

