"""The executor's fixed costs per action (issue 28): the scenario table, what each action pays,
one definition in every timing model, and the probe's fit."""

from __future__ import annotations

import dataclasses
import math
import tomllib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sim_helpers import chain, make_profile, with_overheads

from ddgsim.calibrate import overhead_probe as op
from ddgsim.errors import UserError
from ddgsim.plan import search as planner
from ddgsim.predict import closed_form, max_plus
from ddgsim.predict.event_sim import simulate
from ddgsim.predict.overheads import Overheads, action_ms, messages, tail_ms
from ddgsim.predict.scenario import bundled_names, from_dict, load_scenario
from ddgsim.replicas import Layout

OVER = Overheads(forward_us=100, backward_us=60, update_us=30, send_us=20, receive_us=10, tail_us=5,
                 alone=Overheads(forward_us=50, backward_us=20, update_us=1, tail_us=2))


def test_the_table_loads_and_bad_values_are_named() -> None:
    text = """
name = "t"
[overheads]
forward_us = 100
tail_us = 5
[overheads.alone]
forward_us = 50

[[devices]]
name = "a"
"""
    sc = from_dict(tomllib.loads(text), "t")
    assert sc.overheads.forward_us == 100 and sc.overheads.tail_us == 5 and sc.overheads.backward_us == 0
    assert sc.overheads.alone == Overheads(forward_us=50)
    for bad, msg in (("forward_us = -1", "field 'forward_us' of [overheads] must be a number >= 0"),
                     ("forwards_us = 1", "[overheads]: unknown field 'forwards_us'"),
                     ("[overheads.alone]\nalone = 3", "[overheads.alone]: unknown field 'alone'")):
        with pytest.raises(UserError, match=msg.replace("[", r"\[").replace("]", r"\]")):
            from_dict(tomllib.loads(f"name = 't'\n[overheads]\n{bad}\n[[devices]]\nname = 'a'\n"), "t")
    # no bundled scenario has the table: their predictions are what they were
    assert not any(load_scenario(n).overheads for n in bundled_names())


def test_each_action_pays_for_the_messages_it_takes_and_posts() -> None:
    assert messages([1, 1, 1]) == ([0, 1, 1], [1, 1, 0])
    # stage 0 with 2 replicas sends one piece each; stage 1's one replica takes both pieces
    assert messages([2, 1]) == ([0, 2], [1, 0])
    f, b, u = action_ms(OVER, [1, 1, 1])
    # before the message leaves: the action's cost and taking its input
    assert f == pytest.approx([0.100, 0.110, 0.110])  # forward, + receive, + receive
    assert b == pytest.approx([0.070, 0.070, 0.060])  # backward + receive (the gradient in), .., none on the last
    assert u == pytest.approx([0.030] * 3)
    # after: posting the output, then the loop's bookkeeping
    assert tail_ms(OVER, [1, 1, 1]) == pytest.approx(np.array([[0.025, 0.005, 0.005], [0.025, 0.025, 0.005],
                                                               [0.005, 0.025, 0.005]]))
    # a job of one process has its own figures
    f1, b1, u1 = action_ms(OVER, [1])
    assert (f1[0], b1[0], u1[0]) == pytest.approx((0.050, 0.020, 0.001))
    assert tail_ms(OVER, [1]) == pytest.approx(np.full((1, 3), 0.002))
    assert action_ms(OVER, [2])[0][0] == pytest.approx(0.100)  # two replicas: two processes


def test_two_stage_bp_period_by_hand() -> None:
    """bp, K = 2, one free link: the round trip F0 → F1 → B1 → B0 → U0 (→ F0), each action with its
    overheads and the messages it takes, the tails of the cycle's same-stage steps (F1→B1, B0→U0,
    U0→F0) and none of F0's or B1's (their messages leave as they are posted)."""
    p = make_profile([1.0, 2.0], [3.0, 4.0], [0, 0], [0, 0])
    sc = with_overheads(chain(2), OVER)
    costs = max_plus.costs_for_splits(p, [[1]], sc)
    f0, f1 = 1.0 + 0.100, 2.0 + 0.100 + 0.010
    b1, b0 = 4.0 + 0.060, 3.0 + 0.060 + 0.010
    u = 0.030
    want = f0 + f1 + 0.005 + b1 + b0 + 0.005 + u + 0.005
    assert closed_form.closed_form_period("bp", closed_form.stage_costs(costs))[0] == pytest.approx(want)
    assert float(max_plus.periods("bp", costs)[0]) == pytest.approx(want)
    assert simulate(p, [1], sc, "bp").iteration_ms == pytest.approx(want)
    # one device: the single-device time the speedups are against has the alone figures
    one = simulate(p, [], with_overheads(chain(1), OVER), "bp")
    assert one.iteration_ms == pytest.approx(10.0 + 0.050 + 0.020 + 0.001 + 3 * 0.002)
    assert simulate(p, [1], sc, "bp").single_device_ms == pytest.approx(one.iteration_ms)


