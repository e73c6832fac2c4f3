"""Schedules as data: exact action lists, the string round trip, and the validator."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ddgsim.errors import UserError
from ddgsim.schedule import (
    MICRO_SCHEDULES,
    SCHEDULES,
    Action,
    Message,
    Schedule,
    ScheduleError,
    check_schedule_args,
    make_schedule,
    resolve,
    staleness_of,
    validate,
)


def lists(name: str, K: int, N: int, M: int = 1) -> list[str]:
    return [" ".join(map(repr, acts)) for acts in make_schedule(name, K, N, M).actions]


def test_exact_lists_two_stages_three_batches() -> None:
    # The table in ddgsim/schedule/__init__.py's docstring.
    assert lists("bp", 2, 3) == ["0F0 0B0 0U0 0F1 0B1 0U1 0F2 0B2 0U2", "1F0 1B0 1U0 1F1 1B1 1U1 1F2 1B2 1U2"]
    assert lists("ddg", 2, 3) == ["0F0 0W0 0F1 0B0 0U0 0W1 0F2 0B1 0U1", "1F0 1B0 1U0 1F1 1B1 1U1 1F2 1B2 1U2"]
    assert lists("ddg-pipelined", 2, 3) == ["0F0 0F1 0B0 0U0 0F2 0B1 0U1", "1F0 1B0 1U0 1F1 1B1 1U1 1F2 1B2 1U2"]
    assert lists("gpipe", 2, 1, 2) == ["0F0 0F0.1 0B0.1 0B0 0U0", "1F0 1F0.1 1B0.1 1B0 1U0"]
    assert lists("1f1b", 2, 1, 2) == ["0F0 0F0.1 0B0 0B0.1 0U0", "1F0 1B0 1F0.1 1B0.1 1U0"]


def test_ddg_three_stages() -> None:
    # Stage 0 (d=2) waits at the end of iteration t for stage 1's iteration-t gradient (batch t-1).
    assert lists("ddg", 3, 4) == [
        "0F0 0F1 0W0 0F2 0B0 0U0 0W1 0F3 0B1 0U1",
        "1F0 1W0 1F1 1B0 1U0 1W1 1F2 1B1 1U1 1W2 1F3 1B2 1U2",
        "2F0 2B0 2U0 2F1 2B1 2U1 2F2 2B2 2U2 2F3 2B3 2U3",
    ]


def test_1f1b_warmup() -> None:
    # K=4, M=3: stage k warms up with min(K-1-k, M) forwards.
    assert lists("1f1b", 4, 1, 3) == [
        "0F0 0F0.1 0F0.2 0B0 0B0.1 0B0.2 0U0",
        "1F0 1F0.1 1F0.2 1B0 1B0.1 1B0.2 1U0",
        "2F0 2F0.1 2B0 2F0.2 2B0.1 2B0.2 2U0",
        "3F0 3B0 3F0.1 3B0.1 3F0.2 3B0.2 3U0",
    ]


@given(st.integers(0, 99), st.sampled_from("FBUW"), st.integers(0, 10**6), st.integers(0, 99))
def test_action_round_trip(stage: int, kind: str, batch: int, micro: int) -> None:
    a = Action(stage, kind, batch, micro)
    assert Action.from_str(repr(a)) == a
    assert str(a) == repr(a)


def test_action_from_str_rejects() -> None:
    with pytest.raises(ValueError, match="not an action"):
        Action.from_str("0X1")


@given(st.sampled_from(SCHEDULES), st.integers(1, 6), st.integers(1, 14), st.integers(1, 4))
def test_every_schedule_validates(name: str, K: int, N: int, M: int) -> None:
    M = M if name in ("gpipe", "1f1b") else 1
    s = make_schedule(name, K, N, M)
    validate(s)
    for k in range(K):
        d = s.delay(k)
        assert d == (K - 1 - k if name.startswith("ddg") else 0)
        seen = staleness_of(s.actions[k])
        assert sorted(seen) == list(range(max(N - d, 0)))
        assert all(v == min(t, d) for t, v in seen.items())  # warm-up batches see fewer updates


def test_ddg_and_pipelined_apply_the_same_updates() -> None:
    a, b = make_schedule("ddg", 4, 12), make_schedule("ddg-pipelined", 4, 12)
    for x, y in zip(a.actions, b.actions, strict=True):
        assert [t for t in x if t.kind != "W"] == list(y)


def _broken(name: str, K: int, N: int, edit) -> Schedule:
    s = make_schedule(name, K, N)
    acts = [list(x) for x in s.actions]
    edit(acts)
    return Schedule(s.name, s.stages, s.iterations, s.micro_batches, tuple(tuple(x) for x in acts))


def test_backward_before_forward_is_caught() -> None:
    def swap(acts):
        acts[1][0], acts[1][1] = acts[1][1], acts[1][0]  # 1B0 before 1F0

    with pytest.raises(ScheduleError) as err:
        validate(_broken("bp", 2, 3, swap))
    assert "1B0 runs before its forward 1F0" in err.value.message
    line = next(row for row in err.value.grid.splitlines() if "ERROR HERE" in row)
    assert line.split()[:3] == ["0", "0F0", "*1B0*"]
    print(err.value)


def test_dropped_update_is_caught() -> None:
    with pytest.raises(ScheduleError, match="backprops batch 1 but never applies it") as err:
        validate(_broken("ddg-pipelined", 2, 4, lambda acts: acts[0].remove(Action(0, "U", 1))))
    assert "*0B1*" in err.value.grid


def test_update_before_backward_is_caught() -> None:
    def early(acts):
        i = acts[0].index(Action(0, "U", 0))
        acts[0].insert(0, acts[0].pop(i))

    with pytest.raises(ScheduleError, match="applies batch 0 before all its 1 backward"):
        validate(_broken("bp", 2, 2, early))


def test_cyclic_wait_is_caught() -> None:
    # Stage 0 waits for batch 0's gradient before forwarding batch 0: nobody can move.
    def cyc(acts):
        acts[0].remove(Action(0, "W", 0))
        acts[0].insert(0, Action(0, "W", 0))

    with pytest.raises(ScheduleError, match="deadlock") as err:
        validate(_broken("ddg", 2, 3, cyc))
    msg = str(err.value)
    assert "0W0 waits for 1B0" in msg and "1F0 waits for 0F0" in msg
    assert msg.count("<-- ERROR HERE") == 1  # both stuck actions are in row 0
    print(msg)


def test_missing_transfer_is_caught() -> None:
    with pytest.raises(ScheduleError, match="1F2 needs 0F2, which no stage runs"):
        validate(_broken("bp", 2, 3, lambda acts: [acts[0].remove(Action(0, x, 2)) for x in "FBU"]))


def test_wrong_staleness_is_caught() -> None:
    # Calling a ddg list "bp" promises delay 0: stage 0's updates come one batch late.
    s = make_schedule("ddg-pipelined", 2, 4)
    with pytest.raises(ScheduleError, match=r"after 1 update.*promised delay is 0"):
        validate(Schedule("bp", 2, 4, 1, s.actions))


def test_grid_window() -> None:
    def late(acts):
        acts[0].remove(Action(0, "U", 40))

    with pytest.raises(ScheduleError) as err:
        validate(_broken("bp", 2, 50, late))
    assert err.value.grid.splitlines() == [  # 4 steps of context either side, "..." for the rest
        "step  stage 0 stage 1",
        "  ...",
        " 117     0F39    1F39",
        " 118     0B39    1B39",
        " 119     0U39    1U39",
        " 120     0F40    1F40",
        " 121   *0B40*    1B40  <-- ERROR HERE",
        " 122     0F41    1U40",
        " 123     0B41    1F41",
        " 124     0U41    1B41",
        " 125     0F42    1U41",
        "  ...",
    ]


def test_bad_arguments() -> None:
    with pytest.raises(UserError, match="unknown schedule 'x' \\(choose from bp, ddg, ddg-pipelined, gpipe, 1f1b\\)"):
        make_schedule("x", 2, 2)
    with pytest.raises(UserError, match="takes no micro-batches"):
        make_schedule("ddg", 2, 2, 4)
    with pytest.raises(UserError, match="iterations must be an integer >= 1"):
        make_schedule("bp", 2, 0)


@given(st.sampled_from(SCHEDULES), st.integers(1, 5), st.integers(1, 10), st.integers(1, 3))
def test_iterations_partition_each_stage_list(name: str, K: int, N: int, M: int) -> None:
    """``Schedule.iteration`` cuts every stage's list into N consecutive iterations: iteration i
    holds ``F i`` (all micro-batches) and, once the stage's delay d has passed, the B and U of
    batch i − d — the loop the executors run and checkpoint at."""
    s = make_schedule(name, K, N, M if name in MICRO_SCHEDULES else 1)
    for k, acts in enumerate(s.actions):
        its = [s.iteration(a) for a in acts]
        assert its == sorted(its) and its[0] >= 0 and its[-1] < N
        d = s.delay(k)
        for i in range(N):
            here = {a for a in acts if s.iteration(a) == i}
            assert {a for a in here if a.kind == "F"} == {Action(k, "F", i, m) for m in range(s.micro_batches)}
            want = {Action(k, "U", i - d)} if i >= d else set()
            assert {a for a in here if a.kind == "U"} == want
            assert {a.batch for a in here if a.kind == "B"} == {a.batch for a in want}


def _edited(name: str, K: int, N: int, M: int, stage: int, edit) -> Schedule:
    """``make_schedule(...)`` with ``edit(list)`` applied to one stage's list."""
    s = make_schedule(name, K, N, M)
    acts = [list(x) for x in s.actions]
    edit(acts[stage])
    return Schedule(s.name, K, N, M, tuple(tuple(x) for x in acts))


