"""Replay each rank's communication under NCCL's rules and say whether it can deadlock.

Every test of the executor runs gloo, which matches a receive by its tag and keeps the two
directions of a link apart; NCCL does neither. This module takes what each rank *issues* and
*waits for* — recorded from a real run (:class:`Recorder`, written by the executor when
``DDGSIM_COMM_LOG`` names a folder) or derived from the schedule's action lists
(:func:`derive`) — and replays it under NCCL's semantics (``shared/NCCL.md``):

* an operation runs on its communicator's stream: one stream per rank per communicator, in
  the order the rank issued them (``tag`` is ignored);
* a communicator is a (group, pair of ranks) for an unbatched send or receive, the group's own
  for a collective — and for every operation of the group when the group was created eagerly
  (``device_id`` given to ``init_process_group``: :data:`EAGER`);
* a send completes only together with the matching receive (the n-th send from A to B on a
  communicator with the n-th receive at B from A), both at the heads of their streams; a
  collective completes when it heads the stream of every member;
* a host ``wait`` blocks the issuing thread until that operation completed; a device-wide
  ``sync`` until everything the rank issued before it completed;
* without eager creation, the first operation on a communicator blocks its host thread until
  every member reached its first operation there (creating a communicator is collective).

Events (one list per rank, the main thread's, in program order)::

    ("post", op_id, "send" | "recv", group, peer, key)
    ("coll", op_id, group, members)
    ("wait", op_id)
    ("sync",)

The send-completion thread's waits are not in the lists: it waits on its own stream and never
holds the main thread, which is what the executor does (:mod:`ddgsim.execute.comm`).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ddgsim.replicas import Layout, pieces
from ddgsim.schedule import Schedule, make_schedule

Event = tuple[Any, ...]

EAGER = True
"""The executor creates its NCCL communicators up front (``device_id`` in ``init_process_group``)."""

WORLD = "world"

SEND_QUEUE = 8
"""Sends queued for the completion thread before posting another one blocks (``Outbox(max_pending=)``)."""


def act_group(src: int, dst: int) -> str:
    """The two-rank group carrying activations from rank ``src`` to rank ``dst`` (and nothing else)."""
    return f"act:{src}>{dst}"


def grad_group(src: int, dst: int) -> str:
    """The two-rank group carrying error gradients from rank ``src`` to rank ``dst``."""
    return f"grad:{src}>{dst}"


def replica_group(stage: int) -> str:
    return f"replicas:{stage}"


@dataclass
class _Op:
    ident: tuple[int, int]
    """(rank, op_id)."""
    kind: str
    group: str
    comm: tuple[Any, ...]
    peer: int | None = None
    key: Any = None
    done: bool = False


@dataclass
class Verdict:
    """The outcome of a replay: deadlock-free, or where every blocked rank is stuck."""

    ok: bool
    steps: int
    """Events replayed in all."""
    stuck: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return "deadlock-free" if self.ok else "deadlock: " + "; ".join(self.stuck)


def replay(events: Sequence[Sequence[Event]], groups: Mapping[str, Sequence[int]], eager: bool = EAGER) -> Verdict:
    """Replay the ranks' events (``events[r]``) under NCCL's rules; ``groups`` maps a group name to
    its member ranks (collectives complete when every member issued them)."""
    n = len(events)
    ops: dict[tuple[int, int], _Op] = {}
    streams: dict[tuple[Any, ...], deque[_Op]] = {}
    issued: list[list[_Op]] = [[] for _ in range(n)]
    pc = [0] * n
    reached: dict[tuple[Any, ...], set[int]] = {}
    mismatch: list[str] = []

    def comm_of(r: int, kind: str, group: str, peer: int | None) -> tuple[Any, ...]:
        if kind == "coll" or eager:
            return (group,)
        assert peer is not None
        return (group, min(r, peer), max(r, peer))

    def members(comm: tuple[Any, ...]) -> set[int]:
        return set(comm[1:]) if len(comm) == 3 else set(groups[comm[0]])

    def advance(r: int) -> bool:
        moved = False
        evs = events[r]
        while pc[r] < len(evs):
            ev = evs[pc[r]]
            kind = ev[0]
            if kind in ("post", "coll"):
                if kind == "post":
                    _, oid, what, group, peer, key = ev
                else:
                    _, oid, group, _members = ev
                    what, peer, key = "coll", None, None
                comm = comm_of(r, what if kind == "post" else "coll", group, peer)
                if not eager:
                    seen = reached.setdefault(comm, set())
                    seen.add(r)
                    if seen != members(comm):
                        return moved  # creating the communicator: blocked until every member is here
                op = _Op((r, oid), what, group, comm, peer, key)
                ops[op.ident] = op
                streams.setdefault((r, *comm), deque()).append(op)
                issued[r].append(op)
            elif kind == "wait":
                awaited = ops.get((r, ev[1]))
                if awaited is None:
                    raise ValueError(f"rank {r} waits for operation {ev[1]} before issuing it")
                if not awaited.done:
                    return moved
            elif kind == "sync":
                if not all(o.done for o in issued[r]):
                    return moved
            else:
                raise ValueError(f"unknown event {ev!r} on rank {r}")
            pc[r] += 1
            moved = True
        return moved

    def head(r: int, comm: tuple[Any, ...]) -> _Op | None:
        q = streams.get((r, *comm))
        while q and q[0].done:
            q.popleft()
        return q[0] if q else None

    def complete() -> bool:
        moved = False
        for r, *rest in list(streams):
            comm = tuple(rest)
            op = head(r, comm)
            if op is None or op.done:
                continue
            if op.kind == "coll":
                heads = [head(m, comm) for m in members(comm)]
                if all(h is not None and h.kind == "coll" and h.group == op.group for h in heads):
                    for h in heads:
                        assert h is not None
                        h.done = True
                    moved = True
                continue
            assert op.peer is not None
            other = head(op.peer, comm)
            want = "recv" if op.kind == "send" else "send"
            if other is not None and other.kind == want and other.peer == r:
                if other.key != op.key:
                    mismatch.append(f"rank {r} {op.kind} {op.key} on {op.group} met rank {op.peer} "
                                    f"{other.kind} {other.key}")
                op.done = other.done = True
                moved = True
        return moved

    moved = True
    while moved:
        moved = False
        for r in range(n):
            moved = advance(r) or moved
        moved = complete() or moved
    steps = sum(pc)
    if mismatch:
        return Verdict(False, steps, [f"messages matched out of order: {mismatch[0]}"])
    if all(pc[r] == len(events[r]) for r in range(n)) and all(o.done for o in ops.values()):
        return Verdict(True, steps)
    stuck = []
    for r in range(n):
        if pc[r] < len(events[r]):
            ev = events[r][pc[r]]
            what = ev[0]
            if what == "wait":
                op = ops[(r, ev[1])]
                what = f"wait for {op.kind}{' ' + str(op.key) if op.key is not None else ''} on {op.group}"
            heads = [f"{o.kind}{'→' if o.kind == 'send' else '←'}{o.peer if o.peer is not None else ''} "
                     f"{o.key if o.key is not None else o.group}"
                     for (rr, *c), _q in streams.items() if rr == r
                     if (o := head(r, tuple(c))) is not None]
            stuck.append(f"rank {r} at event {pc[r]} ({what}); stream heads: {', '.join(heads) or 'none'}")
    left = [o for o in ops.values() if not o.done]
    if not stuck and left:
        stuck.append(f"every rank finished with {len(left)} operation(s) never completed, e.g. rank "
                     f"{left[0].ident[0]} {left[0].kind} {left[0].key} on {left[0].group}")
    return Verdict(False, steps, stuck)


# ---------------------------------------------------------------- recording


class Recorder:
    """What one rank issues and waits for, in program order (the executor's main thread)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._next = 0

    def post(self, what: str, group: str, peer: int, key: Any) -> int:
        oid = self._next
        self._next += 1
        self.events.append(("post", oid, what, group, peer, tuple(key) if isinstance(key, list | tuple) else key))
        return oid

    def coll(self, group: str, members: Sequence[int]) -> int:
        oid = self._next
        self._next += 1
        self.events.append(("coll", oid, group, tuple(members)))
        return oid

    def wait(self, oid: int) -> None:
        self.events.append(("wait", oid))

    def sync(self) -> None:
        self.events.append(("sync",))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.events))