def test_tails_do_not_delay_the_message() -> None:
    """bp, K = 2, a slow link: of the six actions' tails only the three on the round trip's same-stage
    steps count (F1→B1, B0→U0, U0→F0); F0's and B1's overlap their messages' flight. A pre-send
    overhead of F counts on both stages."""
    p = make_profile([1.0, 1.0], [1.0, 1.0], [1000, 1000], [0, 0])
    slow = chain(2, latency_us=3000.0)
    base = simulate(p, [1], slow, "bp").iteration_ms
    t_tail = simulate(p, [1], with_overheads(slow, Overheads(tail_us=500)), "bp").iteration_ms
    t_pre = simulate(p, [1], with_overheads(slow, Overheads(forward_us=500)), "bp").iteration_ms
    assert t_tail - base == pytest.approx(3 * 0.5)
    assert t_pre - base == pytest.approx(2 * 0.5)


@settings(max_examples=20, deadline=None)
@given(st.integers(2, 4), st.sampled_from(["ddg", "ddg-pipelined", "bp"]), st.integers(0, 3000),
       st.integers(0, 3000))
def test_the_planner_prices_overheads_as_the_simulator_does(K: int, schedule: str, pre: int, tail: int) -> None:
    p = make_profile([1, 2, 3, 1, 2, 1], [2, 3, 1, 2, 4, 1], [10**6] * 6, [10**5] * 6)
    sc = with_overheads(chain(K, 2.0, 50.0), Overheads(forward_us=pre, backward_us=pre / 2, update_us=pre / 3,
                                                       send_us=pre / 4, receive_us=pre / 5, tail_us=tail))
    res = planner.search(p, sc, schedule, K)
    assert res.best is not None
    sim = simulate(p, res.best.split, sc, schedule, iterations=12 * K + 40)
    assert sim.iteration_ms == pytest.approx(res.best.iteration_ms, rel=3e-3)


def test_replicas_pay_per_piece() -> None:
    p = make_profile([1.0, 1.0], [1.0, 1.0], [1000, 1000], [0, 0], batch_size=8)
    sc = with_overheads(chain(3), Overheads(send_us=100, receive_us=100))
    lay = Layout(devices=(("d0", "d1"), ("d2",)))
    costs = max_plus.costs_for_splits(p, [[1]], sc, layout=lay)
    # stage 0's replicas each post one piece; stage 1 takes two pieces per F and posts two per B
    assert costs.forward_ms[0, 0] == pytest.approx(0.5)  # half the batch, nothing to take
    assert costs.forward_ms[0, 1] - 1.0 == pytest.approx(0.2)  # the whole batch, two pieces in
    assert costs.backward_ms[0, 1] == pytest.approx(1.0)
    assert costs.backward_ms[0, 0] - 0.5 == pytest.approx(0.1)  # one gradient piece in
    assert costs.tail_ms is not None
    assert costs.tail_ms[0, 0] == pytest.approx(0.1) and costs.tail_ms[1, 1] == pytest.approx(0.2)  # posted


# ---------------------------------------------------------------- the probe's fit


def _sample(K: int, k: int, M: int, fx: float, bx: float, ux: float, g: float, h: float) -> op.StageSample:
    recv, send = messages([1] * K)
    msgs = 2 * M * (recv[k] + send[k])
    return op.StageSample(run=f"k{K}", stages=K, stage=k, micro_batches=M, messages=msgs, forward_excess_ms=fx,
                          backward_excess_ms=bx, update_excess_ms=ux, outside_ms=g * (2 * M + 1) + h * msgs)


def test_the_fit_recovers_known_costs() -> None:
    g, h = 0.030, 0.090
    samples = [_sample(1, 0, 1, 0.08, 0.03, 0.0, g, 0.0),
               *(_sample(2, k, 1, 0.10, 0.09, 0.10, g, h) for k in range(2)),
               *(_sample(2, k, 4, 0.10, 0.09, 0.10, g, h) for k in range(2))]
    r = op.fit(samples)
    assert r.per_action_us == pytest.approx(30.0) and r.per_message_us == pytest.approx(90.0)
    assert r.residual_us == pytest.approx(0.0, abs=1e-9)
    o = r.overheads
    assert (o.forward_us, o.backward_us, o.update_us, o.send_us, o.receive_us) == pytest.approx((130, 120, 130, 90, 90))
    assert o.alone is not None and (o.alone.forward_us, o.alone.backward_us, o.alone.update_us) == pytest.approx((110, 60, 30))
    moved = r.with_tail(1.0).overheads
    assert moved.tail_us == pytest.approx(30.0) and moved.forward_us == pytest.approx(100.0)
    assert moved.alone is not None and moved.alone.update_us == pytest.approx(0.0) and moved.alone.tail_us == 30.0
    with pytest.raises(ValueError, match="one-process probe run"):
        op.fit(samples[1:])


