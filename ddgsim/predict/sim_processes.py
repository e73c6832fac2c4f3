"""The stage processes of the SimPy model: each runs its action list in order, one per device.

Without replicas (:func:`run_pipeline`) stage k's device is a ``simpy.Resource`` (capacity 1)
and every message is its own process crossing :class:`~ddgsim.predict.sim_links.HeldLinks`.
With replicas (:func:`run_replicas`) every replica of every stage is its own process on its own
device, every piece of a re-sharded (micro-)batch is its own transfer over
:class:`~ddgsim.predict.sim_links.FifoLinks`, and a stage's replicas meet in its all-reduces
(:mod:`ddgsim.predict.sim_allreduce`) before each ``U``. An action waits for the messages it
needs, takes its duration, sends its message, then takes its tail (overheads) before the next.
"""

from __future__ import annotations

import simpy

from ddgsim.predict.max_plus import Costs
from ddgsim.predict.scenario import Scenario
from ddgsim.predict.sim_allreduce import StageAllReduce
from ddgsim.predict.sim_links import FifoLinks, HeldLinks, PieceRoutes
from ddgsim.predict.sim_run import Run, Steps
from ddgsim.schedule import Action, Message, Schedule


class PipelineStage:
    """Stage ``k`` of a pipeline without replicas, on its device."""

    def __init__(self, run: Run, links: HeldLinks, schedule: Schedule, costs: Costs, k: int) -> None:
        self.run, self.links, self.schedule, self.costs, self.k = run, links, schedule, costs, k
        self.device = simpy.Resource(run.env, capacity=1)
        self.ms = {"F": float(costs.forward_ms[0, k]), "B": float(costs.backward_ms[0, k]),
                   "U": float(costs.update_ms[0, k])}
        """Duration of each kind of action."""
        assert costs.tail_ms is not None
        self.tail = dict(zip("FBU", costs.tail_ms[k].tolist(), strict=True))
        """What each kind of action takes after its message has left, before the next action."""

    def actions(self) -> Steps:
        """Process: the stage's action list."""
        run, env, k = self.run, self.run.env, self.k
        dev = self.costs.devices[k]
        for a in self.schedule.actions[k]:
            start = env.now
            yield from run.wait_all([run.event(msg) for msg in self.schedule.needs(a)])
            if a.kind == "W":  # blocks the stage, not the device; shown as a wait interval
                run.executed[k].append(a)
                run.record(dev, repr(a), start, env.now, "W")
                continue
            with self.device.request() as req:
                yield req
                start = env.now
                yield env.timeout(self.ms[a.kind])
                run.executed[k].append(a)
                run.record(dev, repr(a), start, env.now, a.kind)
                sent = self.schedule.sends(a)
                if sent is not None:
                    env.process(self.send(sent, f"{'act' if sent.kind == 'act' else 'grad'} {a!r}"))
                if self.tail[a.kind]:
                    yield env.timeout(self.tail[a.kind])

    def send(self, msg: Message, name: str) -> Steps:
        """Process: carry ``msg`` over its route; its event fires on arrival."""
        costs = self.costs
        route = (costs.act_hops if msg.kind == "act" else costs.grad_hops)[msg.boundary]
        hop_ms = (costs.act_hop_ms if msg.kind == "act" else costs.grad_hop_ms)[0, msg.boundary].tolist()
        yield from self.links.carry(list(zip(route, hop_ms[: len(route)], strict=True)), self.run.event(msg), name)


def run_pipeline(schedule: Schedule, costs: Costs) -> tuple[Run, int]:
    """Run a pipeline without replicas; the run and the events processed."""
    run = Run(schedule.stages)
    links = HeldLinks(run, {h for r in costs.act_hops + costs.grad_hops for h in r})
    stages = [PipelineStage(run, links, schedule, costs, k) for k in range(schedule.stages)]
    procs = [(s.k, run.env.process(s.actions())) for s in stages]
    return run, run.finish(schedule.name, procs)


Step = tuple[Action, tuple[Message, ...], Message | None]
"""An action, the messages it needs and the message it sends."""