def load_recorded(folder: Path, world: int) -> list[list[Event]]:
    """The events each rank recorded into ``folder`` (``rank<R>.json``), as tuples."""
    out = []
    for r in range(world):
        raw = json.loads((folder / f"rank{r}.json").read_text())
        out.append([tuple(_tuplify(x) for x in ev) for ev in raw])
    return out


def _tuplify(x: Any) -> Any:
    return tuple(x) if isinstance(x, list) else x


# ---------------------------------------------------------------- derivation


@dataclass
class _Box:
    """A mailbox as :class:`ddgsim.execute.comm.Mailbox` runs it: receives in consumption order,
    up to ``window`` posted, refilled after each one taken."""

    peer: int
    group: str
    queue: deque[Any]
    window: int
    posted: deque[tuple[Any, int]] = field(default_factory=deque)
    ready: set[Any] = field(default_factory=set)


def groups_for(layout: Layout, old: bool = False) -> dict[str, list[int]]:
    """Every process group of a run: the world, one per replicated stage, and (unless ``old``)
    one two-rank group per link direction between replicas of neighbouring stages."""
    out: dict[str, list[int]] = {WORLD: list(range(layout.world_size))}
    for k, d in enumerate(layout.replicas):
        if d > 1:
            first = layout.rank(k, 0)
            out[replica_group(k)] = list(range(first, first + d))
    if not old:
        for a, b in links(layout):
            out[act_group(a, b)] = [a, b]
            out[grad_group(b, a)] = [a, b]
    return out


