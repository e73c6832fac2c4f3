"""Measured all-reduce curves in scenarios (``[[allreduce]]``): interpolation, where they apply,
the one-line errors for bad tables, and the SimPy model and cost model both using them."""

from __future__ import annotations

import tomllib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sim_helpers import make_profile

from ddgsim.errors import UserError
from ddgsim.predict.collective import LOSS_BYTES, allreduce_ms, ring_ms
from ddgsim.predict.event_sim import simulate
from ddgsim.predict.max_plus import costs_for_splits, unit_update_ms
from ddgsim.predict.scenario import AllreduceCurve, from_dict
from ddgsim.replicas import Layout

SIZES = [4.0, 1024.0, 65536.0, 1048576.0, 4194304.0]
MS = [0.2, 0.21, 0.3, 0.8, 4.0]

TOML = """
name = "two-hosts"
[[devices]]
name = "a0"
host = "a"
[[devices]]
name = "a1"
host = "a"
[[devices]]
name = "a2"
host = "a"
[[devices]]
name = "b0"
host = "b"
[[links]]
src = "a0"
dst = "a1"
bandwidth_gb_s = 3.0
latency_us = 100
[[links]]
src = "a1"
dst = "a2"
bandwidth_gb_s = 3.0
latency_us = 100
[[links]]
src = "a0"
dst = "a2"
bandwidth_gb_s = 3.0
latency_us = 100
[[links]]
src = "a0"
dst = "b0"
bandwidth_gb_s = 1.0
latency_us = 10
[[allreduce]]
host = "a"
replicas = 2
sizes = [4, 1024, 65536, 1048576, 4194304]
ms = [0.2, 0.21, 0.3, 0.8, 4.0]
"""


def scenario(extra: str = "", **override: object):
    data = tomllib.loads(TOML + extra)
    data["allreduce"][0].update(override)
    return from_dict(data, "x")


def test_the_curve_is_exact_at_its_points_and_linear_between() -> None:
    c = AllreduceCurve(host="a", replicas=2, sizes=SIZES, ms=MS)
    assert list(c.time_ms(np.array(SIZES))) == pytest.approx(MS)
    mid = (65536 + 1048576) / 2
    assert float(c.time_ms(mid)) == pytest.approx((0.3 + 0.8) / 2)
    assert float(c.time_ms(1)) == pytest.approx(0.2)  # below the smallest: the smallest's time
    slope = (4.0 - 0.8) / (4194304 - 1048576)  # beyond the largest: the last segment goes on
    assert float(c.time_ms(8388608)) == pytest.approx(4.0 + slope * 4194304)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(1, 1e9), min_size=2, max_size=8, unique=True),
       st.lists(st.floats(1e-3, 1e3), min_size=8, max_size=8), st.floats(0, 2e9), st.floats(0, 2e9))
def test_a_curve_of_increasing_times_is_increasing_everywhere(sizes, times, x, y) -> None:
    sizes = sorted(sizes)
    c = AllreduceCurve(host="h", replicas=2, sizes=sizes, ms=sorted(times[: len(sizes)]))
    lo, hi = sorted((x, y))
    assert float(c.time_ms(lo)) <= float(c.time_ms(hi)) + 1e-12


def test_it_applies_to_that_many_devices_of_its_host_only() -> None:
    sc = scenario()
    n = 1048576
    for devs in (["a0", "a1"], ["a2", "a0"], ["a1", "a2"]):
        assert float(allreduce_ms(sc, devs, n, "ring")) == pytest.approx(0.8)
        assert float(allreduce_ms(sc, devs, n, "tree")) == pytest.approx(0.8)
    for devs in (["a0", "b0"], ["a0", "a1", "a2"]):  # two hosts / three replicas: the links
        assert sc.measured_allreduce(devs) is None
        assert float(allreduce_ms(sc, devs, n, "ring")) == pytest.approx(float(ring_ms(sc, devs, n)))


@pytest.mark.parametrize(("extra", "override", "message"), [
    ("", {"host": "c"}, "names host 'c', which no device has"),
    ("", {"replicas": 1}, "field 'replicas' of [[allreduce]] of host 'a' must be an integer >= 2, got 1"),
    ("", {"sizes": [4, 4, 8, 9, 10]}, "field 'sizes' of [[allreduce]] of host 'a' must increase"),
    ("", {"ms": [1.0, 2.0]}, "must have the same length, got 5 and 2"),
    ("", {"ms": [0.2, 0.21, -0.3, 0.8, 4.0]}, "field 'ms' of [[allreduce]] of host 'a' must be a number > 0"),
    ("", {"sizes": [4]}, "field 'sizes' of [[allreduce]] of host 'a' must list at least 2 numbers"),
    ("[[allreduce]]\nhost = \"a\"\nreplicas = 2\nsizes = [1, 2]\nms = [1, 2]\n", {}, "is given twice"),
    ("[[allreduce]]\nhost = \"a\"\nreplicas = 3\nsizes = [1, 2]\n", {}, "allreduce[1]: field 'ms' is missing"),
    ("", {"bytes": [1, 2]}, "allreduce[0]: unknown field 'bytes'"),
])
def test_bad_tables_get_one_line_naming_the_field(extra: str, override: dict, message: str) -> None:
    with pytest.raises(UserError) as err:
        scenario(extra, **override)
    assert message in str(err.value) and "\n" not in str(err.value)


@settings(max_examples=15, deadline=None)
@given(st.sampled_from([4.0, 5000.0, 1048576.0, 3e6, 9e6]), st.sampled_from(["ring", "tree"]))
def test_simpy_and_the_cost_model_take_the_measured_time(nbytes: float, algorithm: str) -> None:
    # One stage of 2 replicas on host a and no compute: an iteration is the gradients' all-reduce,
    # the loss shares' (LOSS_BYTES, the last stage's), both from the curve, and the update.
    sc = scenario()
    c = sc.measured_allreduce(["a0", "a1"])
    assert c is not None
    prof = make_profile([0.0], [0.0], param_bytes=[int(nbytes)], batch_size=64)
    layout = Layout((("a0", "a1"),))
    want = float(c.time_ms(int(nbytes))) + float(c.time_ms(LOSS_BYTES))
    costs = costs_for_splits(prof, [[]], sc, layout=layout, allreduce=algorithm)
    assert costs.allreduce_ms is not None
    assert float(costs.allreduce_ms[0, 0]) == pytest.approx(want)
    r = simulate(prof, [], sc, "bp", layout=layout, allreduce=algorithm, iterations=6)
    assert r.iteration_ms - sum(unit_update_ms(prof)) == pytest.approx(want)
