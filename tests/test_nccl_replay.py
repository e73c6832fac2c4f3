"""The executor's communication replayed under NCCL's rules: deadlock-free for every schedule, K, M and
replica count; the old order (every message on the default group, receives posted early, device-wide
synchronisation) is rejected; and what the derivation says each rank issues is what a real run issued."""

from __future__ import annotations

from pathlib import Path

import pytest
from launch_helpers import execute, write_plan

from ddgsim.execute.nccl_replay import (
    WORLD,
    Recorder,
    check,
    derive,
    groups_for,
    load_recorded,
    replay,
)
from ddgsim.replicas import Layout
from ddgsim.schedule import MICRO_SCHEDULES, SCHEDULES, make_schedule

MATRIX = [(name, K, M, D) for name in SCHEDULES for K in range(2, 9)
          for M in (range(1, 9) if name in MICRO_SCHEDULES else (1,)) for D in (1, 2)]


@pytest.mark.parametrize("name,K,M,D", MATRIX, ids=lambda x: str(x))
def test_the_executor_cannot_deadlock_under_nccl(name: str, K: int, M: int, D: int) -> None:
    verdict = check(name, K, M, replicas=D)
    assert verdict.ok, str(verdict)
    assert verdict.steps > 0


@pytest.mark.parametrize("name,M", [("bp", 1), ("ddg", 1), ("ddg-pipelined", 1), ("gpipe", 2), ("1f1b", 2),
                                    ("1f1b", 4)])
@pytest.mark.parametrize("K", [2, 3])
def test_the_old_order_is_rejected(name: str, K: int, M: int) -> None:
    """Receives posted early on the default group hold the sends behind them: a deadlock at the first step,
    with the communicators created eagerly (one stream per rank) or lazily (one per pair of ranks)."""
    for eager in (True, False):
        verdict = check(name, K, M, old=True, eager=eager)
        assert not verdict.ok and "rank 0 at event" in str(verdict), str(verdict)


def test_per_direction_groups_need_communicators_created_up_front() -> None:
    """Lazily created communicators: each side's first operation is on a different group, and creating
    one waits for every member — the reason the executor passes ``device_id`` to ``init_process_group``."""
    assert not check("ddg-pipelined", 3, eager=False).ok
    assert check("ddg-pipelined", 3, eager=True).ok


def _two_ranks(*events0: tuple, events1: tuple = ()) -> list[list[tuple]]:
    return [list(events0), list(events1)]


def test_replay_rules_on_hand_made_cases() -> None:
    groups = {WORLD: [0, 1], "a": [0, 1], "b": [0, 1]}
    # a send and its receive complete together
    ok = replay(_two_ranks(("post", 0, "send", "a", 1, "x"), ("wait", 0),
                           events1=(("post", 0, "recv", "a", 0, "x"), ("wait", 0))), groups)
    assert ok.ok
    # one group, both ranks receive first: each receive heads the stream and blocks the send behind it
    bad = replay(_two_ranks(("post", 0, "recv", "a", 1, "g"), ("post", 1, "send", "a", 1, "x"), ("wait", 0),
                            events1=(("post", 0, "recv", "a", 0, "x"), ("post", 1, "send", "a", 0, "g"),
                                     ("wait", 0))), groups)
    assert not bad.ok
    # the same on two groups (one per direction): fine
    good = replay(_two_ranks(("post", 0, "recv", "b", 1, "g"), ("post", 1, "send", "a", 1, "x"), ("wait", 0),
                             events1=(("post", 0, "recv", "a", 0, "x"), ("post", 1, "send", "b", 0, "g"),
                                      ("wait", 0))), groups)
    assert good.ok
    # a device-wide sync waits for a receive whose sender waits for us
    sync = replay(_two_ranks(("post", 0, "recv", "b", 1, "g"), ("sync",), ("post", 1, "send", "a", 1, "x"),
                             events1=(("post", 0, "recv", "a", 0, "x"), ("wait", 0),
                                      ("post", 1, "send", "b", 0, "g"))), groups)
    assert not sync.ok
    # messages matched out of order are reported
    order = replay(_two_ranks(("post", 0, "send", "a", 1, "x"), ("post", 1, "send", "a", 1, "y"),
                              events1=(("post", 0, "recv", "a", 0, "y"), ("post", 1, "recv", "a", 0, "x"))), groups)
    assert not order.ok and "out of order" in str(order)
    # an operation never matched is not deadlock-free either
    left = replay(_two_ranks(("post", 0, "recv", "a", 1, "x")), groups)
    assert not left.ok and "never completed" in str(left)
    # a collective completes when every member issued it
    coll = replay(_two_ranks(("coll", 0, WORLD, [0, 1]), ("wait", 0), events1=(("coll", 0, WORLD, [0, 1]),)), groups)
    assert coll.ok


def test_derived_events_of_a_replicated_stage_include_its_all_reduce() -> None:
    sched = make_schedule("ddg", 2, 4)
    layout = Layout.packed([f"cuda:{i}" for i in range(4)], [2, 2])
    events = derive(sched, layout)
    colls = [e for e in events[0] if e[0] == "coll" and e[2] == "replicas:0"]
    assert len(colls) == 3  # one all-reduce per update: batches 0..2 (stage 0 backprops N - d of them)
    assert set(groups_for(layout)) == {WORLD, "replicas:0", "replicas:1", "act:0>2", "grad:2>0", "act:1>3",
                                       "grad:3>1"}


def test_recorder_round_trips(tmp_path: Path) -> None:
    rec = Recorder()
    a = rec.post("recv", "act:0>1", 0, (3, 1))
    rec.wait(a)
    rec.wait(rec.coll(WORLD, [0, 1]))
    rec.sync()
    rec.save(tmp_path / "rank0.json")
    assert load_recorded(tmp_path, 1) == [rec.events]


CASES = [("ddg-pipelined", [3], 1, ()), ("gpipe", [2, 4], 2, ()), ("1f1b", [3], 4, ()),
         ("ddg", [3], 1, (2, 1))]


@pytest.mark.slow
@pytest.mark.parametrize("name,split,M,replicas", CASES, ids=lambda x: str(x))
def test_recorded_events_of_real_runs_are_the_derived_ones(name: str, split: list[int], M: int,
                                                           replicas: tuple[int, ...], tmp_path: Path) -> None:
    """Real gloo processes record what they issue and wait for (DDGSIM_COMM_LOG); the derivation from the
    action lists gives the very same lists, and the recording replays deadlock-free under NCCL's rules."""
    steps = 5
    plan = write_plan(tmp_path / "p.json", "mlp", split, name, micro=M, replicas=replicas)
    log = tmp_path / "comm"
    r = execute(str(plan), "--steps", str(steps), "--data", "synthetic", "--no-eval",
                env={"DDGSIM_COMM_LOG": str(log)})
    assert r.returncode == 0, r.stderr
    reps = replicas or (1,) * (len(split) + 1)
    layout = Layout.packed([f"cpu{i}" for i in range(sum(reps))], list(reps))
    recorded = load_recorded(log, layout.world_size)
    derived = derive(make_schedule(name, len(split) + 1, steps, M), layout, samples=16 // M)
    for rank, (got, want) in enumerate(zip(recorded, derived, strict=True)):
        assert got == [tuple(x) for x in want], f"rank {rank}"
    assert replay(recorded, groups_for(layout)).ok
