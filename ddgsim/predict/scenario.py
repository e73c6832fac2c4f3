"""Hardware scenarios: devices, links, routes and transfer times (TOML → networkx).

Semantics (shared by the simulator, the max-plus model and the planner):

* A device's ``speed`` is relative to the device the profile was measured on: a unit
  that took ``x`` ms in the profile takes ``x / speed`` ms there. GPU scenarios only
  make sense with a profile measured on that GPU type (speed 1.0 = the profiled GPU).
* A link direction carries one transfer at a time. A transfer of ``n`` bytes over one
  hop takes ``latency_us·1e-3 + n / (bandwidth_gb_s·1e6)`` ms (1 GB = 1e9 bytes) and
  occupies that direction for the whole time, latency included.
* Multi-hop routes are **store-and-forward**: the message crosses hop 1 completely,
  then hop 2, ...; ``transfer_ms`` is the sum over hops.
* Routes are shortest paths by total latency, ties broken by fewer hops, then by the
  order devices are listed (deterministic). They are computed once, for all pairs.

**Clusters** (``[cluster]`` in TOML, or the built-in names ``cluster-<N>x<G>``) are written
compactly and routed by rule, on demand (no all-pairs search: ``cluster-128x8``, 1024
devices, loads in milliseconds)::

    name = "dgx-4x8"
    [cluster]
    nodes = 4                      # N nodes ...
    devices_per_node = 8           # ... of G devices each, named n0.g0 … n3.g7
    speed = 1.0                    # every device (relative to the profiled one)
    memory_gib = 80
    intra_bandwidth_gb_s = 300     # direct link between any two devices of a node, per direction
    intra_latency_us = 2
    inter_bandwidth_gb_s = 25      # each node's network card (NIC), per direction
    inter_latency_us = 5

* Inside a node every pair of devices has its own direct link (NVLink/NVSwitch-class).
* Between nodes a message leaves through its node's NIC: the route is the single hop
  ``n<a>.nic -> fabric``, with the inter-node figures, shared by **every** message that
  leaves node a (whatever its source device and destination node): the NIC is one link
  direction, where traffic of different stages and all-reduces queues. The fabric (a
  non-blocking switch) and the receiving NIC are taken to keep up: contention on the
  receive side is not modelled (a message's hop ends at its arrival).
* ``cluster-<N>x<G>`` (1 ≤ N·G ≤ 4096): devices of speed 1.0 and 80 GiB, 300 GB/s and
  2 µs inside a node (NVLink class), 25 GB/s (200 Gb/s) and 5 µs per node NIC.

**Measured all-reduces** (``[[allreduce]]``, written by ``ddgsim calibrate``): the time (mean
of the middle 80 % of the repetitions) of the backend's own all-reduce among ``replicas`` processes of one ``host``, per size. For an
all-reduce among that many devices of that host it replaces the link model (interpolated
linearly in bytes; see :class:`AllreduceCurve`): on one machine the processes copy through
shared memory and cores, which a link model of independent directions does not describe::

    [[allreduce]]
    host = "local"
    replicas = 2
    sizes = [4, 16384, 262144, 1048576]      # bytes
    ms = [0.19, 0.31, 0.49, 0.77]

``ideal-N`` is a full mesh of free links; beyond 64 devices (up to 4096) its routes are by
rule too (one direct hop between any two devices).
"""

from __future__ import annotations

import functools
import heapq
import math
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from ddgsim.errors import UserError, choices
from ddgsim.predict.overheads import NONE, Overheads

_IDEAL = re.compile(r"^ideal-(\d+)$")
_CLUSTER = re.compile(r"^cluster-(\d+)x(\d+)$")
IDEAL_MAX_DEVICES = 4096
"""``ideal-N`` and ``cluster-<N>x<G>`` accept up to this many devices."""
IDEAL_MESH_DEVICES = 64
"""``ideal-N`` lists its links explicitly up to this N (as before), routes by rule beyond."""
FABRIC = "fabric"
"""Far end of every node's NIC hop in a cluster (``n3.nic -> fabric``)."""


