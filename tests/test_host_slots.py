"""More stage processes than a host has cores for: ``host_slots`` in the scenario, the simulator's
contention factors, calibrate's figure and validate's widened scenario."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sim_helpers import chain, make_profile

from ddgsim.errors import UserError
from ddgsim.predict.contention import contention_factors, speed_at
from ddgsim.predict.event_sim import simulate
from ddgsim.predict.scenario import Scenario, from_dict
from ddgsim.trace import TraceEvent


def _host(K: int, c: float = 1.0, slots: int = 0) -> Scenario:
    base = chain(K)
    return replace(base, devices=tuple(replace(d, host="vm") for d in base.devices), concurrent_speed=c,
                   host_slots=slots)


def _busy(row: str, start: float, end: float, cat: str = "F") -> TraceEvent:
    return TraceEvent(row=row, name=f"{row}{cat}", start_ms=start, end_ms=end, cat=cat)


def test_speed_at() -> None:
    assert speed_at(1, 0.9, 2) == 1.0
    assert speed_at(2, 0.9, 2) == pytest.approx(0.9)
    assert speed_at(3, 0.9, 2) == pytest.approx(0.9 * 2 / 3)
    assert speed_at(4, 1.0, 2) == pytest.approx(0.5)
    assert speed_at(4, 1.0, 0) == 1.0  # no limit
    assert speed_at(1, 1.0, 1) == 1.0


def test_three_processes_on_two_slots_by_hand() -> None:
    names = ["d0", "d1", "d2"]
    # d0 and d1 compute over 0-10, d2 over 5-10 (and waits before: not computing)
    tl = [_busy("d0", 0, 10), _busy("d1", 0, 6), _busy("d1", 6, 10, "B"), _busy("d2", 5, 10, "U"),
          TraceEvent(row="d2", name="wait", start_ms=0, end_ms=5, cat="W")]
    got = contention_factors(tl, names, _host(3, c=0.8, slots=2))
    assert got is not None
    # d0: 0-5 with one other (1/0.8), 5-10 with two others (1/(0.8·2/3))
    assert got["d0"] == pytest.approx((5 / 0.8 + 5 / (0.8 * 2 / 3)) / 10)
    assert got["d1"] == pytest.approx(got["d0"])
    assert got["d2"] == pytest.approx(1 / (0.8 * 2 / 3))
    # without the slot limit only the concurrent speed is left: the formula from before
    free = contention_factors(tl, names, _host(3, c=0.8))
    assert free == {"d0": pytest.approx(1 / 0.8), "d1": pytest.approx(1 / 0.8), "d2": pytest.approx(1 / 0.8)}
    # slots alone (memory does not slow them): only the three-at-once span counts
    alone = contention_factors(tl, names, _host(3, c=1.0, slots=2))
    assert alone == {"d0": pytest.approx(1.25), "d1": pytest.approx(1.25), "d2": pytest.approx(1.5)}
    # two processes on two slots and c = 1: nothing to slow
    assert contention_factors(tl[:3], ["d0", "d1"], _host(2, c=1.0, slots=2)) is None


intervals = st.lists(st.tuples(st.integers(0, 40), st.integers(1, 10)), max_size=4)


@given(st.lists(intervals, min_size=2, max_size=4), st.sampled_from([0.6, 0.9, 1.0]), st.integers(0, 4))
@settings(max_examples=60, deadline=None)
def test_factors_match_a_fine_grid(rows: list[list[tuple[int, int]]], c: float, slots: int) -> None:
    """Each device's factor is the mean of 1/speed over its compute, the speed set by how many of the
    host's devices compute at that moment — checked on a grid of quarter milliseconds."""
    names = [f"d{i}" for i in range(len(rows))]
    tl, spans = [], {}
    for name, row in zip(names, rows, strict=True):
        t, mine = 0, []
        for gap, length in row:  # back to back or apart, never overlapping on one device
            mine.append((t + gap, t + gap + length))
            t += gap + length
        spans[name] = mine
        tl += [_busy(name, a, b) for a, b in mine]
    got = contention_factors(tl, names, _host(len(names), c=c, slots=slots))
    step = 0.25
    for name in names:
        own = [(a, b) for a, b in spans[name]]
        total = sum(b - a for a, b in own)
        grid = [a + step * (i + 0.5) for a, b in own for i in range(int((b - a) / step))]
        others = [iv for o in names if o != name for iv in spans[o]]
        want = sum(step / speed_at(1 + sum(1 for s, e in others if s <= x < e), c, slots) for x in grid)
        factor = 1.0 if got is None else got[name]
        assert factor * total == pytest.approx(want if total else 0.0, abs=1e-9)


def test_simulated_three_stages_on_two_slots() -> None:
    """ddg-pipelined on three equal stages keeps all three busy: on two slots each runs at 2/3."""
    prof = make_profile([1.0, 1.0, 1.0], [2.0, 2.0, 2.0])
    free = simulate(prof, [1, 2], _host(3), "ddg-pipelined").iteration_ms
    shared = simulate(prof, [1, 2], _host(3, slots=2), "ddg-pipelined").iteration_ms
    assert shared == pytest.approx(1.5 * free, rel=0.02)
    # three slots: as free; bp never computes two at once: as free
    assert simulate(prof, [1, 2], _host(3, slots=3), "ddg-pipelined").iteration_ms == pytest.approx(free)
    assert simulate(prof, [1, 2], _host(3, slots=1), "bp").iteration_ms == pytest.approx(
        simulate(prof, [1, 2], _host(3), "bp").iteration_ms)


def test_scenario_host_slots_field() -> None:
    devices = [{"name": "a", "host": "h"}, {"name": "b", "host": "h"}]
    links = [{"src": "a", "dst": "b", "bandwidth_gb_s": 1.0}]
    assert from_dict({"devices": devices, "links": links}, "x").host_slots == 0
    assert from_dict({"host_slots": 2, "devices": devices, "links": links}, "x").host_slots == 2
    for bad in (-1, 1.5, "two", True):
        with pytest.raises(UserError, match="field 'host_slots' must be an integer >= 0"):
            from_dict({"host_slots": bad, "devices": devices, "links": links}, "x")


def test_widened_adds_devices_on_the_host_with_their_links() -> None:
    from ddgsim.calibrate.local_scenario import widened

    base = from_dict({"host_slots": 2, "devices": [{"name": "cpu0", "host": "local", "memory_gib": 8.0},
                                                   {"name": "cpu1", "host": "local", "memory_gib": 8.0}],
                      "links": [{"src": "cpu0", "dst": "cpu1", "bandwidth_gb_s": 3.5, "latency_us": 110.0}]}, "local")
    assert widened(base, 2) is base
    wide = widened(base, 4)
    assert [d.name for d in wide.devices] == ["cpu0", "cpu1", "cpu2", "cpu3"]
    assert {d.host for d in wide.devices} == {"local"} and {d.memory_gib for d in wide.devices} == {8.0}
    assert wide.host_slots == 2
    for a in ("cpu0", "cpu1", "cpu2", "cpu3"):
        for b in ("cpu0", "cpu1", "cpu2", "cpu3"):
            if a != b:
                assert wide.route(a, b) == [(a, b)]
                assert wide.link((a, b)).bandwidth_gb_s == 3.5 and wide.link((a, b)).latency_us == 110.0


def test_calibrated_host_slots() -> None:
    from ddgsim.calibrate.scenario_file import host_slots

    assert host_slots(2, 1) == 2
    assert host_slots(16, 4) == 4
    assert host_slots(2, 4) == 1
    assert host_slots(None, 1) == 1