def links(layout: Layout, samples: int | None = None) -> list[tuple[int, int]]:
    """(rank of stage k's replica, rank of stage k+1's replica) for every piece crossing a boundary,
    boundary by boundary, in sample order: the pairs that exchange activations and gradients."""
    out = []
    reps = layout.replicas
    for k in range(len(reps) - 1):
        n = samples if samples is not None else _samples(layout)
        for p in pieces(n, reps[k], reps[k + 1]):
            pair = (layout.rank(k, p.src), layout.rank(k + 1, p.dst))
            if pair not in out:
                out.append(pair)
    return out


def _samples(layout: Layout) -> int:
    """A micro-batch size every stage's replicas split evenly (the pieces depend on nothing else)."""
    import math

    return math.lcm(*layout.replicas)


def derive(schedule: Schedule, layout: Layout, window: int = 2, old: bool = False,
           samples: int | None = None, buckets: int = 1) -> list[list[Event]]:
    """Each rank's events as the executor issues them for ``schedule`` (no checkpoints, no evaluation).

    A replicated stage issues its ``buckets`` gradient all-reduces during the backward that
    completes a batch (before that backward's send) and waits for them at the batch's ``U``
    (:mod:`ddgsim.execute.buckets`), after the loss all-reduce on the last stage.
    ``old``: the communication before per-direction groups (every message on the default group,
    a device-wide synchronisation after every action and all-reduce, one all-reduce at ``U``),
    kept as the case the checker must reject.
    """
    K = schedule.stages
    n = samples if samples is not None else _samples(layout)
    out: list[list[Event]] = []
    for rank in range(layout.world_size):
        rec = Recorder()
        stage, replica = layout.place(rank)
        D = layout.replicas[stage]
        boxes: dict[str, list[_Box]] = {"act": [], "grad": []}
        for kind, other in (("act", stage - 1), ("grad", stage + 1)):
            if not 0 <= other < K:
                continue
            keys = [(m.batch, m.micro) for m in schedule.received(stage) if m.src == other]
            for peer in _peer_ranks(layout, stage, replica, other, n):
                group = WORLD if old else (act_group(peer, rank) if kind == "act" else grad_group(peer, rank))
                box = _Box(peer, group, deque(keys), window)
                _fill(box, rec)
                boxes[kind].append(box)
        sends = SendLog(rec)
        _barrier(rec, layout)
        members = list(range(layout.rank(stage, 0), layout.rank(stage, 0) + D))
        last_b = {a.batch: i for i, a in enumerate(schedule.actions[stage]) if a.kind == "B"}
        grads: dict[int, list[int]] = {}
        for i, act in enumerate(schedule.actions[stage]):
            for msg in schedule.needs(act):
                for box in boxes["act" if msg.kind == "act" else "grad"]:
                    _wait(box, (msg.batch, msg.micro), rec)
                    if act.kind != "W":
                        box.ready.discard((msg.batch, msg.micro))
            if act.kind == "B" and D > 1 and not old and last_b[act.batch] == i:
                grads[act.batch] = [rec.coll(replica_group(stage), members) for _ in range(buckets)]
            if act.kind == "U" and D > 1 and old:
                rec.coll(replica_group(stage), members)
                if stage == K - 1:
                    rec.coll(replica_group(stage), members)
                rec.sync()
            elif act.kind == "U" and D > 1:
                for c in grads.pop(act.batch):
                    rec.wait(c)
                if stage == K - 1:
                    rec.wait(rec.coll(replica_group(stage), members))
            if act.kind != "W" and old:
                rec.sync()
            sent = schedule.delivered(act)
            if sent is not None:
                for peer in _peer_ranks(layout, stage, replica, sent.dst, n):
                    group = WORLD if old else (act_group(rank, peer) if sent.kind == "act" else grad_group(rank, peer))
                    sends.post(group, peer, (sent.batch, sent.micro))
        sends.flush()
        _barrier(rec, layout)  # gather_object of the reports (a collective on the world)
        out.append(rec.events)
    return out