def _put(i: int, a: Action):
    return lambda lst: lst.insert(i, a)


def _set(i: int, a: Action):
    return lambda lst: lst.__setitem__(i, a)


def _drop(a: Action):
    return lambda lst: lst.remove(a)


def _move(a: Action, to: int):
    return lambda lst: lst.insert(to, lst.pop(lst.index(a)))


A = Action
# (schedule, K, N, M, stage edited, edit, the exact message, the flagged (stage, step))
RULES = [
    ("ddg", 2, 3, 1, 0, _set(0, A(1, "F", 0)), "1F0 is in the list of stage 0", (0, 0)),
    ("ddg", 2, 3, 1, 0, _set(1, A(0, "X", 0)), "0X0 has unknown kind 'X' (kinds: F, B, U, W)", (0, 1)),
    ("bp", 2, 3, 1, 1, _put(3, A(1, "F", 3)), "1F3 is out of range (batches 0..2, micro-batches 0..0)", (1, 3)),
    ("bp", 2, 3, 1, 1, _put(3, A(1, "F", -1)), "1F-1 is out of range (batches 0..2, micro-batches 0..0)", (1, 3)),
    ("bp", 2, 3, 1, 0, _put(0, A(0, "F", 0, 1)), "0F0.1 is out of range (batches 0..2, micro-batches 0..0)", (0, 0)),
    ("gpipe", 2, 2, 2, 0, _put(2, A(0, "F", 0, 2)), "0F0.2 is out of range (batches 0..1, micro-batches 0..1)", (0, 2)),
    ("gpipe", 2, 2, 2, 0, _set(4, A(0, "U", 0, 1)), "0U0.1 is out of range (batches 0..1, micro-batches 0..1)", (0, 4)),
    ("ddg", 3, 4, 1, 0, _set(1, A(0, "W", 0, 1)), "0W0.1 is out of range (batches 0..3, micro-batches 0..0)", (0, 1)),
    ("bp", 2, 3, 1, 0, _put(1, A(0, "F", 0)), "0F0 forwards the same batch twice", (0, 1)),
    ("bp", 2, 3, 1, 0, _put(2, A(0, "B", 0)), "0B0 backprops the same batch twice", (0, 2)),
    ("gpipe", 2, 2, 2, 1, _move(A(1, "B", 0, 1), 0), "1B0.1 runs before its forward 1F0.1", (1, 0)),
    ("bp", 2, 3, 1, 0, _put(3, A(0, "U", 0)), "0U0 applies batch 0 twice", (0, 3)),
    ("gpipe", 2, 2, 2, 0, _move(A(0, "U", 0), 3),
     "0U0 applies batch 0 before all its 2 backward(s) ran on stage 0", (0, 3)),
    ("ddg", 2, 3, 1, 1, _put(0, A(1, "W", 0)), "1W0: the last stage has no next stage to wait for", (1, 0)),
    ("ddg-pipelined", 2, 4, 1, 1, _drop(A(1, "B", 1)), "0B1 needs 1B1, which no stage runs", (0, 5)),
    ("gpipe", 2, 2, 2, 0, _drop(A(0, "U", 1)), "stage 0 backprops batch 1 but never applies it (no U)", (0, 8)),
    # Stage 0 (d = 1) updates batch 1 right after its forward: 0 updates seen where 1 is promised.
    ("ddg-pipelined", 2, 3, 1, 0, _move(A(0, "F", 1), 3),
     "stage 0 applies batch 1 after 0 update(s) since its forward; promised delay is 1", (0, 6)),
]


