"""Link directions in SimPy: resources a message holds hop by hop, or FIFO servers booked ahead.

A pipeline without replicas (:class:`HeldLinks`) gives each link direction a
``simpy.Resource`` of capacity 1; a message crosses its route's hops one after the other
(store-and-forward), holding each direction while on it. With replicas there are many more
transfers, so :class:`FifoLinks` books them instead: a direction is a FIFO server known by when
it is next free, and a transfer that reaches it at ``now`` starts at ``max(now, free)`` — events
are processed in time order, so every earlier arrival has already booked. No processes.
"""

from __future__ import annotations

from collections.abc import Iterable

import simpy

from ddgsim.predict.max_plus import Costs
from ddgsim.predict.scenario import Hop, Scenario
from ddgsim.predict.sim_run import Run, Steps

Route = list[tuple[Hop, float]]
"""The hops of a transfer, each with the time it takes on that hop (ms)."""


def row(hop: Hop) -> str:
    """The timeline row of a link direction."""
    return f"{hop[0]}->{hop[1]}"


class HeldLinks:
    """Every link direction a resource (capacity 1) that a message holds while on it."""

    def __init__(self, run: Run, hops: Iterable[Hop]) -> None:
        self.run = run
        self.link = {h: simpy.Resource(run.env, capacity=1) for h in sorted(hops)}

    def carry(self, route: Route, done: simpy.Event, name: str) -> Steps:
        """Process: cross ``route`` hop by hop, then trigger ``done``."""
        env = self.run.env
        for hop, ms in route:
            with self.link[hop].request() as req:
                yield req
                start = env.now
                yield env.timeout(ms)
                self.run.record(row(hop), name, start, env.now, "link")
        done.succeed()


class FifoLinks:
    """Every link direction a FIFO server, known by when it is next free."""

    def __init__(self, run: Run, scenario: Scenario) -> None:
        self.run = run
        self.scenario = scenario
        self.free: dict[Hop, float] = {}
        """When each direction that has carried something is next free."""

    def route(self, src: str, dst: str, nbytes: float) -> Route:
        """The scenario's route from ``src`` to ``dst``, each hop timed for ``nbytes``."""
        return [(h, self.scenario.link(h).hop_ms(nbytes)) for h in self.scenario.route(src, dst)]

    def send(self, route: Route, done: simpy.Event, name: str, i: int = 0) -> None:
        """Book hop ``i`` of ``route`` now, the next hop when it ends; ``done`` after the last."""
        if i == len(route):
            done.succeed()
            return
        hop, ms = route[i]
        env = self.run.env
        now = env.now
        start = max(now, self.free.get(hop, 0.0))
        end = self.free[hop] = start + ms
        self.run.record(row(hop), name, start, end, "link")
        env.timeout(end - now).callbacks.append(lambda _: self.send(route, done, name, i + 1))

    def hold(self, hops: list[Hop], ms: float, done: simpy.Event, name: str) -> None:
        """Book all of ``hops`` together for ``ms``, from when they are all free; ``done`` at the end."""
        env = self.run.env
        start = max([env.now, *(self.free.get(h, 0.0) for h in hops)])
        end = start + ms
        for h in hops:
            self.free[h] = end
            self.run.record(row(h), name, start, end, "link")

        def finish(_: simpy.Event) -> None:
            done.succeed()

        env.timeout(end - env.now).callbacks.append(finish)


class PieceRoutes:
    """Per boundary, every piece of a re-sharded (micro-)batch with its routes; per replica, the
    pieces it receives and sends."""

    def __init__(self, costs: Costs, links: FifoLinks) -> None:
        assert costs.layout is not None and costs.micro_bytes is not None
        rows, K, D = costs.layout.devices, costs.stages, costs.replicas
        self.act: list[list[Route]] = []
        """``act[k][i]``: piece ``i`` of boundary ``k``'s route from stage k to k+1."""
        self.grad: list[list[Route]] = []
        """``grad[k][i]``: the same piece's gradient, back from stage k+1 to k."""
        pieces = []
        for k in range(K - 1):
            span = costs.boundary_span(k)
            ps = costs.boundary_pieces(k)
            whole = float(costs.micro_bytes[0, k])
            pieces.append(ps)
            self.act.append([links.route(rows[k][p.src], rows[k + 1][p.dst], whole * (p.hi - p.lo) / span)
                             for p in ps])
            self.grad.append([links.route(rows[k + 1][p.dst], rows[k][p.src], whole * (p.hi - p.lo) / span)
                              for p in ps])
        self.inbound = [[[i for i, p in enumerate(pieces[k - 1]) if p.dst == r] if k > 0 else []
                         for r in range(D[k])] for k in range(K)]
        """``inbound[k][r]``: the pieces of boundary k-1 that replica r of stage k receives."""
        self.outbound = [[[i for i, p in enumerate(pieces[k]) if p.src == r] if k < K - 1 else []
                          for r in range(D[k])] for k in range(K)]
        """``outbound[k][r]``: the pieces of boundary k that replica r of stage k sends."""
