"""Hardware scenarios: bundled files, ideal-N, routes, transfer times, clear errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from ddgsim.errors import UserError
from ddgsim.predict.scenario import Device, Link, Scenario, bundled_names, load_scenario

BUNDLED = ["cpu-2core", "hetero-4gpu", "nvlink-8gpu", "pcie-4gpu", "two-node-8gpu"]


def test_bundled_scenarios_load() -> None:
    assert bundled_names() == BUNDLED
    sizes = {name: len(load_scenario(name).devices) for name in BUNDLED}
    assert sizes == {"cpu-2core": 2, "hetero-4gpu": 4, "nvlink-8gpu": 8, "pcie-4gpu": 4, "two-node-8gpu": 8}
    hetero = load_scenario("hetero-4gpu")
    assert [d.speed for d in hetero.devices] == [1.0, 1.0, 0.6, 0.6]
    assert [d.memory_gib for d in hetero.devices] == [32, 32, 16, 16]


def test_pcie_transfer_time() -> None:
    s = load_scenario("pcie-4gpu")
    # 12 GB/s, 10 us: 12e6 bytes take 1 ms + 0.01 ms.
    assert s.transfer_ms("gpu0", "gpu1", 12_000_000) == pytest.approx(1.01)
    assert s.route("gpu0", "gpu3") == [("gpu0", "gpu3")]
    assert s.transfer_ms("gpu2", "gpu2", 10**9) == 0.0


def test_two_node_routes_store_and_forward() -> None:
    s = load_scenario("two-node-8gpu")
    assert s.route("gpu3", "gpu4") == [("gpu3", "gpu4")]
    assert s.route("gpu0", "gpu5") == [("gpu0", "gpu3"), ("gpu3", "gpu4"), ("gpu4", "gpu5")]
    n = 11_000_000  # 1 ms on the 11 GB/s network link, 0.9167 ms on each 12 GB/s PCIe hop
    want = 2 * (0.01 + n / 12e6) + (0.005 + n / 11e6)
    assert s.transfer_ms("gpu0", "gpu5", n) == pytest.approx(want)


def test_ideal() -> None:
    s = load_scenario("ideal-3")
    assert [d.name for d in s.devices] == ["dev0", "dev1", "dev2"]
    assert all(d.speed == 1.0 and math.isinf(d.memory_gib) for d in s.devices)
    assert s.transfer_ms("dev0", "dev2", 10**12) == 0.0
    assert s.graph.number_of_edges() == 6
    with pytest.raises(UserError, match="between 1 and 64"):
        load_scenario("ideal-0")


def test_route_prefers_latency_then_hops() -> None:
    devs = tuple(Device(name=n) for n in "abc")
    s = Scenario(name="t", devices=devs, links=(
        Link(src="a", dst="c", bandwidth_gb_s=100, latency_us=10),
        Link(src="a", dst="b", bandwidth_gb_s=1, latency_us=2),
        Link(src="b", dst="c", bandwidth_gb_s=1, latency_us=2),
    ))
    assert s.route("a", "c") == [("a", "b"), ("b", "c")]  # 4 us beats 10 us
    t = Scenario(name="t", devices=devs, links=(
        Link(src="a", dst="c", bandwidth_gb_s=1, latency_us=0),
        Link(src="a", dst="b", bandwidth_gb_s=1, latency_us=0),
        Link(src="b", dst="c", bandwidth_gb_s=1, latency_us=0),
    ))
    assert t.route("a", "c") == [("a", "c")]  # equal latency: fewer hops


def test_one_way_link_and_disconnected() -> None:
    devs = tuple(Device(name=n) for n in "ab")
    with pytest.raises(UserError, match="disconnected: no route from 'b' to 'a'"):
        Scenario(name="oneway", devices=devs, links=(Link(src="a", dst="b", bandwidth_gb_s=1, bidirectional=False),))
    with pytest.raises(UserError, match="disconnected: no route from 'a' to 'b'"):
        Scenario(name="none", devices=devs)


def write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "s.toml"
    p.write_text(text)
    return str(p)


GOOD = """
name = "mine"
[[devices]]
name = "a"
speed = 2.0
[[devices]]
name = "b"
memory_gib = inf
[[links]]
src = "a"
dst = "b"
bandwidth_gb_s = inf
latency_us = 3.0
"""


def test_load_file(tmp_path: Path) -> None:
    s = load_scenario(write(tmp_path, GOOD))
    assert s.name == "mine" and s.device("a").speed == 2.0 and math.isinf(s.device("b").memory_gib)
    assert s.transfer_ms("b", "a", 10**9) == pytest.approx(0.003)


@pytest.mark.parametrize(("edit", "message"), [
    (("speed = 2.0", "speed = -1"), "field 'speed' of device 'a' must be a number > 0"),
    (("speed = 2.0", "speed = inf"), "field 'speed' of device 'a' must be a number > 0, got inf"),
    (("speed = 2.0", 'speed = "fast"'), "field 'speed' of device 'a'"),
    (("bandwidth_gb_s = inf", "bandwidth_gb_s = 0"), "field 'bandwidth_gb_s' of link a->b must be a number > 0"),
    (("latency_us = 3.0", "latency_us = -3.0"), "field 'latency_us' of link a->b must be a number >= 0"),
    (('dst = "b"', 'dst = "z"'), "link a->z names unknown device 'z' \\(devices: a, b\\)"),
    (("latency_us = 3.0", "latency = 3.0"), "links\\[0\\]: unknown field 'latency'"),
    (('name = "b"', 'name = "a"'), "duplicate device name\\(s\\) a"),
    (("bandwidth_gb_s = inf\n", ""), "links\\[0\\]: field 'bandwidth_gb_s' is missing"),
    (("[[links]]", "[[links]\n"), "not TOML"),
])
def test_malformed_file(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    path = write(tmp_path, GOOD.replace(*edit, 1))
    with pytest.raises(UserError, match=f"malformed scenario .*s.toml: .*{message}"):
        load_scenario(path)


def test_unknown_scenario_lists_names() -> None:
    with pytest.raises(UserError, match="unknown scenario 'nope' \\(bundled: cpu-2core, hetero-4gpu, nvlink-8gpu, pcie-4gpu, two-node-8gpu, ideal-N"):
        load_scenario("nope")
    with pytest.raises(UserError, match="cannot read scenario"):
        load_scenario("/nonexistent/x.toml")