def test_the_tail_share_is_the_one_whose_predictions_fit() -> None:
    """Runs 'measured' by the model itself with a known share: the choice finds that share."""
    p = make_profile([0.01] * 6, [0.01] * 6, [100] * 6, [100] * 6)
    base = chain(2, latency_us=100.0)
    g = 0.2
    samples = [_sample(1, 0, 1, 0.05, 0.05, 0.05, g, 0.0), *(_sample(2, k, M, 0.05, 0.05, 0.05, g, 0.1)
                                                            for M in (1, 4) for k in range(2))]
    fitted = op.fit(samples)
    truth = fitted.with_tail(0.7)
    runs = []
    for sched, split, M in (("bp", (), 1), ("bp", (3,), 1), ("gpipe", (3,), 4), ("ddg-pipelined", (3,), 1)):
        sc = dataclasses.replace(base if split else chain(1), overheads=truth.overheads)
        runs.append((sched, p, split, sched, M, simulate(p, list(split), sc, sched, micro_batches=M).iteration_ms))
    got = op.choose_tail(fitted, runs, base)
    assert got.tail_share == pytest.approx(0.7)
    assert all(math.isclose(m, q, rel_tol=1e-9) for _, m, q in got.runs)


def test_a_bp_trip_turns_back_early_where_a_forward_tail_outlasts_the_rest() -> None:
    """Found by hypothesis in CI: bp on 3 stages, a 5 ms tail after posting a message. Stage 1's backward
    waits for its own forward's tail (5 ms) rather than for the trip through stage 2 (4.5 ms), so the
    critical cycle is u_1 + f_1 + b_1 + both tails of stage 1 = 18 ms, not the whole round trip's 17.5 ms."""
    profile = make_profile([1.0, 1.0, 1.0, 1.0, 0.5], [1.0, 1.0, 1.0, 0.5, 0.25])
    sc = with_overheads(chain(3, speeds=[0.5, 0.5, 0.5]), Overheads(send_us=5000.0))
    costs = max_plus.costs_for_splits(profile, [[1, 3]], sc)
    closed = closed_form.closed_form_period("bp", closed_form.stage_costs(costs))[0]
    rec = max_plus.periods("bp", costs, iterations=80)[0]
    assert closed == pytest.approx(18.0) and rec == pytest.approx(18.0, rel=2e-3)
    assert max_plus.bp_period_closed_form(costs)[0] == pytest.approx(18.0)
    assert simulate(profile, [1, 3], sc, "bp").iteration_ms == pytest.approx(18.0, rel=2e-3)


# ---------------------------------------------------------------- the bytes of a message

CURVE = Overheads(message_sizes=(4, 262144, 1048576), message_cpu_us=(0.0, 100.0, 300.0))


def test_the_message_curve_loads_and_bad_curves_are_named() -> None:
    text = ("name = 't'\n[overheads]\nsend_us = 10\nmessage_sizes = [4, 262144, 1048576]\n"
            "message_cpu_us = [0.0, 100, 300]\n[[devices]]\nname = 'a'\n")
    sc = from_dict(tomllib.loads(text), "t")
    assert sc.overheads.message_sizes == (4.0, 262144.0, 1048576.0)
    assert sc.overheads.message_cpu_us == (0.0, 100.0, 300.0)
    assert Overheads.from_dict(sc.overheads.as_dict()) == sc.overheads  # the round trip calibrate writes
    for bad, msg in (("message_sizes = [4, 8]\nmessage_cpu_us = [1.0]", "message_sizes has 2 entries and message_cpu_us 1"),
                     ("message_sizes = [8, 4]\nmessage_cpu_us = [1.0, 2.0]", "'message_sizes' of [overheads] must be strictly ascending"),
                     ("message_sizes = [4, 8]\nmessage_cpu_us = [1.0, -2.0]", "'message_cpu_us' of [overheads] must be a list of numbers >= 0"),
                     ("message_sizes = 4\nmessage_cpu_us = [1.0]", "'message_sizes' of [overheads] must be a list"),
                     ("[overheads.alone]\nmessage_sizes = [4]", "[overheads.alone]: unknown field 'message_sizes'")):
        with pytest.raises(UserError, match=msg.replace("[", r"\[").replace("]", r"\]")):
            from_dict(tomllib.loads(f"name = 't'\n[overheads]\n{bad}\n[[devices]]\nname = 'a'\n"), "t")