def _number(what: str, value: Any, *, minimum: float, strict: bool, allow_inf: bool) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
    if ok:
        ok = (value > minimum if strict else value >= minimum) and (allow_inf or math.isfinite(value))
    if not ok:
        rel = ">" if strict else ">="
        inf = " (inf allowed)" if allow_inf else ""
        raise UserError(f"{what} must be a number {rel} {minimum:g}{inf}, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class Device:
    """One compute device (a GPU, or a single-thread CPU process)."""

    name: str
    """Unique name, e.g. ``gpu0``; plans refer to devices by this name."""
    speed: float = 1.0
    """Relative to the profiled device: unit time = profiled time / speed."""
    memory_gib: float = math.inf
    """Memory available to one stage, in GiB (2**30 bytes); ``inf`` = unlimited."""
    host: str = ""
    """Devices with the same non-empty host are on one machine: they share its memory system
    (while two of them compute at once each runs at the scenario's ``concurrent_speed``), and
    the scenario's ``[[allreduce]]`` curve for that host times their all-reduces."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise UserError(f"field 'name' of a device must be a non-empty string, got {self.name!r}")
        if not isinstance(self.host, str):
            raise UserError(f"field 'host' of device '{self.name}' must be a string, got {self.host!r}")
        _number(f"field 'speed' of device '{self.name}'", self.speed, minimum=0, strict=True, allow_inf=False)
        _number(f"field 'memory_gib' of device '{self.name}'", self.memory_gib, minimum=0, strict=True, allow_inf=True)

    @property
    def memory_bytes(self) -> float:
        return self.memory_gib * 2**30


@dataclass(frozen=True, kw_only=True)
class Link:
    """A point-to-point link between two devices."""

    src: str
    """Name of the sending device."""
    dst: str
    """Name of the receiving device."""
    bandwidth_gb_s: float
    """Effective bandwidth in GB/s (1e9 bytes per second); ``inf`` allowed."""
    latency_us: float = 0.0
    """Per-message latency in µs (occupies the link like the payload does)."""
    bidirectional: bool = True
    """True: one independent link per direction, same figures."""

    def __post_init__(self) -> None:
        for key in ("src", "dst"):
            value = getattr(self, key)
            if not isinstance(value, str) or not value:
                raise UserError(f"field '{key}' of a link must be a device name, got {value!r}")
        what = f"of link {self.src}->{self.dst}"
        if self.src == self.dst:
            raise UserError(f"field 'dst' {what} must differ from 'src'")
        _number(f"field 'bandwidth_gb_s' {what}", self.bandwidth_gb_s, minimum=0, strict=True, allow_inf=True)
        _number(f"field 'latency_us' {what}", self.latency_us, minimum=0, strict=False, allow_inf=False)
        if not isinstance(self.bidirectional, bool):
            raise UserError(f"field 'bidirectional' {what} must be true or false, got {self.bidirectional!r}")

    def hop_ms(self, nbytes: float) -> float:
        """Time to move ``nbytes`` over this link, in ms."""
        return self.latency_us * 1e-3 + nbytes / (self.bandwidth_gb_s * 1e6)


@dataclass(frozen=True, kw_only=True)
class AllreduceCurve:
    """A measured all-reduce among ``replicas`` devices of one ``host`` (``ddgsim calibrate``), by size.

    Used instead of the link model for any ``replicas`` distinct devices of that host (all pairs
    of a host's devices are taken to be alike, as calibrate assumes). Between two measured sizes
    the time is interpolated linearly in bytes; below the smallest it is the smallest's time;
    beyond the largest the last segment's slope goes on. This is the backend's own algorithm as
    measured (gloo's or NCCL's), so the ``ring``/``tree`` choice does not apply to it.
    """

    host: str
    """The ``host`` of the devices it was measured on."""
    replicas: int
    """Number of processes that took part."""
    sizes: tuple[float, ...]
    """Message sizes in bytes, increasing."""
    ms: tuple[float, ...]
    """Measured time per size (calibrate writes the mean of the middle 80 %), in ms."""

    def __post_init__(self) -> None:
        what = f"[[allreduce]] of host '{self.host}'"
        if not isinstance(self.host, str) or not self.host:
            raise UserError(f"field 'host' of an [[allreduce]] must be a non-empty string, got {self.host!r}")
        r = self.replicas
        if isinstance(r, bool) or not isinstance(r, int) or r < 2:
            raise UserError(f"field 'replicas' of {what} must be an integer >= 2, got {r!r}")
        for key in ("sizes", "ms"):
            values = getattr(self, key)
            if not isinstance(values, (list, tuple)) or len(values) < 2:
                raise UserError(f"field '{key}' of {what} must list at least 2 numbers, got {values!r}")
            for v in values:
                _number(f"field '{key}' of {what}", v, minimum=0, strict=True, allow_inf=False)
            object.__setattr__(self, key, tuple(float(v) for v in values))
        if len(self.sizes) != len(self.ms):
            raise UserError(f"fields 'sizes' and 'ms' of {what} must have the same length, "
                            f"got {len(self.sizes)} and {len(self.ms)}")
        if any(b <= a for a, b in zip(self.sizes, self.sizes[1:], strict=False)):
            raise UserError(f"field 'sizes' of {what} must increase, got {list(self.sizes)}")

    def time_ms(self, nbytes: float | np.ndarray) -> np.ndarray:
        """Interpolated time (ms) of ``nbytes`` (a number or a numpy array)."""
        n = np.asarray(nbytes, dtype=np.float64)
        x, y = np.array(self.sizes), np.array(self.ms)
        slope = (y[-1] - y[-2]) / (x[-1] - x[-2])
        out: np.ndarray = np.where(n > x[-1], y[-1] + (n - x[-1]) * max(slope, 0.0), np.interp(n, x, y))
        return out


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
    """N nodes of G devices: direct links inside a node, one shared NIC per node (module docstring)."""

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
            _number(f"field '{key}' of [cluster]", getattr(self, key), minimum=0, strict=True, allow_inf=True)
        for key in ("intra_latency_us", "inter_latency_us"):
            _number(f"field '{key}' of [cluster]", getattr(self, key), minimum=0, strict=False, allow_inf=False)
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


CLUSTER_DEFAULTS: dict[str, float] = {
    "speed": 1.0, "memory_gib": 80.0,
    "intra_bandwidth_gb_s": 300.0, "intra_latency_us": 2.0,     # NVLink/NVSwitch class, per direction
    "inter_bandwidth_gb_s": 25.0, "inter_latency_us": 5.0,      # 200 Gb/s InfiniBand/RoCE per node
}
"""Figures of the built-in ``cluster-<N>x<G>`` scenarios."""


def cluster(nodes: int, devices_per_node: int, name: str | None = None, description: str = "",
            **figures: float) -> Scenario:
    """A cluster scenario; ``figures`` override :data:`CLUSTER_DEFAULTS`."""
    rules = Cluster(nodes=nodes, devices_per_node=devices_per_node, **{**CLUSTER_DEFAULTS, **figures})
    return Scenario(name=name or f"cluster-{nodes}x{devices_per_node}", devices=rules.devices(), rules=rules,
                    description=description or rules.describe())


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


# ---------------------------------------------------------------- loading

_TOP_KEYS = {"name", "description", "devices", "links", "concurrent_speed", "cluster", "allreduce", "overheads"}
_CLUSTER_KEYS = {"nodes", "devices_per_node", "speed", "memory_gib", "intra_bandwidth_gb_s", "intra_latency_us",
                 "inter_bandwidth_gb_s", "inter_latency_us"}
_DEVICE_KEYS = {"name", "speed", "memory_gib", "host"}
_LINK_KEYS = {"src", "dst", "bandwidth_gb_s", "latency_us", "bidirectional"}
_ALLREDUCE_KEYS = {"host", "replicas", "sizes", "ms"}


def hardware_dir() -> Path:
    """Folder of the bundled scenario files."""
    return Path(str(resources.files("ddgsim.scenarios") / "hardware"))


def bundled_names() -> list[str]:
    return sorted(p.stem for p in hardware_dir().glob("*.toml"))


@functools.lru_cache(maxsize=8)
def ideal(n: int) -> Scenario:
    """``ideal-N``: N devices of speed 1 and unlimited memory, a full mesh of free links (built once
    per N: a scenario is frozen, and its all-pairs routes take a third of a second at N = 64)."""
    if not 1 <= n <= IDEAL_MAX_DEVICES:
        raise UserError(f"scenario 'ideal-{n}': N must be between 1 and {IDEAL_MAX_DEVICES}")
    devs = tuple(Device(name=f"dev{i}", speed=1.0, memory_gib=math.inf) for i in range(n))
    if n > IDEAL_MESH_DEVICES:
        return Scenario(name=f"ideal-{n}", devices=devs, rules=FreeMesh(),
                        description="ideal: infinite bandwidth, zero latency, unit speed, unlimited memory")
    links = tuple(
        Link(src=f"dev{i}", dst=f"dev{j}", bandwidth_gb_s=math.inf, latency_us=0.0, bidirectional=True)
        for i in range(n)
        for j in range(i + 1, n)
    )
    return Scenario(name=f"ideal-{n}", devices=devs, links=links,
                    description="ideal: infinite bandwidth, zero latency, unit speed, unlimited memory")


def _table_list(data: dict[str, Any], key: str, allowed: set[str]) -> list[dict[str, Any]]:
    rows = data.get(key, [])
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise UserError(f"field '{key}' must be an array of tables ([[{key}]])")
    for i, row in enumerate(rows):
        extra = sorted(set(row) - allowed)
        if extra:
            raise UserError(f"{key}[{i}]: unknown field '{extra[0]}' (allowed: {choices(sorted(allowed))})")
    return rows


def from_dict(data: dict[str, Any], default_name: str) -> Scenario:
    """Build a :class:`Scenario` from decoded TOML; errors name the bad field."""
    extra = sorted(set(data) - _TOP_KEYS)
    if extra:
        raise UserError(f"unknown field '{extra[0]}' (allowed: {choices(sorted(_TOP_KEYS))})")
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise UserError(f"field 'name' must be a non-empty string, got {name!r}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise UserError(f"field 'description' must be a string, got {description!r}")
    over = data.get("overheads", {})
    if not isinstance(over, dict):
        raise UserError("field 'overheads' must be a table ([overheads])")
    overheads = Overheads.from_dict(over)
    if "cluster" in data:
        table = data["cluster"]
        if not isinstance(table, dict):
            raise UserError("field 'cluster' must be a table ([cluster])")
        if "devices" in data or "links" in data:
            raise UserError("a [cluster] scenario lists no [[devices]] or [[links]] (they follow from [cluster])")
        extra = sorted(set(table) - _CLUSTER_KEYS)
        if extra:
            raise UserError(f"[cluster]: unknown field '{extra[0]}' (allowed: {choices(sorted(_CLUSTER_KEYS))})")
        for key in ("nodes", "devices_per_node", "intra_bandwidth_gb_s", "inter_bandwidth_gb_s"):
            if key not in table:
                raise UserError(f"[cluster]: field '{key}' is missing")
        rules = Cluster(**table)
        devs = rules.devices()
        return Scenario(name=name, description=description or rules.describe(), devices=devs, rules=rules,
                        concurrent_speed=data.get("concurrent_speed", 1.0), overheads=overheads)
    devices = []
    for i, row in enumerate(_table_list(data, "devices", _DEVICE_KEYS)):
        if "name" not in row:
            raise UserError(f"devices[{i}]: field 'name' is missing")
        devices.append(Device(**row))
    links = []
    for i, row in enumerate(_table_list(data, "links", _LINK_KEYS)):
        for key in ("src", "dst", "bandwidth_gb_s"):
            if key not in row:
                raise UserError(f"links[{i}]: field '{key}' is missing")
        links.append(Link(**row))
    curves = []
    for i, row in enumerate(_table_list(data, "allreduce", _ALLREDUCE_KEYS)):
        missing = sorted(_ALLREDUCE_KEYS - set(row))
        if missing:
            raise UserError(f"allreduce[{i}]: field '{missing[0]}' is missing")
        curves.append(AllreduceCurve(**row))
    return Scenario(name=name, description=description, devices=tuple(devices), links=tuple(links),
                    concurrent_speed=data.get("concurrent_speed", 1.0), allreduce=tuple(curves), overheads=overheads)


def load_file(path: Path) -> Scenario:
    try:
        text = path.read_text()
    except OSError as exc:
        raise UserError(f"cannot read scenario {path}: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"malformed scenario {path}: not TOML ({exc})") from None
    try:
        return from_dict(data, default_name=path.stem)
    except UserError as exc:
        raise UserError(f"malformed scenario {path}: {exc}") from None


def load_scenario(name_or_path: str) -> Scenario:
    """A bundled name (``pcie-4gpu``), ``ideal-N``, or a path to a ``.toml`` file."""
    m = _IDEAL.match(name_or_path)
    if m:
        return ideal(int(m.group(1)))
    m = _CLUSTER.match(name_or_path)
    if m and not (hardware_dir() / f"{name_or_path}.toml").is_file():
        nodes, per = int(m.group(1)), int(m.group(2))
        if not 1 <= nodes * per <= IDEAL_MAX_DEVICES or not nodes or not per:
            raise UserError(f"scenario '{name_or_path}': N·G must be between 1 and {IDEAL_MAX_DEVICES}")
        return cluster(nodes, per)
    if name_or_path.endswith(".toml") or "/" in name_or_path or "\\" in name_or_path:
        return load_file(Path(name_or_path))
    path = hardware_dir() / f"{name_or_path}.toml"
    if not path.is_file():
        raise UserError(
            f"unknown scenario '{name_or_path}' (bundled: {choices(bundled_names())}, "
            f"ideal-N for 1 <= N <= {IDEAL_MAX_DEVICES}, cluster-<N>x<G>, or a path to a .toml file)"
        )
    return load_file(path)
