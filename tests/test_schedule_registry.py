"""The schedule registry (``ddgsim.schedule``): every kind is in it, each kind's traits agree with what
its action lists do, a bad name is one line listing the good ones, the closed forms dispatched on
the traits give what the name-keyed formulas gave, and no module outside the registry compares a
schedule's name with a string literal."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ddgsim.errors import UserError
from ddgsim.predict.closed_form import CLOSED_FORM, StageCosts, closed_form_period
from ddgsim.predict.memory import in_flight_and_versions
from ddgsim.schedule import (
    MICRO_SCHEDULES,
    SCHEDULES,
    Cycle,
    ScheduleKind,
    ScheduleSpec,
    get_schedule,
    make_schedule,
    staleness_of,
)

NAMES = ("bp", "ddg", "ddg-pipelined", "gpipe", "1f1b")
"""The names as plan files and the CLI spell them, in the order the error lists them."""


def test_the_registry_lists_every_kind_under_its_name() -> None:
    assert tuple(SCHEDULES) == NAMES == tuple(ScheduleKind)
    for name in NAMES:
        spec = get_schedule(name)
        assert isinstance(spec, ScheduleSpec)
        assert spec.kind == name and spec.name == name and spec.kind.spec is spec
        assert get_schedule(ScheduleKind(name)) is spec
    assert json.dumps(list(ScheduleKind)) == json.dumps(list(NAMES))  # plan files are unchanged
    assert f"{ScheduleKind.DDG_PIPELINED}" == "ddg-pipelined"


def test_derived_views() -> None:
    assert MICRO_SCHEDULES == ("gpipe", "1f1b")
    assert set(CLOSED_FORM) == {"ddg-pipelined", "ddg", "bp"}
    from ddgsim.converge.objective import STALE_SCHEDULES

    assert STALE_SCHEDULES == ("ddg", "ddg-pipelined")


@pytest.mark.parametrize("name", ["pipedream", "", "DDG", "all"])
def test_an_unknown_name_is_one_line_listing_the_valid_ones(name: str) -> None:
    with pytest.raises(UserError) as e:
        get_schedule(name)
    assert str(e.value) == f"unknown schedule '{name}' (choose from bp, ddg, ddg-pipelined, gpipe, 1f1b)"
    assert "\n" not in str(e.value)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(NAMES), st.integers(2, 6), st.integers(2, 4))
def test_micro_batched_iff_its_actions_carry_micro_indices(name: str, K: int, M: int) -> None:
    spec = get_schedule(name)
    if not spec.micro_batched:
        with pytest.raises(UserError, match="takes no micro-batches"):
            make_schedule(name, K, 3, M)
        return
    s = make_schedule(name, K, 3, M)
    assert all({a.micro for a in stage if a.kind in "FB"} == set(range(M)) for stage in s.actions)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(NAMES), st.integers(1, 6))
def test_delayed_iff_stale_and_delay_is_the_staleness_seen(name: str, K: int) -> None:
    spec = get_schedule(name)
    s = make_schedule(name, K, 2 * K + 1, 2 if spec.micro_batched else 1)
    seen = [max(staleness_of(stage).values()) for stage in s.actions]
    assert seen == [spec.delay(k, K) for k in range(K)] == [s.delay(k) for k in range(K)]
    if K > 1:
        assert spec.delayed == (seen[0] > 0)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(NAMES), st.integers(1, 6), st.integers(1, 4))
def test_steady_flight_is_the_walk_over_a_long_list(name: str, K: int, M: int) -> None:
    spec = get_schedule(name)
    M = M if spec.micro_batched else 1
    s = make_schedule(name, K, 3 * K + 2, M)
    assert spec.steady_flights(K, M) == [in_flight_and_versions(a, M) for a in s.actions]


@pytest.mark.parametrize("name", NAMES)
def test_the_closed_form_shape_follows_from_the_order(name: str) -> None:
    spec = get_schedule(name)
    acts = [a for stage in make_schedule(name, 3, 6).actions for a in stage]
    waits = any(a.kind == "W" for a in acts)
    if spec.micro_batched:
        assert spec.closed_form is None  # M > 1 is searched on the max-plus recursion
    elif waits:
        assert spec.closed_form is Cycle.NEIGHBOURS
    else:
        assert spec.closed_form is (Cycle.WINDOW_MEAN if spec.delayed else Cycle.ROUND_TRIP)


def _old_closed_form_period(schedule: str, c: StageCosts) -> np.ndarray:
    """``closed_form_period`` as it was when it branched on the name (kept here as the reference)."""
    S, K = c.f.shape
    work = c.f + c.b
    tf, tb, tu = c.tail(0), c.tail(1), c.tail(2)
    close = c.u + tb + tu
    if schedule in ("ddg-pipelined", "bp"):
        best = np.zeros(S)
        comm = np.concatenate([c.a + c.g, np.zeros((S, 1))], axis=1)
        W = np.concatenate([np.zeros((S, 1)), np.cumsum(work, axis=1)], axis=1)
        C = np.concatenate([np.zeros((S, 1)), np.cumsum(comm, axis=1)], axis=1)
        for k in range(K):
            j = np.arange(k, K)
            total = close[:, k, None] + tf[:, j] + W[:, j + 1] - W[:, k, None] + C[:, j] - C[:, k, None]
            if schedule == "ddg-pipelined":
                total = total / (j - k + 1)
            best = np.maximum(best, total.max(axis=1))
    elif schedule == "ddg":
        best = np.max(work + close + tf, axis=1)
        if K > 1:
            pair = c.f[:, :-1] + c.a + work[:, 1:] + tf[:, 1:] + c.g
            best = np.maximum(best, pair.max(axis=1))
    else:
        raise ValueError(f"no closed form for schedule '{schedule}'")
    return np.asarray(np.maximum(best, c.hop_max))


@st.composite
def stage_costs(draw: st.DrawFn) -> StageCosts:
    S, K = draw(st.integers(1, 3)), draw(st.integers(1, 6))
    ms = st.floats(0, 50, allow_nan=False, allow_infinity=False)

    def arr(*shape: int) -> np.ndarray:
        return draw(arrays(np.float64, shape, elements=ms))

    tails = arr(K, 3) if draw(st.booleans()) else None
    return StageCosts(f=arr(S, K), b=arr(S, K), u=arr(S, K), a=arr(S, K - 1), g=arr(S, K - 1),
                      hop_max=arr(S), tails=tails)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(NAMES), stage_costs())
def test_the_closed_form_keyed_by_the_trait_is_the_name_keyed_one(name: str, c: StageCosts) -> None:
    if get_schedule(name).closed_form is None:
        with pytest.raises(ValueError, match=f"no closed form for schedule '{name}'"):
            closed_form_period(name, c)
        return
    np.testing.assert_array_equal(closed_form_period(ScheduleKind(name), c), _old_closed_form_period(name, c))


# ---------------------------------------------------------------- no name comparisons outside the registry

PACKAGE = Path(__file__).resolve().parent.parent / "ddgsim"
REGISTRY = {"schedule/registry.py"}
"""Where the names live: the registry itself."""
def _allowed(rel: Path) -> bool:
    return rel.as_posix() in REGISTRY


def _names_in(node: ast.AST) -> list[str]:
    """The schedule names among ``node``'s string constants (itself, or a literal collection's items)."""
    if isinstance(node, ast.Constant) and node.value in NAMES:
        return [node.value]
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return [e.value for e in node.elts if isinstance(e, ast.Constant) and e.value in NAMES]
    if isinstance(node, ast.Dict):
        return [k.value for k in node.keys if isinstance(k, ast.Constant) and k.value in NAMES]
    return []


def name_comparisons(source: str) -> list[tuple[int, str]]:
    """(line, what) of every place ``source`` compares a schedule name string literal: ``x == "bp"``,
    ``x in ("gpipe", "1f1b")``, ``{"gpipe", "1f1b"} & names``, ``case "ddg":``, and hand-copied lists
    of two or more names (``STALE = ("ddg", "ddg-pipelined")``) that should be views of the registry."""
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            found = [n for part in (node.left, *node.comparators) for n in _names_in(part)]
            if found:
                out.append((node.lineno, f"compares with {found}"))
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitAnd | ast.BitOr | ast.Sub):
            found = [n for part in (node.left, node.right) if isinstance(part, ast.Set) for n in _names_in(part)]
            if found:
                out.append((node.lineno, f"set operation with {found}"))
        elif isinstance(node, ast.MatchValue) and _names_in(node.value):
            out.append((node.lineno, f"matches {_names_in(node.value)}"))
        elif isinstance(node, ast.Tuple | ast.List | ast.Set | ast.Dict) and len(_names_in(node)) >= 2:
            out.append((node.lineno, f"hand-copied names {_names_in(node)}"))
    return out


@pytest.mark.parametrize("source, lines", [
    ('if s == "bp":\n    pass\n', [1]),
    ("ok = name != 'ddg-pipelined'\n", [1]),
    ('ok = s in ("gpipe", "1f1b")\n', [1]),
    ('ok = {"gpipe", "1f1b"} & set(names)\n', [1]),
    ('STALE = ("ddg", "ddg-pipelined")\n', [1]),
    ('match s:\n    case "ddg":\n        pass\n', [2]),
    ('run("bp", 1)\nx = s == "all"\n', []),  # a name passed on, another word compared: fine
])
def test_the_scan_finds_each_form(source: str, lines: list[int]) -> None:
    assert sorted({line for line, _ in name_comparisons(source)}) == lines


def test_no_module_outside_the_registry_compares_schedule_names() -> None:
    found = [f"ddgsim/{p.relative_to(PACKAGE).as_posix()}:{line}: {what}"
             for p in sorted(PACKAGE.rglob("*.py")) if not _allowed(p.relative_to(PACKAGE))
             for line, what in name_comparisons(p.read_text())]
    assert not found, "compare a schedule's traits (ddgsim.schedule.get_schedule), not its name:\n" + "\n".join(found)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(NAMES), st.integers(2, 4), st.lists(st.floats(0.5, 5.0), min_size=8, max_size=8))
def test_in_turn_iff_no_two_stages_ever_compute_at_once(name: str, K: int, ms: list[float]) -> None:
    """``in_turn`` (what validate's contention verdict asks): in a simulated timeline no forward or
    backward of one stage overlaps one of another, and every other schedule overlaps some."""
    from sim_helpers import chain, make_profile

    from ddgsim.predict.costs import costs_for_splits
    from ddgsim.predict.event_sim import run_schedule

    spec = get_schedule(name)
    M = 2 if spec.micro_batched else 1
    costs = costs_for_splits(make_profile(ms[:K], ms[4:4 + K]), [list(range(1, K))], chain(K), micro_batches=M)
    timeline, _, _ = run_schedule(make_schedule(name, K, 2 * K + 2, M), costs)
    spans = [(e.row, e.start_ms, e.end_ms) for e in timeline if e.cat in ("F", "B") and e.end_ms > e.start_ms]
    overlap = any(a[0] != b[0] and a[1] < b[2] and b[1] < a[2] for a in spans for b in spans)
    assert spec.in_turn == (not overlap)