def test_a_message_costs_its_ends_the_curve_interpolated_in_bytes() -> None:
    from ddgsim.predict.overheads import message_cpu_ms

    got = message_cpu_ms(CURVE, np.array([0, 4, 131074, 262144, 655360, 1048576, 2097152]))
    # linear between the points; past the last, the last segment's slope (200 µs per 786432 bytes)
    assert got * 1e3 == pytest.approx([0, 0, 50, 100, 200, 300, 300 + 200 * 1048576 / 786432])
    assert message_cpu_ms(OVER, np.array([1e9])) == pytest.approx([0.0])  # no curve: nothing
    # a curve that starts above a few bytes rises from nothing at 0 bytes (one point: a line through 0)
    late = Overheads(message_sizes=(1000,), message_cpu_us=(10.0,))
    assert message_cpu_ms(late, np.array([500, 1000, 5000])) * 1e3 == pytest.approx([5, 10, 50])


def test_every_f_and_b_pays_for_the_bytes_it_takes_and_posts() -> None:
    """K = 3, messages of 262144 bytes across cut 1 and 1048576 across cut 2 (batch 1, M = 1): the middle
    stage's F takes the first and posts the second, its B the other way round; the ends pay for one."""
    p = make_profile([1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [262144, 1048576, 0], [0, 0, 0])
    sc = with_overheads(chain(3), CURVE)
    c = max_plus.costs_for_splits(p, [[1, 2]], sc)
    assert c.forward_ms[0] == pytest.approx([1.1, 1.4, 1.3])
    assert c.backward_ms[0] == pytest.approx([1.1, 1.4, 1.3])
    assert c.update_ms[0] == pytest.approx(max_plus.costs_for_splits(p, [[1, 2]], chain(3)).update_ms[0])
    # with M = 2 each micro-batch's message is half as large: 131072 and 524288 bytes
    c2 = max_plus.costs_for_splits(p, [[1, 2]], sc, micro_batches=2)
    big = (100 + 200 * 262144 / 786432) * 1e-3  # 524288 bytes, between the second point and the third
    assert c2.forward_ms[0] == pytest.approx([0.5 + 0.05, 0.5 + 0.05 + big, 0.5 + big], rel=1e-4)  # the curve starts at 4 bytes
    # replicas: stage 0 on two devices posts two pieces of half the batch, which stage 1 takes
    p8 = make_profile([1.0, 1.0], [1.0, 1.0], [524288, 0], [0, 0], batch_size=8)
    lay = Layout(devices=(("d0", "d1"), ("d2",)))
    cl = max_plus.costs_for_splits(p8, [[1]], with_overheads(chain(3), CURVE), layout=lay)
    base = max_plus.costs_for_splits(p8, [[1]], chain(3), layout=lay)
    assert cl.forward_ms[0] - base.forward_ms[0] == pytest.approx([0.1, 0.2])  # one piece of 262144; two
    assert cl.backward_ms[0] - base.backward_ms[0] == pytest.approx([0.1, 0.2])


@pytest.mark.parametrize("schedule", ["ddg-pipelined", "bp", "gpipe"])
def test_the_planner_prices_the_bytes_as_the_simulator_does(schedule: str) -> None:
    p = make_profile([1, 2, 3, 1, 2, 1], [2, 3, 1, 2, 4, 1], [3 << 20, 1 << 18, 4 << 20, 1 << 20, 5 << 19, 0],
                     [10**5] * 6)
    sc = with_overheads(chain(3, 2.0, 50.0), dataclasses.replace(OVER, message_sizes=CURVE.message_sizes,
                                                                  message_cpu_us=(0.0, 700.0, 2500.0)))
    M = 2 if schedule == "gpipe" else 1
    res = planner.search(p, sc, schedule, 3, micro_batches=M)
    assert res.best is not None
    sim = simulate(p, res.best.split, sc, schedule, micro_batches=M, iterations=80)
    assert sim.iteration_ms == pytest.approx(res.best.iteration_ms, rel=3e-3)
    # and the bytes changed the answer's time: the same split without the curve is faster
    assert simulate(p, res.best.split, with_overheads(chain(3, 2.0, 50.0), OVER), schedule, micro_batches=M,
                    iterations=80).iteration_ms < sim.iteration_ms
