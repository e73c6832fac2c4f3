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
    span_buckets,
    tree_closed_form,
    tree_levels,
    tree_ms,
    update_allreduce_ms,
)
from ddgsim.predict.scenario import Device, Link, Scenario
from ddgsim.replicas import BUCKET_BYTES, FIRST_BUCKET_BYTES, bucket_ready


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


@given(st.lists(st.sampled_from([0, 1, 4096, 2**19, 2**20, 3 * 2**20, 30 * 2**20]), min_size=1, max_size=9),
       st.sampled_from([(BUCKET_BYTES, FIRST_BUCKET_BYTES), (2**21, 2**20), (100, 10)]))
def test_span_buckets_are_the_executors_buckets_of_every_span(params: list[int], limits: tuple[int, int]) -> None:
    """Every span's buckets are what ``bucket_ready`` (the executor's ``plan_buckets``) forms for
    that stage, in order, zero-padded; empty spans have none."""
    cap, first = limits
    table = span_buckets(params, cap, first)
    n = len(params)
    for i in range(n + 1):
        for j in range(n + 1):
            got = [float(b) for b in table[i, j] if b > 0]
            want = [b for _, b in bucket_ready(params[i:j], [1.0] * (j - i), cap, first)] if j > i else []
            assert got == want, (i, j)


def test_each_bucket_pays_its_own_latency() -> None:
    """Two buckets cost two all-reduces (each with its latency), not one of their sum."""
    sc = Scenario(name="m", devices=(Device(name="a"), Device(name="b")),
                  links=(Link(src="a", dst="b", bandwidth_gb_s=math.inf, latency_us=2000.0),))
    one = float(update_allreduce_ms(sc, ["a", "b"], [3.0], "ring", last=False))
    two = float(update_allreduce_ms(sc, ["a", "b"], [1.0, 2.0], "ring", last=False))
    assert one == 4.0 and two == 8.0  # 2·(D−1)·α per all-reduce, α = 2 ms
    assert float(update_allreduce_ms(sc, ["a", "b"], [1.0, 2.0], "ring", last=True)) == 12.0  # + the loss's
    assert update_allreduce_ms(sc, ["a"], np.ones((3, 4, 2)), "ring", last=True).shape == (3, 4)