@pytest.mark.parametrize(("name", "K", "N", "M", "stage", "edit", "message", "where"), RULES)
def test_each_rule_names_the_broken_action(name, K, N, M, stage, edit, message, where) -> None:
    s = _edited(name, K, N, M, stage, edit)
    with pytest.raises(ScheduleError) as err:
        validate(s)
    assert err.value.message == f"schedule '{name}' is invalid: {message}"
    flagged = [row for row in err.value.grid.splitlines() if row.endswith("<-- ERROR HERE")]
    assert [int(row.split()[0]) for row in flagged] == [where[1]]
    cells = flagged[0].removesuffix("<-- ERROR HERE").split()[1:]
    assert f"*{s.actions[where[0]][where[1]]!r}*" in cells[where[0]]


def test_a_list_per_stage() -> None:
    s = make_schedule("bp", 2, 2)
    with pytest.raises(ScheduleError) as err:
        validate(Schedule("bp", 3, 2, 1, s.actions))
    assert (err.value.message, err.value.grid) == ("schedule 'bp' has 2 stage lists for 3 stages", "")


def test_grid_is_a_step_by_stage_table() -> None:
    """The exact text: right-aligned cells at least 7 wide, the bad cell starred, a missing
    cell as blank, the context window of 4 steps either side."""
    s = _edited("bp", 2, 3, 1, 0, _drop(A(0, "U", 1)))
    with pytest.raises(ScheduleError) as err:
        validate(s)
    assert err.value.grid.splitlines() == [
        "step  stage 0 stage 1",
        "   0      0F0     1F0",
        "   1      0B0     1B0",
        "   2      0U0     1U0",
        "   3      0F1     1F1",
        "   4    *0B1*     1B1  <-- ERROR HERE",
        "   5      0F2     1U1",
        "   6      0B2     1F2",
        "   7      0U2     1B2",
        "   8              1U2",
    ]


