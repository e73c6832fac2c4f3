"""Gradient buckets: a replicated stage's all-reduce overlapped with its backward, as DDP does it.

A stage with D > 1 replicas sums each batch's weight gradients over its replicas before
``U``. Rather than one all-reduce after the backward, the gradients are grouped into
buckets (:func:`plan_buckets`: parameters in reverse order, the order a backward produces
them; one dtype per bucket; DDP's sizes, a first bucket of 1 MiB then 25 MiB each), and a
bucket's all-reduce starts (``async_op``) as soon as the backward has produced every
gradient in it — through a hook on each parameter, during the backward that completes the
batch (its last micro-batch). Buckets start strictly in index order, whatever order the
hooks fire in, so every replica issues the same collectives in the same order (NCCL's
rule for a communicator). ``U`` waits for them (:meth:`GradReducer.wait`).

The sums are those of one flat all-reduce: every element is the sum of the same D values
(exact for D = 2; for D > 2 the collective's own order, as before). The simulator times the
same buckets (:func:`ddgsim.replicas.bucket_ready`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from ddgsim.replicas import BUCKET_BYTES, FIRST_BUCKET_BYTES, plan_buckets

BUCKET_ENV = "DDGSIM_BUCKET_BYTES"
"""Overrides :data:`BUCKET_BYTES` (and the first bucket's size) in a run: tests use small buckets
to make many of them on small models."""


def bucket_sizes() -> tuple[int, int]:
    """(cap, first bucket) for this process: DDP's, or :data:`BUCKET_ENV`'s for both."""
    env = os.environ.get(BUCKET_ENV)
    return (int(env), int(env)) if env else (BUCKET_BYTES, FIRST_BUCKET_BYTES)


@dataclass
class _Pending:
    """One batch's buckets in flight."""

    grads: list[Tensor | None]
    ready: list[int]
    """Gradients still missing per bucket."""
    flats: list[Tensor | None]
    works: list[Any] = field(default_factory=list)
    next: int = 0
    """The next bucket to start (they start in index order)."""
    coll_ids: list[int] = field(default_factory=list)


class GradReducer:
    """Sums one stage's weight gradients over its replicas, bucket by bucket, overlapped with the
    backward. ``start(t)`` before the backward that completes batch t, ``ready(i, g)`` from the
    parameter hooks, ``finish(t, grads)`` after it (starts what the hooks did not), ``wait(t)``
    before ``U`` (the summed gradients)."""

    def __init__(self, params: Sequence[Tensor], group: Any, *, cap: int | None = None, first: int | None = None,
                 on_issue: Callable[[], int] | None = None, on_wait: Callable[[int], None] | None = None) -> None:
        self.group = group
        env_cap, env_first = bucket_sizes()
        cap, first = cap or env_cap, first or env_first
        self.buckets = plan_buckets([p.numel() * p.element_size() for p in params], [p.dtype for p in params],
                                    cap, first)
        self.bucket_of = {i: b for b, members in enumerate(self.buckets) for i in members}
        self.n = len(params)
        self.on_issue, self.on_wait = on_issue, on_wait
        """Recording hooks (:class:`ddgsim.execute.nccl_replay.Recorder`): a collective issued, waited for."""
        self.pending: dict[int, _Pending] = {}
        self.current: int | None = None

    def start(self, t: int) -> None:
        self.pending[t] = _Pending(grads=[None] * self.n, ready=[len(b) for b in self.buckets],
                                   flats=[None] * len(self.buckets))
        self.current = t

    def ready(self, i: int, grad: Tensor) -> None:
        """Parameter i's gradient of the current batch (its total over micro-batches) is ``grad``."""
        assert self.current is not None
        p = self.pending[self.current]
        if p.grads[i] is not None:
            return
        p.grads[i] = grad
        b = self.bucket_of[i]
        p.ready[b] -= 1
        self._launch(p)

    def finish(self, t: int, grads: Sequence[Tensor]) -> None:
        """After the backward: the batch's gradients in full (what no hook saw, e.g. an unused
        parameter's zeros, comes from here); starts every bucket not started yet, in order."""
        p = self.pending[t]
        for i, g in enumerate(grads):
            if p.grads[i] is None:
                p.grads[i] = g
                p.ready[self.bucket_of[i]] -= 1
        self._launch(p)
        assert p.next == len(self.buckets)
        self.current = None

    def _launch(self, p: _Pending) -> None:
        while p.next < len(self.buckets) and p.ready[p.next] == 0:
            b = p.next
            members = self.buckets[b]
            flat = torch.cat([_ready(p.grads[i]).reshape(-1) for i in members])
            if self.on_issue is not None:
                p.coll_ids.append(self.on_issue())
            p.works.append(dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.group, async_op=True))
            p.flats[b] = flat
            p.next += 1

    def wait(self, t: int) -> list[Tensor]:
        """Block until batch t's buckets are summed; its summed gradients, in parameter order."""
        p = self.pending.pop(t)
        assert p.next == len(self.buckets), "finish() was not called for this batch"
        for w in p.works:
            w.wait()
        for c in p.coll_ids:
            if self.on_wait is not None:
                self.on_wait(c)
        out: list[Tensor | None] = [None] * self.n
        for members, flat in zip(self.buckets, p.flats, strict=True):
            off = 0
            for i in members:
                g = _ready(p.grads[i])
                out[i] = _ready(flat)[off:off + g.numel()].view_as(g)
                off += g.numel()
        return [_ready(g) for g in out]


def _ready(t: Tensor | None) -> Tensor:
    assert t is not None
    return t
