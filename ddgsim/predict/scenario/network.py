"""A hardware scenario (:class:`Scenario`): its devices and the links between them, checked on
construction, with the routes (all pairs, or by rule) and the transfer time of a message."""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field

import networkx as nx

from ddgsim.errors import UserError, choices
from ddgsim.predict.overheads import NONE, Overheads
from ddgsim.predict.scenario.parts import AllreduceCurve, Device, Link
from ddgsim.predict.scenario.rules import Hop, Routing


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """Devices and links; ``graph`` and the all-pairs routes are derived on construction."""

    name: str
    """Scenario name (``ideal-4``, ``pcie-4gpu``, ...)."""
    devices: tuple[Device, ...]
    """The devices, in order: stage k runs on ``devices[k]`` unless a mapping says otherwise."""
    links: tuple[Link, ...] = ()
    """The links; a bidirectional link yields one graph edge per direction."""
    description: str = ""
    """Free text: where the figures come from."""
    concurrent_speed: float = 1.0
    """Speed factor of a device while another device of its ``host`` computes too (measured by
    ``ddgsim calibrate``: shared memory bandwidth and caches); 1.0: they do not slow each other."""
    host_slots: int = 0
    """How many devices of one ``host`` compute at full speed at once: on a CPU host its cores over
    the threads of one stage process (written by ``ddgsim calibrate``). While ``n`` more than that
    compute, the operating system shares the cores and each runs at ``host_slots / n`` of its speed
    (on top of ``concurrent_speed``); 0: no limit (GPUs, and scenarios written before)."""
    allreduce: tuple[AllreduceCurve, ...] = ()
    """Measured all-reduce times of a host's devices (``[[allreduce]]``, written by calibrate);
    they replace the link model for all-reduces among that many of the host's devices."""
    overheads: Overheads = NONE
    """The executor's fixed host cost per action (``[overheads]``, written by calibrate;
    :mod:`ddgsim.predict.overheads`); none by default."""
    rules: Routing | None = None
    """Routes and links by rule (clusters, large ``ideal-N``) instead of ``links``: no all-pairs search."""
    graph: nx.DiGraph = field(init=False, repr=False, compare=False)
    """One edge per direction, with attributes ``link`` (the :class:`Link`); only nodes under ``rules``."""
    _routes: dict[Hop, list[Hop]] = field(init=False, repr=False, compare=False)
    _by_name: dict[str, Device] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.devices:
            raise UserError("field 'devices' must list at least one device")
        c = self.concurrent_speed
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not 0 < c <= 1:
            raise UserError(f"field 'concurrent_speed' must be a number in (0, 1], got {c!r}")
        slots = self.host_slots
        if isinstance(slots, bool) or not isinstance(slots, int) or slots < 0:
            raise UserError(f"field 'host_slots' must be an integer >= 0 (0: no limit), got {slots!r}")
        names = [d.name for d in self.devices]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise UserError(f"field 'devices': duplicate device name(s) {choices(dup)}")
        object.__setattr__(self, "_by_name", {d.name: d for d in self.devices})
        hosts = {d.host for d in self.devices if d.host}
        seen: set[tuple[str, int]] = set()
        for curve in self.allreduce:
            if curve.host not in hosts:
                raise UserError(f"[[allreduce]] names host '{curve.host}', which no device has "
                                f"(hosts: {choices(sorted(hosts)) if hosts else 'none'})")
            if (curve.host, curve.replicas) in seen:
                raise UserError(f"[[allreduce]] for host '{curve.host}' and {curve.replicas} replicas is given twice")
            seen.add((curve.host, curve.replicas))
        g = nx.DiGraph()
        g.add_nodes_from(names)
        if self.rules is not None:
            if self.links:
                raise UserError("a scenario routed by rule (a cluster) lists no [[links]]")
            object.__setattr__(self, "graph", g)
            object.__setattr__(self, "_routes", {})
            return
        for link in self.links:
            for end in (link.src, link.dst):
                if end not in g:
                    raise UserError(
                        f"link {link.src}->{link.dst} names unknown device '{end}' (devices: {choices(names)})"
                    )
            pairs = [(link.src, link.dst)] + ([(link.dst, link.src)] if link.bidirectional else [])
            for a, b in pairs:
                if g.has_edge(a, b):
                    raise UserError(f"link {a}->{b} is defined twice")
                g.add_edge(a, b, link=link)
        object.__setattr__(self, "graph", g)
        routes = _all_routes(g, names)
        for a in names:
            for b in names:
                if (a, b) not in routes:
                    raise UserError(
                        f"scenario '{self.name}' is disconnected: no route from '{a}' to '{b}'"
                    )
        object.__setattr__(self, "_routes", routes)

    def device(self, name: str) -> Device:
        d = self._by_name.get(name)
        if d is not None:
            return d
        raise UserError(f"unknown device '{name}' in scenario '{self.name}' (devices: {choices(d.name for d in self.devices)})")

    def memory_limit(self, devices: Sequence[str], override: float | None = None) -> float:
        """Bytes a stage on ``devices`` may use: ``override`` (a ``--memory-limit``) when given,
        else the smallest of their memories (replicas each hold a full copy of the stage)."""
        return override if override is not None else min(self.device(d).memory_bytes for d in devices)

    def link(self, hop: Hop) -> Link:
        """The link that carries one direction ``(src, dst)``."""
        if self.rules is not None:
            return self.rules.link(hop)
        link: Link = self.graph.edges[hop]["link"]
        return link

    def route(self, src: str, dst: str) -> list[Hop]:
        """Hops from ``src`` to ``dst`` (empty when they are the same device)."""
        if self.rules is not None:
            self.device(src)
            self.device(dst)
            return self.rules.route(src, dst)
        try:
            return list(self._routes[(src, dst)])
        except KeyError:
            self.device(src)
            self.device(dst)
            raise

    def measured_allreduce(self, devices: Sequence[str]) -> AllreduceCurve | None:
        """The measured curve for an all-reduce among ``devices``: all distinct, all on one host,
        and measured for that many replicas; else ``None`` (the link model applies)."""
        if len(devices) < 2 or not self.allreduce or len(set(devices)) != len(devices):
            return None
        hosts = {self.device(d).host for d in devices}
        if len(hosts) != 1:
            return None
        host = hosts.pop()
        return next((c for c in self.allreduce if c.host == host and c.replicas == len(devices)), None)

    def transfer_ms(self, src: str, dst: str, nbytes: float) -> float:
        """Store-and-forward time of one message: sum over hops of latency + n/bandwidth."""
        return sum(self.link(h).hop_ms(nbytes) for h in self.route(src, dst))


def _all_routes(g: nx.DiGraph, names: list[str]) -> dict[Hop, list[Hop]]:
    """Dijkstra from every source on (total latency, hops, device order)."""
    order = {n: i for i, n in enumerate(names)}
    out: dict[Hop, list[Hop]] = {}
    for src in names:
        best: dict[str, tuple[float, int]] = {}
        heap: list[tuple[float, int, list[int], str]] = [(0.0, 0, [order[src]], src)]
        while heap:
            lat, hops, path, node = heapq.heappop(heap)
            if node in best:
                continue
            best[node] = (lat, hops)
            out[(src, node)] = [(names[path[i]], names[path[i + 1]]) for i in range(len(path) - 1)]
            for nxt in g.successors(node):
                if nxt not in best:
                    link: Link = g.edges[node, nxt]["link"]
                    heapq.heappush(heap, (lat + link.latency_us, hops + 1, [*path, order[nxt]], nxt))
    return out
