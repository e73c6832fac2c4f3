"""Routes and links by rule, on demand, for scenarios too large for an all-pairs search: a free
full mesh (:class:`FreeMesh`, ``ideal-N`` beyond 64 devices) and a cluster of nodes
(:class:`Cluster`, the :mod:`ddgsim.predict.scenario` docstring)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ddgsim.errors import UserError
from ddgsim.predict.scenario.parts import Device, Link, check_number

IDEAL_MAX_DEVICES = 4096
"""``ideal-N`` and ``cluster-<N>x<G>`` accept up to this many devices."""
FABRIC = "fabric"
"""Far end of every node's NIC hop in a cluster (``n3.nic -> fabric``)."""


Hop = tuple[str, str]


class Routing:
    """Routes and links computed by rule, on demand (for scenarios too large for all-pairs routes)."""

    def route(self, src: str, dst: str) -> list[Hop]:
        raise NotImplementedError

    def link(self, hop: Hop) -> Link:
        raise NotImplementedError


class FreeMesh(Routing):
    """Every pair of devices has its own free link (``ideal-N`` beyond 64 devices)."""

    def __init__(self) -> None:
        self._links: dict[Hop, Link] = {}

    def route(self, src: str, dst: str) -> list[Hop]:
        return [] if src == dst else [(src, dst)]

    def link(self, hop: Hop) -> Link:
        link = self._links.get(hop)
        if link is None:
            link = self._links[hop] = Link(src=hop[0], dst=hop[1], bandwidth_gb_s=math.inf, latency_us=0.0)
        return link


@dataclass(frozen=True, kw_only=True)
class Cluster(Routing):
    """N nodes of G devices: direct links inside a node, one shared NIC per node (package docstring)."""

    nodes: int
    devices_per_node: int
    intra_bandwidth_gb_s: float
    inter_bandwidth_gb_s: float
    intra_latency_us: float = 0.0
    inter_latency_us: float = 0.0
    speed: float = 1.0
    memory_gib: float = math.inf
    _node: dict[str, int] = field(init=False, repr=False, compare=False)
    _links: dict[Hop, Link] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for key in ("nodes", "devices_per_node"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UserError(f"field '{key}' of [cluster] must be an integer >= 1, got {v!r}")
        if self.nodes * self.devices_per_node > IDEAL_MAX_DEVICES:
            raise UserError(f"[cluster] has {self.nodes * self.devices_per_node} devices; at most {IDEAL_MAX_DEVICES}")
        for key in ("intra_bandwidth_gb_s", "inter_bandwidth_gb_s"):
            check_number(f"field '{key}' of [cluster]", getattr(self, key), minimum=0, strict=True, allow_inf=True)
        for key in ("intra_latency_us", "inter_latency_us"):
            check_number(f"field '{key}' of [cluster]", getattr(self, key), minimum=0, strict=False, allow_inf=False)
        object.__setattr__(self, "_node", {self.name(a, i): a for a in range(self.nodes)
                                           for i in range(self.devices_per_node)})
        object.__setattr__(self, "_links", {})

    @staticmethod
    def name(node: int, device: int) -> str:
        return f"n{node}.g{device}"

    @staticmethod
    def nic(node: int) -> str:
        return f"n{node}.nic"

    def devices(self) -> tuple[Device, ...]:
        return tuple(Device(name=self.name(a, i), speed=self.speed, memory_gib=self.memory_gib)
                     for a in range(self.nodes) for i in range(self.devices_per_node))

    def node(self, device: str) -> int:
        return self._node[device]

    def route(self, src: str, dst: str) -> list[Hop]:
        if src == dst:
            return []
        a, b = self._node[src], self._node[dst]
        return [(src, dst)] if a == b else [(self.nic(a), FABRIC)]

    def link(self, hop: Hop) -> Link:
        link = self._links.get(hop)
        if link is None:
            if hop[1] == FABRIC:
                link = Link(src=hop[0], dst=FABRIC, bandwidth_gb_s=self.inter_bandwidth_gb_s,
                            latency_us=self.inter_latency_us, bidirectional=False)
            else:
                link = Link(src=hop[0], dst=hop[1], bandwidth_gb_s=self.intra_bandwidth_gb_s,
                            latency_us=self.intra_latency_us, bidirectional=False)
            self._links[hop] = link
        return link

    def describe(self) -> str:
        return (f"{self.nodes} node(s) x {self.devices_per_node} device(s) (speed {self.speed:g}, "
                f"{self.memory_gib:g} GiB): {self.intra_bandwidth_gb_s:g} GB/s, {self.intra_latency_us:g} us "
                f"inside a node; {self.inter_bandwidth_gb_s:g} GB/s, {self.inter_latency_us:g} us per node NIC")
