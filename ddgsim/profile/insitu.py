"""In-situ per-unit timing: each unit timed inside a real whole-model training step.

The step runs the model as the executor's stages do, as the chain of its units
(``x = unit(x)`` for every unit, without detaching), then one
``torch.autograd.backward``. Timestamps are taken between units in the forward, and
in the backward by a gradient hook on every unit's output: the hook on unit *i*'s
output fires when everything after unit *i* has been backpropagated, so the backward
of unit *i* is the time between the hooks of outputs *i* and *i − 1* (unit 0 ends when
``backward`` returns). The rows therefore add up to the step itself and carry its
cache and allocator state, which timing each unit on its own misses.

With M micro-batches the step runs the way a GPipe stage does: the forward of
micro-batch 0, 1, …, M − 1 (each graph kept), then their backwards in reverse
order; each unit's time is the mean over the micro-batches.

On CPU the marks are ``time.perf_counter`` and ``time.thread_time`` (the CPU
autograd engine runs on the calling thread); on CUDA they are events on the current
stream, read after one synchronisation at the end of the step.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import nn


class _Marks:
    """Timestamps of one step: wall and thread CPU time on CPU, CUDA events on GPU."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.events: list[torch.cuda.Event] = []
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def mark(self) -> int:
        """Take a timestamp now; return its index."""
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            ev.record()
            self.events.append(ev)
            return len(self.events) - 1
        self.cpu.append(time.thread_time())
        self.wall.append(time.perf_counter())
        return len(self.wall) - 1

    def ms(self, a: int, b: int, clock: str) -> float:
        """Milliseconds from mark ``a`` to mark ``b`` (after :meth:`finish`)."""
        if self.cuda:
            return float(self.events[a].elapsed_time(self.events[b]))
        values = self.cpu if clock == "thread" else self.wall
        return (values[b] - values[a]) * 1e3

    def finish(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


class StepTimes:
    """Per-unit forward and backward of one step, averaged over its micro-batches, for each clock."""

    def __init__(self, forward: dict[str, list[float]], backward: dict[str, list[float]],
                 total: dict[str, float]) -> None:
        self.forward = forward
        self.backward = backward
        self.total = total
        """The whole step (all micro-batches), first mark to last."""


def insitu_step(units: Sequence[nn.Module], x: torch.Tensor, grad_out: torch.Tensor,
                micro_batches: int = 1) -> StepTimes:
    """Run one training step through ``units`` (forward, then backward of ``grad_out``) and time every unit.

    ``x`` and ``grad_out`` are for the whole batch; they are split into ``micro_batches``
    equal chunks along dimension 0. Parameter gradients accumulate as in training.
    """
    cuda = x.device.type == "cuda"
    marks = _Marks(cuda)
    M = micro_batches
    xs = x.chunk(M)
    gs = grad_out.chunk(M)
    n = len(units)
    last: list[torch.Tensor] = []
    hooked: list[list[int]] = []
    fwd_marks: list[list[int]] = []
    start = marks.mark()
    for j in range(M):
        h = xs[j]
        row = [start if j == 0 else fwd_marks[-1][-1]]
        fired = [-1] * n
        for i, unit in enumerate(units):
            h = unit(h)
            row.append(marks.mark())
            # The hook lives on the autograd graph, not on the tensor: no unit output is kept
            # alive longer than the backward would keep it (that would change the step's memory).
            if i < n - 1 and h.requires_grad:
                h.register_hook(_hook(marks, fired, i))
        last.append(h)
        hooked.append(fired)
        fwd_marks.append(row)
        del h
    bwd_marks: list[list[int]] = []
    for j in reversed(range(M)):
        begin = marks.mark()
        torch.autograd.backward(last[j], gs[j])
        end = marks.mark()
        last[j] = gs[j]  # drop the output (and with it the graph)
        # row[i + 1] .. row[i]: the backward of unit i. Unit n - 1 starts at once; unit i < n - 1
        # when the hook of its output fires. An output that needs no gradient (nothing before it
        # learns) has no hook: the units up to it have no backward, and end with ``backward``.
        row = [end] * (n + 1)
        row[n] = begin
        for i in range(1, n):
            if hooked[j][i - 1] >= 0:
                row[i] = hooked[j][i - 1]
        bwd_marks.append(row)
    marks.finish()
    clocks = ("wall",) if cuda else ("wall", "thread")
    forward = {c: [sum(marks.ms(r[i], r[i + 1], c) for r in fwd_marks) / M for i in range(n)] for c in clocks}
    backward = {c: [sum(marks.ms(r[i + 1], r[i], c) for r in bwd_marks) / M for i in range(n)] for c in clocks}
    total = {c: marks.ms(start, bwd_marks[-1][0], c) for c in clocks}
    return StepTimes(forward, backward, total)


def _hook(marks: _Marks, into: list[int], i: int):  # type: ignore[no-untyped-def]
    def fire(_grad: torch.Tensor) -> None:
        into[i] = marks.mark()

    return fire
