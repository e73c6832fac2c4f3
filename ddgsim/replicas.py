"""Replicated stages: K stages × D_k replicas each (data parallel inside a stage, DDG across stages).

Pure Python (no torch, no SimPy): the plan format, the timing models, the memory model
and both executors take the replica arithmetic from here.

Semantics (the contract every layer implements):

* Every replica of stage k runs stage k's action list unchanged (``ddgsim.schedule``); the
  staleness of stage k stays ``K-1-k``.
* **Shards.** The samples of every batch (of every micro-batch, under gpipe/1f1b) are
  split into D_k contiguous shards as ``torch.tensor_split`` splits them: of a micro-batch
  of ``n = B/M`` samples, the first ``n mod D_k`` replicas hold ``⌈n/D_k⌉`` samples and the
  others ``⌊n/D_k⌋`` (:func:`shard`), so any D_k ≤ n works; equal shards where D_k divides
  n. The batch must split into M equal micro-batches, each of at least D_k samples
  (:func:`check_batch`). A stage moves at the pace of its largest shard (the update's
  all-reduce waits for every replica), so the timing and memory models price every replica
  of stage k at ``⌈n/D_k⌉`` samples (:func:`largest_shard`).
* **Messages.** Where D_k ≠ D_{k+1} the batch is re-sharded at the boundary: the piece of
  samples ``[lo, hi)`` goes from the replica of stage k that holds it to the replica of
  stage k+1 that holds it (:func:`pieces`); a receiver concatenates its pieces in sample
  order. Error gradients travel the same pieces backwards. Equal D: replica r ↔ replica r.
* **Loss.** A last-stage replica scales its shard's mean loss by its share of the batch's
  samples (shard size / B), so the error gradients are exactly those of the batch's mean loss
  — with shards of unequal size too.
* **Update.** Before ``U k t`` the replicas of stage k **sum** their weight gradients of
  batch t (an all-reduce over the stage's group), then each applies the same update, so
  the replicas' weights stay identical. For D = 2 the sum ``a + b`` is the same in any
  order, so a distributed run is bit-identical to the in-process engine; for D > 2 the
  all-reduce's summation order is the library's and results agree to rounding.
* **Buckets.** The sum runs bucket by bucket, overlapped with the backward that completes
  the batch (as DDP does): :func:`plan_buckets` groups the parameters, in the order the
  backward produces them, into buckets of DDP's sizes; a bucket's all-reduce starts when
  its gradients are all computed, buckets start in index order on every replica, and
  ``U`` waits for the last. The same values are summed; only when changes.
* **Buffers** (BatchNorm running statistics) are each replica's own, from its shard;
  evaluation and saved weights use replica 0's.
* **Ranks** are stage-major: stage k's replica r is rank ``D_0 + … + D_{k-1} + r``; with
  one replica per stage, rank k is stage k as before.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from ddgsim.errors import UserError

ALLREDUCE = ("ring", "tree")
"""All-reduce algorithms the timing models know."""
DEFAULT_ALLREDUCE = "ring"


class Piece(NamedTuple):
    """Samples ``[lo, hi)`` of a (micro-)batch crossing a stage boundary."""

    src: int
    """Replica of the sending stage that holds them."""
    dst: int
    """Replica of the receiving stage that needs them."""
    lo: int
    hi: int


def shard(samples: int, replicas: int, replica: int) -> tuple[int, int]:
    """Sample range ``[lo, hi)`` of ``replica`` among ``replicas`` shards of ``samples``: the first
    ``samples mod replicas`` shards hold one sample more (``torch.tensor_split``'s sizes)."""
    if replicas < 1 or not 0 <= replica < replicas:
        raise ValueError(f"replica {replica} of {replicas}")
    if samples < replicas:
        raise ValueError(f"{samples} samples do not give each of {replicas} replicas a sample")
    base, extra = divmod(samples, replicas)
    lo = replica * base + min(replica, extra)
    return lo, lo + base + (1 if replica < extra else 0)


def largest_shard(samples: int, replicas: int) -> int:
    """Samples of the largest of ``replicas`` shards of ``samples`` (``⌈samples/replicas⌉``): what
    paces the stage and sizes its memory."""
    return -(-samples // replicas)


def shard_share(samples: int, replicas: int) -> float:
    """The largest shard's share of ``samples`` (``1/replicas`` when the shards are equal)."""
    return largest_shard(samples, replicas) / samples


def useful_replicas(samples: int, most: int) -> list[int]:
    """Replica counts 1..``most`` (at most ``samples``) worth trying: for each largest-shard size
    the fewest replicas that reach it. More replicas with the same largest shard do the same
    work per replica and only add devices, all-reduce steps and pieces, so they never help."""
    out: list[int] = []
    for d in range(1, min(most, samples) + 1):
        if not out or largest_shard(samples, d) < largest_shard(samples, out[-1]):
            out.append(d)
    return out


def pieces(samples: int, src_replicas: int, dst_replicas: int) -> list[Piece]:
    """Every non-empty intersection of a sending and a receiving shard, in sample order."""
    cuts = sorted({0, samples, *(shard(samples, src_replicas, r)[0] for r in range(src_replicas)),
                   *(shard(samples, dst_replicas, r)[0] for r in range(dst_replicas))})
    return [Piece(holder(samples, src_replicas, lo), holder(samples, dst_replicas, lo), lo, hi)
            for lo, hi in itertools.pairwise(cuts)]


def piece_share(samples: int | None, src_replicas: int, dst_replicas: int) -> float:
    """The largest piece's share of a boundary's micro-batch of ``samples`` (``None``: equal shards)
    between ``src_replicas`` and ``dst_replicas`` (:func:`pieces`; 1 between single replicas)."""
    n = samples if samples is not None else src_replicas * dst_replicas
    return max(p.hi - p.lo for p in pieces(n, src_replicas, dst_replicas)) / n


def holder(samples: int, replicas: int, sample: int) -> int:
    """The replica whose shard (:func:`shard`) holds ``sample``."""
    base, extra = divmod(samples, replicas)
    big = extra * (base + 1)
    return sample // (base + 1) if sample < big else extra + (sample - big) // base


def piece_counts(samples: int, src_replicas: int, dst_replicas: int) -> tuple[int, int]:
    """(pieces the busiest receiving replica takes, pieces the busiest sending replica posts) across a
    boundary (:func:`pieces`), counted from the shards' ends without listing the pieces."""
    def most(a: int, b: int) -> int:  # a's shards, each crossing how many of b's
        return max(holder(samples, b, hi - 1) - holder(samples, b, lo) + 1
                   for lo, hi in (shard(samples, a, r) for r in range(a)))
    return most(dst_replicas, src_replicas), most(src_replicas, dst_replicas)


def check_batch(batch_size: int, micro_batches: int, replicas: Sequence[int]) -> None:
    """``UserError`` unless the batch splits into ``micro_batches`` equal micro-batches and each of
    them has a sample for every replica of every stage (shards may differ by one sample)."""
    for k, d in enumerate(replicas):
        if d < 1:
            raise UserError(f"stage {k} has {d} replicas; every stage needs at least 1")
    if batch_size % micro_batches:
        raise UserError(f"batch size {batch_size} does not split into {micro_batches} equal micro-batches; "
                        f"use a multiple of {micro_batches}")
    n = batch_size // micro_batches
    for k, d in enumerate(replicas):
        if d > n:
            raise UserError(
                f"stage {k} has {d} replicas but a micro-batch has {n} sample{'s' if n != 1 else ''} (batch size "
                f"{batch_size} / "
                f"{micro_batches} micro-batch(es)); use at most {n} replicas or a batch of at least "
                f"{micro_batches * d}")


@dataclass(frozen=True)
class Layout:
    """The devices of every replica of every stage: ``devices[k][r]``."""

    devices: tuple[tuple[str, ...], ...]

    def __post_init__(self) -> None:
        if not self.devices or any(not row for row in self.devices):
            raise UserError("a layout needs at least one stage, and every stage at least one replica")
        flat = self.flat
        dup = sorted({d for d in flat if flat.count(d) > 1})
        if dup:
            raise UserError(f"device '{dup[0]}' is used by two replicas (one process per device)")

    @classmethod
    def pipeline(cls, devices: Sequence[str]) -> Layout:
        """One replica per stage (a pure pipeline)."""
        return cls(tuple((d,) for d in devices))

    @classmethod
    def packed(cls, devices: Sequence[str], replicas: Sequence[int]) -> Layout:
        """Stage k's ``replicas[k]`` replicas on the next devices of ``devices``, in order."""
        if sum(replicas) > len(devices):
            raise UserError(f"replicas {list(replicas)} need {sum(replicas)} devices, got {len(devices)}")
        rows, at = [], 0
        for D in replicas:
            rows.append(tuple(devices[at:at + D]))
            at += D
        return cls(tuple(rows))

    @property
    def stages(self) -> int:
        return len(self.devices)

    @property
    def replicas(self) -> tuple[int, ...]:
        """D_k of every stage."""
        return tuple(len(row) for row in self.devices)

    @property
    def flat(self) -> list[str]:
        """Every device in rank order (stage-major)."""
        return [d for row in self.devices for d in row]

    @property
    def world_size(self) -> int:
        return sum(self.replicas)

    def rank(self, stage: int, replica: int) -> int:
        return sum(self.replicas[:stage]) + replica

    def place(self, rank: int) -> tuple[int, int]:
        """``(stage, replica)`` of a rank."""
        if not 0 <= rank < self.world_size:
            raise ValueError(f"rank {rank} of {self.world_size}")
        for k, d in enumerate(self.replicas):
            if rank < d:
                return k, rank
            rank -= d
        raise AssertionError("unreachable")


BUCKET_BYTES = 25 * 2**20
"""A bucket closes once it holds this many bytes (DDP's ``bucket_cap_mb`` = 25)."""
FIRST_BUCKET_BYTES = 2**20
"""The first bucket (the last layers' gradients, ready first) closes at 1 MiB, as in DDP, so
communication starts early in the backward."""


def plan_buckets(nbytes: Sequence[int], dtypes: Sequence[Any], cap: int = BUCKET_BYTES,
                 first: int = FIRST_BUCKET_BYTES) -> list[list[int]]:
    """Indices of the tensors (``nbytes[i]``, ``dtypes[i]``) grouped into buckets, each in reverse
    index order (the order a backward produces them): a bucket takes the next tensors of its dtype
    until it holds ``first`` bytes (the first bucket) or ``cap`` (the others)."""
    buckets: list[list[int]] = []
    open_: dict[Any, tuple[list[int], int]] = {}
    for i in reversed(range(len(nbytes))):
        members, size = open_.get(dtypes[i], ([], 0))
        members = [*members, i]
        size += nbytes[i]
        limit = first if not buckets else cap
        if size >= limit:
            buckets.append(members)
            open_.pop(dtypes[i], None)
        else:
            open_[dtypes[i]] = (members, size)
    buckets += [m for m, _ in open_.values() if m]
    return buckets


def bucket_ready(param_bytes: Sequence[float], backward_ms: Sequence[float],
                    cap: int = BUCKET_BYTES, first: int = FIRST_BUCKET_BYTES) -> list[tuple[float, float]]:
    """The buckets of a stage whose units have ``param_bytes`` and ``backward_ms`` (each unit's
    parameters taken as one float32 tensor): ``(fraction of the backward done when the bucket is
    ready, bytes)``, in the order they start. A unit's gradients are ready when its backward ends
    (the backward runs the units in reverse)."""
    done, t = [0.0] * len(backward_ms), 0.0
    for i in reversed(range(len(backward_ms))):
        t += backward_ms[i]
        done[i] = t
    learn = [i for i, b in enumerate(param_bytes) if b > 0]
    groups = plan_buckets([int(param_bytes[i]) for i in learn], ["f"] * len(learn), cap, first)
    total = t if t > 0 else 1.0
    return [(max(done[learn[j]] for j in g) / total, float(sum(param_bytes[learn[j]] for j in g))) for g in groups]
