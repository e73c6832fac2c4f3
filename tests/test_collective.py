"""All-reduce closed forms (ddgsim.predict.collective) on the scenario's link model."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from ddgsim.predict.collective import (
    allreduce_ms,
    ring_closed_form,
    ring_ms,
    tree_closed_form,
    tree_levels,
    tree_ms,
)
from ddgsim.predict.scenario import Device, Link, Scenario


def mesh(D: int, bw: float, lat: float) -> Scenario:
    devs = tuple(Device(name=f"d{i}") for i in range(D))
    links = tuple(Link(src=f"d{i}", dst=f"d{j}", bandwidth_gb_s=bw, latency_us=lat)
                  for i in range(D) for j in range(i + 1, D))
    return Scenario(name="mesh", devices=devs, links=links)


@given(st.integers(1, 12), st.floats(1e3, 1e9), st.floats(0.1, 100.0), st.floats(0.0, 50.0))
def test_ring_on_a_mesh_is_the_textbook_formula(D: int, n: float, bw: float, lat: float) -> None:
    sc = mesh(D, bw, lat)
    devs = [d.name for d in sc.devices]
    assert math.isclose(float(ring_ms(sc, devs, n)), ring_closed_form(D, n, bw, lat), rel_tol=1e-12, abs_tol=1e-15)


@given(st.integers(2, 12), st.floats(1e3, 1e9), st.floats(0.1, 100.0), st.floats(0.0, 50.0), st.integers(1, 16))
def test_tree_on_a_mesh_is_the_textbook_formula(D: int, n: float, bw: float, lat: float, c: int) -> None:
    sc = mesh(D, bw, lat)
    devs = [d.name for d in sc.devices]
    assert math.isclose(float(tree_ms(sc, devs, n, chunks=c)), tree_closed_form(D, n, bw, lat, c), rel_tol=1e-12)
    assert float(tree_ms(sc, devs, n)) <= float(tree_ms(sc, devs, n, chunks=c)) * (1 + 1e-12)


def test_tree_levels_are_a_binary_tree_of_depth_floor_log2() -> None:
    for D in range(2, 40):
        levels = tree_levels([str(i) for i in range(D)])
        assert len(levels) == int(math.log2(D))
        children = [int(c) for lvl in levels for c, _ in lvl]
        assert sorted(children) == list(range(1, D))


def test_a_shared_link_direction_slows_the_ring() -> None:
    # Four devices on a line d0-d1-d2-d3, ring order d0 d2 d1 d3: the edges d0->d2 and d1->d3
    # both cross d1->d2, and d2->d1 and d3->d0 both cross d2->d1: two chunks per step there.
    devs = tuple(Device(name=f"d{i}") for i in range(4))
    links = tuple(Link(src=f"d{i}", dst=f"d{i + 1}", bandwidth_gb_s=1.0, latency_us=0.0) for i in range(3))
    sc = Scenario(name="line", devices=devs, links=links)
    n = 4e6  # one chunk of 1e6 bytes takes 1 ms per hop
    assert math.isclose(float(ring_ms(sc, ["d0", "d2", "d1", "d3"], n)), 2 * 3 * 2.0)
    assert math.isclose(float(ring_ms(sc, ["d0", "d1", "d2", "d3"], n)), 2 * 3 * 1.0)


def test_one_device_costs_nothing_and_arrays_work() -> None:
    sc = mesh(3, 10.0, 5.0)
    assert float(allreduce_ms(sc, ["d0"], 1e6, "tree")) == 0.0
    got = allreduce_ms(sc, ["d0", "d1", "d2"], np.array([1e3, 1e6]))
    assert got.shape == (2,) and got[0] < got[1]
