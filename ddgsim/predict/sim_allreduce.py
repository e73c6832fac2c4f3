"""The all-reduces among a stage's replicas in SimPy: rendezvous, gradient buckets, ring, tree, measured.

The replicas of a stage sum their weight gradients as the executor does
(:mod:`ddgsim.execute.buckets`): bucket by bucket (``Costs.grad_buckets``), each bucket's
all-reduce starting when the backward that completes the batch has computed its gradients
(its fraction of that backward) and every replica has reached it (a rendezvous, as a
collective call), in bucket order; ``U`` waits for the last, then, on the last stage, for an
8-byte all-reduce of the loss shares. Each all-reduce runs as the chunk transfers of the
algorithm (:mod:`ddgsim.predict.collective`) on the same link FIFOs as the pipeline messages —
ring: 2(D−1) steps, each replica sending one n/D chunk to its successor once its previous
step's chunk has arrived; tree: the pipelined binary tree, reduce to replica 0 then broadcast,
in the chunk count ``tree_ms`` picks. Where the scenario has a measured all-reduce for the
stage's devices (``[[allreduce]]``, one host), that curve's time replaces the chunk transfers,
holding the ring's link directions from when they are all free.
"""

from __future__ import annotations

import simpy

from ddgsim.predict.collective import after_gradients, ring_edges, tree_chunks
from ddgsim.predict.sim_links import FifoLinks
from ddgsim.predict.sim_run import Run, Steps

Tag = tuple[int, int, int]
"""One all-reduce: (stage, batch, index among the stage's all-reduces of that batch)."""


class StageAllReduce:
    """Every all-reduce among the replicas of stage ``k`` (devices ``row``), one batch after another."""

    def __init__(self, run: Run, links: FifoLinks, k: int, row: tuple[str, ...], algorithm: str,
                 buckets: list[tuple[float, float]], last: bool) -> None:
        self.run, self.links, self.k, self.row, self.algorithm = run, links, k, row, algorithm
        self.buckets = buckets
        """The gradients' buckets: (fraction of the completing backward when ready, bytes)."""
        self.messages = [b for _, b in buckets] + list(after_gradients(last))
        """Bytes of every all-reduce of a batch: the buckets', then those before the update."""
        scenario = links.scenario
        self.chunks = [tree_chunks(scenario, row, nb) if algorithm == "tree" else 1 for nb in self.messages]
        self.curve = scenario.measured_allreduce(row)
        self.ready: dict[tuple[int, int], int] = {}
        """Replicas that have called all-reduce (batch, index) so far."""

    def gradients(self, r: int, t: int, start: float, backward_ms: float) -> Steps:
        """Process of replica ``r``: batch ``t``'s buckets, each when its gradients exist (the
        completing backward started at ``start``), in order; then the event ``U`` waits for."""
        env = self.run.env
        for j, (frac, _) in enumerate(self.buckets):
            at = start + frac * backward_ms
            if at > env.now:
                yield env.timeout(at - env.now)
            yield from self.collective(r, t, j)
        self.run.event(("grads", self.k, r, t)).succeed()

    def before_update(self, r: int, t: int) -> Steps:
        """Replica ``r`` before batch ``t``'s update: what is left of the gradients' all-reduces,
        then the others (the loss shares' on the last stage)."""
        yield self.run.event(("grads", self.k, r, t))
        for j in range(len(self.buckets), len(self.messages)):
            yield from self.collective(r, t, j)

    def collective(self, r: int, t: int, j: int) -> Steps:
        """Replica ``r``'s part in all-reduce ``j`` of batch ``t``, from when every replica has called it."""
        here = self.ready[(t, j)] = self.ready.get((t, j), 0) + 1
        go = self.run.event(("ready", self.k, t, j))
        if here == len(self.row):
            go.succeed()
        yield go
        tag, nbytes = (self.k, t, j), self.messages[j]
        if self.curve is not None:
            yield from self.measured(r, tag, nbytes)
        elif self.algorithm == "ring":
            yield from self.ring(r, tag, nbytes)
        else:
            yield from self.tree(r, tag, nbytes, self.chunks[j])

    def measured(self, r: int, tag: Tag, nbytes: float) -> Steps:
        """The measured curve's time, holding the ring's link directions; replica 0 books them,
        the others wait for the end."""
        done = self.run.event(("measured", tag))
        if r == 0:
            assert self.curve is not None
            scenario = self.links.scenario
            hops = [h for a, b in ring_edges(self.row) for h in scenario.route(a, b)]
            self.links.hold(hops, float(self.curve.time_ms(nbytes)), done, f"ar {self.k}U{tag[1]} (measured)")
        yield done

    def ring(self, r: int, tag: Tag, nbytes: float) -> Steps:
        """2(D−1) steps: send a chunk to the successor once the previous step's chunk is here."""
        n = len(self.row)
        nxt = (r + 1) % n
        hops = self.links.route(self.row[r], self.row[nxt], nbytes / n)
        for step in range(2 * (n - 1)):
            if step:
                yield self.run.event(("ring", tag, r, step - 1))
            sent = self.run.event(("ring", tag, nxt, step))
            self.links.send(hops, sent, f"ar {self.k}U{tag[1]} step {step}")
            yield sent
        yield self.run.event(("ring", tag, r, 2 * (n - 1) - 1))

    def tree(self, r: int, tag: Tag, nbytes: float, c: int) -> Steps:
        """Reduce ``c`` chunks up the binary tree to replica 0, then broadcast them down."""
        n, t, env = len(self.row), tag[1], self.run.env
        kids = [x for x in (2 * r + 1, 2 * r + 2) if x < n]
        size = nbytes / c
        up = self.links.route(self.row[r], self.row[(r - 1) // 2], size) if r else []
        for j in range(c):  # reduce: chunk j goes up once every child's chunk j has arrived
            for x in kids:
                yield self.run.event(("up", tag, x, j))
            if r:
                sent = self.run.event(("up", tag, r, j))
                self.links.send(up, sent, f"ar {self.k}U{t} reduce {j}")
                yield sent
        senders = [env.process(self.down(r, x, tag, c, size)) for x in kids]
        if r:
            yield self.run.event(("down", tag, r, c - 1))
        if senders:
            yield simpy.AllOf(env, senders)

    def down(self, r: int, x: int, tag: Tag, c: int, size: float) -> Steps:
        """Process: forward each chunk from replica ``r`` to its child ``x`` once it is here."""
        hops = self.links.route(self.row[r], self.row[x], size)
        for j in range(c):
            if r:
                yield self.run.event(("down", tag, r, j))
            sent = self.run.event(("down", tag, x, j))
            self.links.send(hops, sent, f"ar {self.k}U{tag[1]} broadcast {j}")
            yield sent
