"""Scenarios by name: the bundled files, ``ideal-N`` and ``cluster-<N>x<G>``; :func:`load_scenario`
takes one of those or a path to a ``.toml`` file."""

from __future__ import annotations

import functools
import math
import re
from importlib import resources
from pathlib import Path

from ddgsim.errors import UserError, choices
from ddgsim.predict.scenario.load import load_file
from ddgsim.predict.scenario.network import Scenario
from ddgsim.predict.scenario.parts import Device, Link
from ddgsim.predict.scenario.rules import IDEAL_MAX_DEVICES, Cluster, FreeMesh

_IDEAL = re.compile(r"^ideal-(\d+)$")
_CLUSTER = re.compile(r"^cluster-(\d+)x(\d+)$")
IDEAL_MESH_DEVICES = 64
"""``ideal-N`` lists its links explicitly up to this N (as before), routes by rule beyond."""


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
