"""Every consumer of a schedule waits for and sends exactly what ``ddgsim.schedule`` says.

``needs``/``sends`` are the one definition of "what does an action wait for, what does it
send". For random schedules — the five named ones and micro-batched DDG orders in which
``W`` waits for an error gradient split in M ≥ 2 micro-batches — the zero-duration
execution, the SimPy model, the max-plus recursion and the in-process engine must
all run each stage's list in order and never start an action before every message it
needs was sent; the SimPy model and the max-plus model must give the same start times.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from executor_helpers import batches, mlp, split_sequential
from hypothesis import given, settings
from hypothesis import strategies as st
from sim_helpers import cases

from ddgsim.execute.engine import run_inprocess
from ddgsim.execute.stage import OptimConfig
from ddgsim.predict.event_sim import first_forward_starts, run_schedule
from ddgsim.predict.max_plus import compile_schedule, costs_for_splits, run_recursion
from ddgsim.schedule import (
    MICRO_SCHEDULES,
    SCHEDULES,
    Action,
    Schedule,
    execution_order,
    make_schedule,
    validate,
)


def micro_ddg(base: Schedule, m_total: int, reverse_backward: bool) -> Schedule:
    """``ddg``/``ddg-pipelined`` with each batch split into M micro-batches (W unchanged)."""
    lists = []
    for acts in base.actions:
        out: list[Action] = []
        for a in acts:
            if a.kind in "FB":
                order = range(m_total - 1, -1, -1) if a.kind == "B" and reverse_backward else range(m_total)
                out += [a._replace(micro=j) for j in order]
            else:
                out.append(a)
        lists.append(tuple(out))
    return dataclasses.replace(base, micro_batches=m_total, actions=tuple(lists))


@st.composite
def schedules(draw: st.DrawFn, stages: int) -> Schedule:
    n = draw(st.integers(stages + 1, stages + 4))
    name = draw(st.sampled_from(SCHEDULES))
    if name in MICRO_SCHEDULES:
        return make_schedule(name, stages, n, draw(st.integers(1, 3)))
    base = make_schedule(name, stages, n)
    if name in ("ddg", "ddg-pipelined") and draw(st.booleans()):
        return micro_ddg(base, draw(st.integers(2, 3)), draw(st.booleans()))
    return base


def assert_respects_needs(schedule: Schedule, ran: list[Action]) -> None:
    """``ran``: every action once, in the order it started; each after all it needs was sent."""
    assert sorted(ran) == sorted(a for acts in schedule.actions for a in acts)
    for k, acts in enumerate(schedule.actions):
        assert [a for a in ran if a.stage == k] == list(acts), f"stage {k} ran out of order"
    position = {a: i for i, a in enumerate(ran)}
    for a in ran:
        for msg in schedule.needs(a):
            assert position[msg.producer] < position[a], f"{a!r} started before {msg.producer!r} sent {msg}"


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_all_consumers_wait_for_what_the_schedule_says(data: st.DataObject) -> None:
    profile, split, scenario = data.draw(cases(max_stages=4, max_units=8))
    k_total = len(split) + 1
    schedule = data.draw(schedules(k_total))
    validate(schedule)

    order, ptr = execution_order(schedule)
    assert ptr == [len(a) for a in schedule.actions]
    assert_respects_needs(schedule, order)

    costs = costs_for_splits(profile, [split], scenario, micro_batches=schedule.micro_batches)
    timeline, executed, _events = run_schedule(schedule, costs)
    assert [list(e) for e in executed] == [list(a) for a in schedule.actions]
    started = sorted(((e.start_ms, i) for i, e in enumerate(timeline) if e.cat in "FBUW"))
    names = [Action.from_str(timeline[i].name) for _, i in started]
    ends = {Action.from_str(e.name): e.end_ms for e in timeline if e.cat in "FBUW"}
    begins = {Action.from_str(e.name): e.start_ms for e in timeline if e.cat in "FBUW"}
    for a in names:
        go = ends[a] if a.kind == "W" else begins[a]  # a W's interval is the wait itself
        for msg in schedule.needs(a):
            assert ends[msg.producer] <= go + 1e-9, f"SimPy started {a!r} before {msg.producer!r} ended"
    if not costs.shared_links():  # max-plus is exact when each link direction carries one flow
        starts = run_recursion(compile_schedule(schedule), costs)[0]
        for k, dev in enumerate(costs.devices):
            sim = first_forward_starts(timeline, dev, schedule.iterations)
            np.testing.assert_allclose(starts[k], sim, rtol=1e-12, atol=1e-9)

    torch.set_num_threads(1)
    final = []
    for one_per_round in (False, True):
        ran: list[Action] = []
        widths = [4, *[5] * (k_total - 1), 3]
        stages = split_sequential(mlp(widths), list(range(2, 2 * k_total, 2)))
        res = run_inprocess(stages, schedule, batches(4, 3, batch=6), torch.nn.functional.cross_entropy,
                            OptimConfig(lr=0.05), on_action=lambda _k, a, _w, ran=ran: ran.append(a),
                            one_per_round=one_per_round)
        assert_respects_needs(schedule, ran)
        final.append(torch.cat(res.weights[-1]))
    assert torch.equal(final[0], final[1])  # the interleaving never changes the numbers


def test_a_wait_covers_every_micro_batch() -> None:
    """``W`` on a batch split in 3 waits for all 3 error gradients, not for the first."""
    s = micro_ddg(make_schedule("ddg", 2, 4), 3, reverse_backward=False)
    w = next(a for a in s.actions[0] if a.kind == "W")
    assert [m.producer for m in s.needs(w)] == [Action(1, "B", w.batch, j) for j in range(3)]
    with pytest.raises(AssertionError, match="started before"):
        assert_respects_needs(s, _wait_for_first_only(s))


def _wait_for_first_only(s: Schedule) -> list[Action]:
    """A run, one action per stage per round, whose ``W`` waits for micro-batch 0 only (the
    rule the executors had)."""
    done: set[Action] = set()
    ran: list[Action] = []
    pos = [0] * s.stages
    while any(p < len(a) for p, a in zip(pos, s.actions, strict=True)):
        for k, acts in enumerate(s.actions):
            if pos[k] < len(acts):
                a = acts[pos[k]]
                need = s.needs(a)[:1] if a.kind == "W" else s.needs(a)
                if all(m.producer in done for m in need):
                    done.add(a)
                    ran.append(a)
                    pos[k] += 1
    return ran
