"""Hardware scenarios: bundled files, ideal-N, routes, transfer times, clear errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from ddgsim.errors import UserError
from ddgsim.predict.scenario import Device, Link, Scenario, bundled_names, load_scenario

BUNDLED = ["cpu-2core", "dgx-2x8", "hetero-4gpu", "nvlink-8gpu", "pcie-4gpu", "two-node-8gpu"]


def test_bundled_scenarios_load() -> None:
    assert bundled_names() == BUNDLED
    sizes = {name: len(load_scenario(name).devices) for name in BUNDLED}
    assert sizes == {"cpu-2core": 2, "dgx-2x8": 16, "hetero-4gpu": 4, "nvlink-8gpu": 8, "pcie-4gpu": 4, "two-node-8gpu": 8}
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
    with pytest.raises(UserError, match="between 1 and 4096"):
        load_scenario("ideal-0")
    big = load_scenario("ideal-1024")  # beyond 64 devices: routes by rule, no explicit mesh
    assert len(big.devices) == 1024 and big.route("dev3", "dev1000") == [("dev3", "dev1000")]
    assert big.transfer_ms("dev3", "dev1000", 10**12) == 0.0 and big.route("dev5", "dev5") == []
    with pytest.raises(UserError, match=r"unknown device 'dev1024'"):
        big.route("dev0", "dev1024")


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
    with pytest.raises(UserError, match="unknown scenario 'nope' \\(bundled: cpu-2core, dgx-2x8, hetero-4gpu, nvlink-8gpu, pcie-4gpu, two-node-8gpu, ideal-N"):
        load_scenario("nope")
    with pytest.raises(UserError, match="cannot read scenario"):
        load_scenario("/nonexistent/x.toml")


def test_cluster_routes_by_rule() -> None:
    s = load_scenario("cluster-8x8")
    assert len(s.devices) == 64 and s.devices[0].name == "n0.g0" and s.devices[-1].name == "n7.g7"
    assert s.device("n3.g5").memory_gib == 80 and s.device("n3.g5").speed == 1.0
    # inside a node: the direct link, 300 GB/s and 2 us
    assert s.route("n3.g5", "n3.g1") == [("n3.g5", "n3.g1")]
    assert s.transfer_ms("n3.g5", "n3.g1", 300e6) == pytest.approx(1.002)
    # between nodes: one hop on the sending node's NIC, 25 GB/s and 5 us, whatever the ends
    assert s.route("n3.g5", "n7.g2") == s.route("n3.g0", "n1.g0") == [("n3.nic", "fabric")]
    assert s.transfer_ms("n3.g5", "n7.g2", 25e6) == pytest.approx(1.005)
    assert s.route("n7.g2", "n3.g5") == [("n7.nic", "fabric")]
    assert "300 GB/s" in s.description and "25 GB/s" in s.description
    with pytest.raises(UserError, match=r"unknown device 'n8\.g0'"):
        s.route("n0.g0", "n8.g0")


def test_large_cluster_is_routed_by_rule_not_by_an_all_pairs_table() -> None:
    """1024 devices: an all-pairs route search would take minutes; a cluster is routed by its rules,
    so loading it builds no graph and no route table (speed: benchmarks/bench_cluster_plan.py)."""
    s = load_scenario("cluster-128x8")
    assert s.rules is not None and s.graph.number_of_edges() == 0 and s._routes == {}
    assert len(s.devices) == 1024 and s.route("n127.g7", "n0.g0") == [("n127.nic", "fabric")]
    assert s._routes == {}  # nor does asking for a route fill one
    with pytest.raises(UserError, match="N·G must be between 1 and 4096"):
        load_scenario("cluster-1000x8")


CLUSTER = """
name = "mine"
[cluster]
nodes = 2
devices_per_node = 3
memory_gib = 40
intra_bandwidth_gb_s = 100
intra_latency_us = 1
inter_bandwidth_gb_s = 10
inter_latency_us = 4
"""


def test_cluster_file(tmp_path: Path) -> None:
    s = load_scenario(write(tmp_path, CLUSTER))
    assert [d.name for d in s.devices] == ["n0.g0", "n0.g1", "n0.g2", "n1.g0", "n1.g1", "n1.g2"]
    assert s.device("n1.g2").memory_gib == 40
    assert s.transfer_ms("n0.g0", "n1.g1", 10e6) == pytest.approx(1.004)
    assert s.transfer_ms("n0.g0", "n0.g2", 10e6) == pytest.approx(0.101)
    bundled = load_scenario("dgx-2x8")
    assert bundled.transfer_ms("n0.g0", "n1.g0", 25e6) == pytest.approx(1.005)


@pytest.mark.parametrize(("edit", "message"), [
    (("nodes = 2", "nodes = 0"), "field 'nodes' of \\[cluster\\] must be an integer >= 1"),
    (("nodes = 2", "nodes = 2.5"), "field 'nodes' of \\[cluster\\] must be an integer >= 1"),
    (("nodes = 2\n", ""), "\\[cluster\\]: field 'nodes' is missing"),
    (("memory_gib = 40", "memory = 40"), "\\[cluster\\]: unknown field 'memory'"),
    (("inter_bandwidth_gb_s = 10", "inter_bandwidth_gb_s = 0"), "field 'inter_bandwidth_gb_s' of \\[cluster\\] must be a number > 0"),
    (("intra_latency_us = 1", "intra_latency_us = -1"), "field 'intra_latency_us' of \\[cluster\\] must be a number >= 0"),
    (("[cluster]", "[[devices]]\nname = \"x\"\n[cluster]"), "lists no \\[\\[devices\\]\\] or \\[\\[links\\]\\]"),
])
def test_malformed_cluster(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    with pytest.raises(UserError, match=f"malformed scenario .*s.toml: .*{message}"):
        load_scenario(write(tmp_path, CLUSTER.replace(*edit, 1)))
