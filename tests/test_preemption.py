"""The preemption agreement (``ddgsim.execute.preempt.Preemption``) over a real c10d store.

K stages advance in a random interleaving, as the pipeline lets them: stage k + 1 is
never ahead of stage k, stage k never more than one iteration ahead of stage k + 1.
SIGTERM reaches random stages at random moments; a stage that knows of no preemption
checks the store only now and then (the time gate, drawn at random here). Every stage
must learn the same stop, and no stage may have passed it when it learns it.
"""

from __future__ import annotations

import torch.distributed as dist
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ddgsim.execute.preempt import Preemption


@st.composite
def runs(draw: st.DrawFn) -> tuple[int, list[tuple[str, int]]]:
    k = draw(st.integers(1, 6))
    events = draw(st.lists(st.tuples(st.sampled_from(["advance", "term", "check"]), st.integers(0, k - 1)),
                           min_size=1, max_size=400))
    return k, events


@settings(max_examples=150, deadline=None)
@given(runs())
@example((2, [("term", 0), ("advance", 0), ("advance", 1), ("advance", 0), ("check", 1)]))
def test_every_stage_learns_one_stop_it_has_not_passed(run: tuple[int, list[tuple[str, int]]]) -> None:
    k_total, events = run
    store = dist.HashStore()
    stages = [Preemption(store, k, k_total, check_s=0.0) for k in range(k_total)]
    pos = [0] * k_total  # boundaries passed
    learnt: dict[int, tuple[int, int]] = {}  # stage -> (stop, position when learnt)

    def boundary(k: int) -> None:
        stop = stages[k].poll(pos[k])
        if stop is not None and k not in learnt:
            learnt[k] = (stop, pos[k])

    def can_advance(k: int) -> bool:
        if k in learnt and pos[k] >= learnt[k][0]:
            return False  # stopped there
        ahead_ok = k == k_total - 1 or pos[k] + 1 <= pos[k + 1] + 1
        behind_ok = k == 0 or pos[k] + 1 <= pos[k - 1]
        return ahead_ok and behind_ok

    # the random part, then everyone keeps running (polling every boundary) until all stopped
    for what, k in [*events, *(("advance", k) for _ in range(20 * k_total + 40) for k in range(k_total))]:
        if what == "term":
            stages[k].request()
        elif what == "check" and not stages[k].published:  # a stage that knows of nothing: time gate opens
            boundary(k)
        if what == "advance" and can_advance(k):
            pos[k] += 1
            if stages[k].published or stages[k].requested:
                boundary(k)  # a stage that knows of the preemption polls at every boundary
    if not any(s.requested for s in stages):
        assert not learnt and all(s.stop is None for s in stages)
        return
    # someone asked: the time-gated checks of the others happen eventually
    for _ in range(k_total):
        for k in range(k_total):
            if not stages[k].published:
                boundary(k)
    for _ in range(40 * k_total + 40):
        for k in range(k_total):
            if can_advance(k):
                pos[k] += 1
                boundary(k)
    stops = {stop for stop, _ in learnt.values()}
    assert len(learnt) == k_total and len(stops) == 1, learnt
    (stop,) = stops
    for k, (_, at) in learnt.items():
        assert at <= stop, f"stage {k} learnt stop {stop} at boundary {at}"
    assert pos == [stop] * k_total  # every stage reached the common boundary and stopped there


def test_the_slowest_stage_publishing_last_sets_the_margin() -> None:
    """K = 2, by hand: stage 0 is one boundary ahead when stage 1 publishes last, and learns
    the stop only on its next arrival; the stop must not be behind it then."""
    store = dist.HashStore()
    s0, s1 = Preemption(store, 0, 2, check_s=0.0), Preemption(store, 1, 2, check_s=0.0)
    s0.request()
    assert s0.poll(1) is None and s0.published  # stage 0 at boundary 1 publishes 1
    assert s0.poll(2) is None  # stage 0 reaches 2 (stage 1 is at 1): not everyone has published
    stop = s1.poll(1)  # stage 1's time gate opens at boundary 1: it publishes 1, the last
    assert stop is not None
    assert s0.poll(3) == stop and stop >= 3  # stage 0's next arrival is 3