class SendLog:
    """Sends as :class:`ddgsim.execute.comm.Outbox` issues them: a thread waits for them in order, and
    the main thread blocks once more than ``max_pending`` + 1 are incomplete (the queue is full), so
    posting send i waits for sends 0 .. i - max_pending - 1; a flush waits for all of them.
    (Recorded as host waits: the real block is never longer.)"""

    def __init__(self, rec: Recorder, max_pending: int = SEND_QUEUE) -> None:
        self.rec, self.max_pending = rec, max_pending
        self.ids: list[int] = []
        self.waited = 0

    def post(self, group: str, peer: int, key: Any) -> int:
        oid = self.rec.post("send", group, peer, key)
        self.ids.append(oid)
        self._wait_upto(len(self.ids) - 1 - self.max_pending)
        return oid

    def flush(self) -> None:
        self._wait_upto(len(self.ids))

    def _wait_upto(self, n: int) -> None:
        while self.waited < n:
            self.rec.wait(self.ids[self.waited])
            self.waited += 1


def _peer_ranks(layout: Layout, stage: int, replica: int, other: int, n: int) -> list[int]:
    """Ranks of ``other``'s replicas this replica exchanges pieces with, in sample order."""
    reps = layout.replicas
    if other < stage:
        return [layout.rank(other, p.src) for p in pieces(n, reps[other], reps[stage]) if p.dst == replica]
    return [layout.rank(other, p.dst) for p in pieces(n, reps[stage], reps[other]) if p.src == replica]


def _barrier(rec: Recorder, layout: Layout) -> None:
    rec.wait(rec.coll(WORLD, list(range(layout.world_size))))


def _fill(box: _Box, rec: Recorder) -> None:
    while len(box.posted) < box.window and box.queue:
        key = box.queue.popleft()
        box.posted.append((key, rec.post("recv", box.group, box.peer, key)))


def _wait(box: _Box, key: Any, rec: Recorder) -> None:
    if key in box.ready:
        return
    while key not in box.ready:
        if not box.posted:
            _fill(box, rec)
        if not box.posted:
            raise RuntimeError(f"message {key} from rank {box.peer} is not expected")
        got, oid = box.posted.popleft()
        rec.wait(oid)
        box.ready.add(got)
        _fill(box, rec)


def check(name: str, stages: int, micro_batches: int = 1, replicas: int = 1, iterations: int | None = None,
          old: bool = False, eager: bool = EAGER, buckets: int = 2) -> Verdict:
    """Derive and replay one case: ``name`` on ``stages`` stages of ``replicas`` replicas each
    (``buckets`` gradient all-reduces per replicated stage and batch)."""
    N = iterations if iterations is not None else stages + 3
    sched = make_schedule(name, stages, N, micro_batches)
    layout = Layout.packed([f"cuda:{i}" for i in range(stages * replicas)], [replicas] * stages)
    return replay(derive(sched, layout, old=old, buckets=buckets), groups_for(layout, old=old), eager=eager)