def test_deadlock_names_every_stuck_action() -> None:
    s = _edited("ddg", 2, 3, 1, 0, _move(A(0, "W", 0), 0))
    with pytest.raises(ScheduleError) as err:
        validate(s)
    assert err.value.message == "schedule 'ddg' is invalid: deadlock: 0W0 waits for 1B0, 1F0 waits for 0F0"


def test_str_lists_each_stage() -> None:
    # ddg, K = 2, N = 2: stage 0 (d = 1) backprops batch 0 only; it waits for its gradient first.
    assert str(make_schedule("ddg", 2, 2)) == "stage 0: 0F0 0W0 0F1 0B0 0U0\nstage 1: 1F0 1B0 1U0 1F1 1B1 1U1"


def test_grid_widens_for_long_actions_and_elides_a_single_row() -> None:
    """Cells are as wide as the longest action + 2 (here ``0F11.1``: 8); with the error at step 5
    the window starts at step 1, so the one hidden row 0 is shown as ``...``."""
    s = _edited("gpipe", 2, 11, 2, 0, _set(5, A(0, "F", 11, 1)))
    with pytest.raises(ScheduleError) as err:
        validate(s)
    assert err.value.message == "schedule 'gpipe' is invalid: 0F11.1 is out of range (batches 0..10, micro-batches 0..1)"
    assert err.value.grid.splitlines() == [
        "step   stage 0  stage 1",
        "  ...",
        "   1     0F0.1    1F0.1",
        "   2     0B0.1    1B0.1",
        "   3       0B0      1B0",
        "   4       0U0      1U0",
        "   5  *0F11.1*      1F1  <-- ERROR HERE",
        "   6     0F1.1    1F1.1",
        "   7     0B1.1    1B1.1",
        "   8       0B1      1B1",
        "   9       0U1      1U1",
        "  ...",
    ]