class StageReplica:
    """Replica ``r`` of stage ``k``, on its own device."""

    def __init__(self, run: Run, links: FifoLinks, pieces: PieceRoutes, allreduce: StageAllReduce | None,
                 steps: list[Step], completing: dict[int, int], costs: Costs, k: int, r: int) -> None:
        assert costs.layout is not None and costs.tail_ms is not None
        self.run, self.links, self.pieces, self.allreduce = run, links, pieces, allreduce
        self.steps = steps
        """The stage's action list, each with what it needs and sends."""
        self.completing = completing
        """Per batch, the index in ``steps`` of the backward that completes it (its gradients)."""
        self.k, self.r = k, r
        self.device = costs.layout.devices[k][r]
        scenario = links.scenario
        scale = scenario.device(costs.layout.devices[k][0]).speed / scenario.device(self.device).speed
        self.ms = {"F": float(costs.forward_ms[0, k]) * scale, "B": float(costs.backward_ms[0, k]) * scale,
                   "U": float(costs.update_ms[0, k]) * scale}
        """Duration of each kind of action: the stage's (replica 0's device), scaled to this device."""
        self.tail = dict(zip("FBU", costs.tail_ms[k].tolist(), strict=True))
        """What each kind of action takes after its messages have left, before the next action."""

    def actions(self) -> Steps:
        """Process: the stage's action list, on this replica's shard of every (micro-)batch."""
        run, env, k, r, dev = self.run, self.run.env, self.k, self.r, self.device
        inbound, outbound = self.pieces.inbound[k][r], self.pieces.outbound[k][r]
        for i, (a, needs, sent) in enumerate(self.steps):
            start = env.now
            waits = []
            for msg in needs:
                waits += [run.event((msg, p)) for p in (inbound if msg.kind == "act" else outbound)]
            yield from run.wait_all(waits)
            if a.kind == "W":
                if r == 0:
                    run.executed[k].append(a)
                run.record(dev, repr(a), start, env.now, "W")
                continue
            if a.kind == "U" and self.allreduce is not None:
                start = env.now
                yield from self.allreduce.before_update(r, a.batch)
                run.record(dev, f"allreduce {a!r}", start, env.now, "allreduce")
            start = env.now
            if a.kind == "B" and self.allreduce is not None and self.completing[a.batch] == i:
                env.process(self.allreduce.gradients(r, a.batch, start, self.ms["B"]))
            yield env.timeout(self.ms[a.kind])
            if r == 0:
                run.executed[k].append(a)
            run.record(dev, repr(a), start, env.now, a.kind)
            if sent is not None:
                self.send(sent, a)
            if self.tail[a.kind]:
                yield env.timeout(self.tail[a.kind])

    def send(self, msg: Message, a: Action) -> None:
        """Send this replica's pieces of ``msg``, each over its own route."""
        b = msg.boundary
        if msg.kind == "act":
            for p in self.pieces.outbound[self.k][self.r]:
                self.links.send(self.pieces.act[b][p], self.run.event((msg, p)), f"act {a!r}")
        else:
            for p in self.pieces.inbound[self.k][self.r]:
                self.links.send(self.pieces.grad[b][p], self.run.event((msg, p)), f"grad {a!r}")


def run_replicas(schedule: Schedule, costs: Costs, scenario: Scenario) -> tuple[Run, int]:
    """Run a pipeline whose stages have replicas (``costs.layout``); the run and the events processed."""
    assert costs.layout is not None and costs.allreduce_bytes is not None
    K, rows, D = schedule.stages, costs.layout.devices, costs.replicas
    run = Run(K)
    links = FifoLinks(run, scenario)
    pieces = PieceRoutes(costs, links)
    procs = []
    for k in range(K):
        allreduce = None
        if D[k] > 1:
            # The gradients' buckets (one at the backward's end when the costs have none).
            buckets = (list(costs.grad_buckets[k]) if costs.grad_buckets is not None else
                       [(1.0, float(costs.allreduce_bytes[0, k]))])
            allreduce = StageAllReduce(run, links, k, rows[k], costs.allreduce, buckets, last=k == K - 1)
        steps = [(a, schedule.needs(a), schedule.sends(a)) for a in schedule.actions[k]]
        completing = {a.batch: i for i, a in enumerate(schedule.actions[k]) if a.kind == "B"}
        for r in range(D[k]):
            replica = StageReplica(run, links, pieces, allreduce, steps, completing, costs, k, r)
            procs.append((k, run.env.process(replica.actions())))
    return run, run.finish(schedule.name, procs)
