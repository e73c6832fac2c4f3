"""A scenario from TOML: :func:`from_dict` builds one from decoded TOML (errors name the bad
field), :func:`load_file` reads a file."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from ddgsim.errors import UserError, choices
from ddgsim.predict.overheads import Overheads
from ddgsim.predict.scenario.network import Scenario
from ddgsim.predict.scenario.parts import AllreduceCurve, Device, Link
from ddgsim.predict.scenario.rules import Cluster

_TOP_KEYS = {"name", "description", "devices", "links", "concurrent_speed", "cluster", "allreduce", "overheads",
             "host_slots"}
_CLUSTER_KEYS = {"nodes", "devices_per_node", "speed", "memory_gib", "intra_bandwidth_gb_s", "intra_latency_us",
                 "inter_bandwidth_gb_s", "inter_latency_us"}
_DEVICE_KEYS = {"name", "speed", "memory_gib", "host"}
_LINK_KEYS = {"src", "dst", "bandwidth_gb_s", "latency_us", "bidirectional"}
_ALLREDUCE_KEYS = {"host", "replicas", "sizes", "ms"}


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
                        concurrent_speed=data.get("concurrent_speed", 1.0), overheads=overheads,
                        host_slots=data.get("host_slots", 0))
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
                    concurrent_speed=data.get("concurrent_speed", 1.0), allreduce=tuple(curves), overheads=overheads,
                    host_slots=data.get("host_slots", 0))


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