def test_delivered_drops_gradients_nobody_backprops() -> None:
    """ddg, K = 2, N = 3: stage 0 (d = 1) backprops batches 0 and 1 only, so the gradient that
    ``1B2`` would send has no receiver: :meth:`Schedule.sends` names it, ``delivered`` does not."""
    s = make_schedule("ddg", 2, 3)
    assert s.sends(A(1, "B", 2)) == Message("grad", 1, 0, 2)
    assert s.delivered(A(1, "B", 2)) is None
    assert s.delivered(A(1, "B", 1)) == Message("grad", 1, 0, 1)
    assert s.delivered(A(0, "F", 2)) == Message("act", 0, 1, 2)
    assert s.delivered(A(0, "U", 0)) is None


def test_resolve_builds_a_name_once_and_checks_an_object() -> None:
    s = make_schedule("gpipe", 3, 4, 2)
    assert resolve(s, 3, 99, 2) is s  # an object is used as it is (its own iterations)
    assert resolve("gpipe", 3, 4, 2) == s
    assert resolve("ddg", 2, 3) == make_schedule("ddg", 2, 3)  # one micro-batch unless told
    with pytest.raises(ValueError, match=r"^schedule 'gpipe' has K=3, M=2; expected K=2, M=2$"):
        resolve(s, 2, 4, 2)
    with pytest.raises(ValueError, match=r"^schedule 'gpipe' has K=3, M=2; expected K=3, M=1$"):
        resolve(s, 3, 4, 1)


@pytest.mark.parametrize(("args", "message"), [
    (("bp", 0, 2), "stages must be an integer >= 1, got 0"),
    (("bp", True, 2), "stages must be an integer >= 1, got True"),
    (("bp", 2, 2.0), "iterations must be an integer >= 1, got 2.0"),
    (("gpipe", 2, 2, 0), "micro-batches must be an integer >= 1, got 0"),
    (("ddg", 2, 2, 2), "schedule 'ddg' takes no micro-batches (got 2); only gpipe, 1f1b split a batch into micro-batches"),
])
def test_bad_arguments_are_named_exactly(args, message) -> None:  # type: ignore[no-untyped-def]
    check_schedule_args("ddg", 2, 3)  # one micro-batch unless told: fine for any schedule
    with pytest.raises(UserError) as err:
        make_schedule(*args)
    assert str(err.value) == message
