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

The package, one idea a module (every name is re-exported here):

* :mod:`~ddgsim.predict.scenario.parts` — a device, a link, a measured all-reduce curve;
* :mod:`~ddgsim.predict.scenario.rules` — routes and links by rule (``ideal-N`` beyond 64 devices,
  clusters);
* :mod:`~ddgsim.predict.scenario.network` — :class:`Scenario`: the devices, their links and the
  routes between them;
* :mod:`~ddgsim.predict.scenario.load` — a scenario from TOML (:func:`from_dict`, :func:`load_file`);
* :mod:`~ddgsim.predict.scenario.named` — scenarios by name: bundled files, ``ideal-N``,
  ``cluster-<N>x<G>`` (:func:`load_scenario`).
"""

from ddgsim.predict.scenario.load import from_dict, load_file
from ddgsim.predict.scenario.named import (
    CLUSTER_DEFAULTS,
    IDEAL_MESH_DEVICES,
    bundled_names,
    cluster,
    hardware_dir,
    ideal,
    load_scenario,
)
from ddgsim.predict.scenario.network import Scenario
from ddgsim.predict.scenario.parts import AllreduceCurve, Device, Link
from ddgsim.predict.scenario.rules import FABRIC, IDEAL_MAX_DEVICES, Cluster, FreeMesh, Hop, Routing

__all__ = [
    "CLUSTER_DEFAULTS", "FABRIC", "IDEAL_MAX_DEVICES", "IDEAL_MESH_DEVICES", "AllreduceCurve", "Cluster",
    "Device", "FreeMesh", "Hop", "Link", "Routing", "Scenario", "bundled_names", "cluster", "from_dict",
    "hardware_dir", "ideal", "load_file", "load_scenario",
]
