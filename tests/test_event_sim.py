"""SimPy model: hand-checked timelines (2 stages x 3 batches) and the SimResult it reports."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from sim_helpers import cases, chain, make_profile

from ddgsim.errors import UserError
from ddgsim.predict.event_sim import run_schedule, simulate
from ddgsim.predict.max_plus import costs_for_splits
from ddgsim.predict.scenario import Scenario
from ddgsim.schedule import make_schedule

# Two units = two stages. Stage 0: F 1 ms, B 2 ms; stage 1: F 2 ms, B 3 ms; no
# parameters, so U takes 0 ms. One link d0<->d1: 1 ms latency, infinite bandwidth,
# so every message (activation after F, gradient after B) takes exactly 1 ms.
# With M = 2 micro-batches every F/B takes half as long; each message still 1 ms.
PROFILE = make_profile([1, 2], [2, 3])
SCENARIO = chain(2, latency_us=1000.0)


def log(name: str, micro: int = 1) -> list[tuple[str, str, float, float]]:
    costs = costs_for_splits(PROFILE, [[1]], SCENARIO, micro_batches=micro)
    timeline, _, _ = run_schedule(make_schedule(name, 2, 3, micro), costs)
    return [(e.row, e.name, e.start_ms, e.end_ms) for e in timeline]


def rows(entries: list[tuple[str, str, float, float]], row: str) -> list[tuple[str, float, float]]:
    return [(name, s, e) for r, name, s, e in entries if r == row]


def test_bp_timeline() -> None:
    # stage 0 | 0F0 0-1 | ........ | 0B0 8-10 0U0 10 | 0F1 10-11 | ... | 0B1 18-20 ...
    # link    | act 1-2 |                grad 7-8      | act 11-12
    # stage 1 |          1F0 2-4  1B0 4-7  1U0 7      |            1F1 12-14 1B1 14-17
    # One batch at a time: period = 1+1+2+3+1+2 = 10 ms.
    out = log("bp")
    assert rows(out, "d0") == [
        ("0F0", 0, 1), ("0B0", 8, 10), ("0U0", 10, 10),
        ("0F1", 10, 11), ("0B1", 18, 20), ("0U1", 20, 20),
        ("0F2", 20, 21), ("0B2", 28, 30), ("0U2", 30, 30),
    ]
    assert rows(out, "d1") == [
        ("1F0", 2, 4), ("1B0", 4, 7), ("1U0", 7, 7),
        ("1F1", 12, 14), ("1B1", 14, 17), ("1U1", 17, 17),
        ("1F2", 22, 24), ("1B2", 24, 27), ("1U2", 27, 27),
    ]
    assert rows(out, "d0->d1") == [("act 0F0", 1, 2), ("act 0F1", 11, 12), ("act 0F2", 21, 22)]
    assert rows(out, "d1->d0") == [("grad 1B0", 7, 8), ("grad 1B1", 17, 18), ("grad 1B2", 27, 28)]


def test_ddg_timeline() -> None:
    # stage 0 (d=1): F0 | W0 waits for 1B0's gradient (arrives 8) | F1 B0 U0 | W1 (grad of
    # batch 1 arrives 16) | F2 B1 U1.  Stage 1 runs F t, B t, U t as inputs arrive.
    #   0F0 0-1   0W0 1-8   0F1 8-9   0B0 9-11  0U0 11   0W1 11-16  0F2 16-17  0B1 17-19
    #   1F0 2-4   1B0 4-7   1F1 10-12 (act of 0F1 arrives 10)  1B1 12-15  1F2 18-20  1B2 20-23
    # Period (stage-0 F starts 0, 8, 16) = 8 ms.
    out = log("ddg")
    assert rows(out, "d0") == [
        ("0F0", 0, 1), ("0W0", 1, 8), ("0F1", 8, 9), ("0B0", 9, 11), ("0U0", 11, 11),
        ("0W1", 11, 16), ("0F2", 16, 17), ("0B1", 17, 19), ("0U1", 19, 19),
    ]
    assert rows(out, "d1") == [
        ("1F0", 2, 4), ("1B0", 4, 7), ("1U0", 7, 7),
        ("1F1", 10, 12), ("1B1", 12, 15), ("1U1", 15, 15),
        ("1F2", 18, 20), ("1B2", 20, 23), ("1U2", 23, 23),
    ]
    assert rows(out, "d1->d0") == [("grad 1B0", 7, 8), ("grad 1B1", 15, 16), ("grad 1B2", 23, 24)]


def test_ddg_pipelined_timeline() -> None:
    # Stage 0 forwards batch 1 at once (0F1 1-2; its activation queues on the link: 2-3)
    # and waits only before 0B0 (gradient arrives 8).
    #   0F0 0-1  0F1 1-2  0B0 8-10  0U0 10  0F2 10-11  0B1 13-15 (grad of 1B1 arrives 13)
    #   1F0 2-4  1B0 4-7  1F1 7-9   1B1 9-12  1F2 12-14 (act of 0F2 arrives 12)  1B2 14-17
    out = log("ddg-pipelined")
    assert rows(out, "d0") == [
        ("0F0", 0, 1), ("0F1", 1, 2), ("0B0", 8, 10), ("0U0", 10, 10),
        ("0F2", 10, 11), ("0B1", 13, 15), ("0U1", 15, 15),
    ]
    assert rows(out, "d1") == [
        ("1F0", 2, 4), ("1B0", 4, 7), ("1U0", 7, 7),
        ("1F1", 7, 9), ("1B1", 9, 12), ("1U1", 12, 12),
        ("1F2", 12, 14), ("1B2", 14, 17), ("1U2", 17, 17),
    ]
    assert rows(out, "d0->d1") == [("act 0F0", 1, 2), ("act 0F1", 2, 3), ("act 0F2", 11, 12)]


def test_gpipe_timeline() -> None:
    # M = 2: stage 0 F 0.5, B 1; stage 1 F 1, B 1.5; messages 1 ms, FIFO per direction.
    #   0F0 0-.5  0F0.1 .5-1  | act .5-1.5, act.1 1.5-2.5 (queued behind the first)
    #   1F0 1.5-2.5  1F0.1 2.5-3.5  1B0.1 3.5-5  1B0 5-6.5 | grad.1 5-6, grad 6.5-7.5
    #   0B0.1 6-7  0B0 7.5-8.5  0U0 8.5 -> next batch starts 8.5: period 8.5 ms.
    out = log("gpipe", 2)
    assert rows(out, "d0") == [
        ("0F0", 0, 0.5), ("0F0.1", 0.5, 1), ("0B0.1", 6, 7), ("0B0", 7.5, 8.5), ("0U0", 8.5, 8.5),
        ("0F1", 8.5, 9), ("0F1.1", 9, 9.5), ("0B1.1", 14.5, 15.5), ("0B1", 16, 17), ("0U1", 17, 17),
        ("0F2", 17, 17.5), ("0F2.1", 17.5, 18), ("0B2.1", 23, 24), ("0B2", 24.5, 25.5), ("0U2", 25.5, 25.5),
    ]
    assert rows(out, "d1") == [
        ("1F0", 1.5, 2.5), ("1F0.1", 2.5, 3.5), ("1B0.1", 3.5, 5), ("1B0", 5, 6.5), ("1U0", 6.5, 6.5),
        ("1F1", 10, 11), ("1F1.1", 11, 12), ("1B1.1", 12, 13.5), ("1B1", 13.5, 15), ("1U1", 15, 15),
        ("1F2", 18.5, 19.5), ("1F2.1", 19.5, 20.5), ("1B2.1", 20.5, 22), ("1B2", 22, 23.5), ("1U2", 23.5, 23.5),
    ]


def test_1f1b_timeline() -> None:
    # Stage 0 warms up with min(K-1-k, M) = 1 extra forward, stage 1 alternates F/B.
    #   0F0 0-.5  0F0.1 .5-1  0B0 5-6 (grad 4-5)  0B0.1 7.5-8.5 (grad 6.5-7.5)  0U0 8.5
    #   1F0 1.5-2.5  1B0 2.5-4  1F0.1 4-5 (act arrived 2.5)  1B0.1 5-6.5  1U0 6.5
    out = log("1f1b", 2)
    assert rows(out, "d0") == [
        ("0F0", 0, 0.5), ("0F0.1", 0.5, 1), ("0B0", 5, 6), ("0B0.1", 7.5, 8.5), ("0U0", 8.5, 8.5),
        ("0F1", 8.5, 9), ("0F1.1", 9, 9.5), ("0B1", 13.5, 14.5), ("0B1.1", 16, 17), ("0U1", 17, 17),
        ("0F2", 17, 17.5), ("0F2.1", 17.5, 18), ("0B2", 22, 23), ("0B2.1", 24.5, 25.5), ("0U2", 25.5, 25.5),
    ]
    assert rows(out, "d1") == [
        ("1F0", 1.5, 2.5), ("1B0", 2.5, 4), ("1F0.1", 4, 5), ("1B0.1", 5, 6.5), ("1U0", 6.5, 6.5),
        ("1F1", 10, 11), ("1B1", 11, 12.5), ("1F1.1", 12.5, 13.5), ("1B1.1", 13.5, 15), ("1U1", 15, 15),
        ("1F2", 18.5, 19.5), ("1B2", 19.5, 21), ("1F2.1", 21, 22), ("1B2.1", 22, 23.5), ("1U2", 23.5, 23.5),
    ]


@pytest.mark.parametrize(("name", "micro", "period", "stale"), [
    ("bp", 1, 10.0, (0, 0)), ("ddg", 1, 8.0, (1, 0)), ("ddg-pipelined", 1, 5.0, (1, 0)),
    ("gpipe", 2, 8.5, (0, 0)), ("1f1b", 2, 8.5, (0, 0)),
])
def test_simulate_report(name: str, micro: int, period: float, stale: tuple[int, int]) -> None:
    # Steady state of the timelines above; ddg-pipelined settles at max(1+2, 2+3) = 5 ms.
    r = simulate(PROFILE, [1], SCENARIO, name, micro_batches=micro, iterations=20)
    assert r.iteration_ms == pytest.approx(period)
    assert r.staleness == stale
    assert r.bp_iteration_ms == pytest.approx(10.0)
    assert r.speedup_vs_bp == pytest.approx(10.0 / period)
    assert r.single_device_ms == pytest.approx(8.0)
    assert r.busy_ms == pytest.approx((3.0, 5.0))
    assert r.bubble_fraction == pytest.approx(tuple(1 - b / period for b in (3.0, 5.0)))
    assert r.samples_per_s == pytest.approx(PROFILE.batch_size * 1e3 / period)
    assert [(x.src, x.dst, x.bytes_per_iteration, x.busy_ms) for x in r.links] == [
        ("d0", "d1", 1000.0, micro * 1.0), ("d1", "d0", 1000.0, micro * 1.0)]


def test_memory_breakdown() -> None:
    # 3 stages; stage k holds K-k = 3, 2, 1 batches' activations under DDG and K-1-k weight copies.
    prof = make_profile([1] * 3, [1] * 3, output_bytes=[100, 200, 300], param_bytes=[10, 20, 30],
                        activation_bytes=[1000, 2000, 3000])
    r = simulate(prof, [1, 2], chain(3), "ddg")
    assert [m.in_flight for m in r.memory] == [3, 2, 1]
    assert [m.stashed_versions for m in r.memory] == [2, 1, 0]
    m0 = r.memory[0]
    # buffers: 2 posted gradient receives + the activation sent (not known to be saved: counted)
    assert (m0.params, m0.grads, m0.optimizer, m0.activations, m0.stashed_weights, m0.buffers) == (
        10, 10, 10, 3000, 20, 3 * 100)
    # a later stage also holds its received input (not known to be saved) per batch in flight,
    # 2 posted activation receives and the error gradient it sends back
    assert r.memory[1].activations == 2 * (2000 + 100)
    assert r.memory[1].buffers == 3 * 100 + 3 * 200
    assert r.peak_memory_bytes[2] == 30 * 3 + (3000 + 200) + 3 * 200
    g = simulate(prof, [1, 2], chain(3), "gpipe", micro_batches=4)
    assert [m.in_flight for m in g.memory] == [1, 1, 1]  # all 4 micro-batches of 1/4 each
    assert [m.stashed_versions for m in g.memory] == [0, 0, 0]
    assert g.memory[0].buffers == 3 * 100 // 4
    f = simulate(prof, [1, 2], chain(3), "1f1b", micro_batches=4)
    assert [m.in_flight for m in f.memory] == [0.75, 0.5, 0.25]  # warm-up K-k micro-batches
    tight = simulate(prof, [1, 2], chain(3, memory_gib=1e-6), "ddg")
    assert tight.memory_fits == (False, False, False)


def test_explicit_mapping_and_errors() -> None:
    sc = chain(3, latency_us=[1000.0, 5000.0])
    r = simulate(PROFILE, [1], sc, "bp", devices=["d2", "d1"], iterations=10)
    assert r.devices == ("d2", "d1")
    assert r.iteration_ms == pytest.approx(8 + 2 * 5)  # d2<->d1 link: 5 ms each way
    with pytest.raises(UserError, match="used by two stages"):
        simulate(PROFILE, [1], sc, "bp", devices=["d1", "d1"])
    with pytest.raises(UserError, match="unknown device 'x'"):
        simulate(PROFILE, [1], sc, "bp", devices=["x", "d1"])
    with pytest.raises(UserError, match="iterations must be >= 6"):
        simulate(PROFILE, [1], sc, "bp", iterations=5)
    with pytest.raises(UserError, match=r"4 stages need 4 devices but scenario .chain-3. has 3"):
        simulate(make_profile([1] * 4, [1] * 4), [1, 2, 3], sc, "bp")


@settings(max_examples=10)
@given(cases(max_stages=4, max_units=8))
def test_deterministic(case) -> None:
    profile, split, scenario = case
    a = simulate(profile, split, scenario, "ddg-pipelined")
    b = simulate(profile, split, scenario, "ddg-pipelined")
    assert a.timeline == b.timeline
    assert a.iteration_ms == b.iteration_ms


def test_infinite_speed_up_is_finite() -> None:
    # All-zero costs: period 0 must not divide by zero.
    r = simulate(make_profile([0, 0], [0, 0]), [1], chain(2), "ddg")
    assert r.iteration_ms == 0 and math.isinf(r.samples_per_s)


def _shared(c: float, hosts: tuple[str, str] = ("vm", "vm")) -> Scenario:
    from dataclasses import replace

    base = chain(2)
    return replace(base, devices=tuple(replace(d, host=h) for d, h in zip(base.devices, hosts, strict=True)),
                   concurrent_speed=c)


def test_contention_factors_from_overlapping_compute() -> None:
    from ddgsim.predict.event_sim import contention_factors
    from ddgsim.trace import TraceEvent

    tl = [TraceEvent(row="d0", name="0F0", start_ms=0, end_ms=10, cat="F"),
          TraceEvent(row="d1", name="1F0", start_ms=5, end_ms=15, cat="F"),
          TraceEvent(row="d1", name="1B0", start_ms=16, end_ms=18, cat="B"),
          TraceEvent(row="d0->d1", name="act", start_ms=0, end_ms=20, cat="link"),  # links do not compete
          TraceEvent(row="d0", name="0W1", start_ms=10, end_ms=20, cat="W")]  # waiting is not computing
    got = contention_factors(tl, ["d0", "d1"], _shared(0.5))
    assert got == {"d0": pytest.approx(1.5), "d1": pytest.approx(1 + 5 / 12)}
    assert contention_factors(tl, ["d0", "d1"], _shared(1.0)) is None
    assert contention_factors(tl, ["d0", "d1"], _shared(0.5, ("a", "b"))) is None
    assert contention_factors(tl, ["d0", "d1"], _shared(0.5, ("", ""))) is None


def test_devices_of_one_host_slow_each_other_only_when_they_compute_at_once() -> None:
    prof = make_profile([1.0, 1.0], [2.0, 2.0])
    free, shared = chain(2), _shared(0.8)
    # bp: the stages never compute at the same time -> no slowdown
    assert simulate(prof, [1], shared, "bp").iteration_ms == pytest.approx(simulate(prof, [1], free, "bp").iteration_ms)
    # ddg-pipelined on two equal stages: both compute all the time -> 1/0.8 as long
    a = simulate(prof, [1], free, "ddg-pipelined").iteration_ms
    b = simulate(prof, [1], shared, "ddg-pipelined").iteration_ms
    assert b == pytest.approx(a / 0.8, rel=0.02)
    assert simulate(prof, [1], free, "ddg").iteration_ms <= simulate(prof, [1], shared, "ddg").iteration_ms


def test_scenario_contention_fields() -> None:
    from ddgsim.predict.scenario import from_dict

    sc = from_dict({"concurrent_speed": 0.9, "devices": [{"name": "a", "host": "h"}, {"name": "b", "host": "h"}],
                    "links": [{"src": "a", "dst": "b", "bandwidth_gb_s": 1.0}]}, "x")
    assert sc.concurrent_speed == 0.9 and [d.host for d in sc.devices] == ["h", "h"]
    for bad in (0, 1.5, "fast", True):
        with pytest.raises(UserError, match="field 'concurrent_speed' must be a number in \\(0, 1\\]"):
            from_dict({"concurrent_speed": bad, "devices": [{"name": "a"}]}, "x")
    with pytest.raises(UserError, match="field 'host' of device 'a' must be a string"):
        from_dict({"devices": [{"name": "a", "host": 3}]}, "x")
