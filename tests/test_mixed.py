"""Per-stage replica counts D_k: the relaxation's DP against brute force, the bound against every
layout, the candidate exact for its layout, the placement."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from sim_helpers import make_profile, ms
from test_layouts import brute

from ddgsim.plan import mixed
from ddgsim.plan import search as planner
from ddgsim.plan.layouts import MIXED, MIXED_MARGIN, layouts_for, replica_counts, search_layouts
from ddgsim.predict import closed_form, max_plus
from ddgsim.predict.memory import unit_bytes
from ddgsim.predict.scenario import load_scenario
from ddgsim.replicas import Layout, check_batch

unit_cost = st.floats(0.0, 100.0, allow_nan=False)


def compositions(n: int) -> list[list[int]]:
    """Every split of n units into contiguous stages (the cut points)."""
    return [list(c) for K in range(1, n + 1) for c in itertools.combinations(range(1, n), K - 1)]


def stage_of(C: np.ndarray, split: list[int]) -> list[tuple[int, int]]:
    bounds = [0, *split, C.shape[0] - 1]
    return list(itertools.pairwise(bounds))


@st.composite
def relaxations(draw: st.DrawFn) -> tuple[dict[int, np.ndarray], int]:
    n = draw(st.integers(1, 6))
    Ds = draw(st.lists(st.sampled_from([1, 2, 3, 4]), min_size=1, max_size=3, unique=True))
    costs = {D: mixed.stage_costs(np.array(draw(st.lists(unit_cost, min_size=n, max_size=n)))) for D in Ds}
    return costs, draw(st.integers(1, 8))


def brute_relaxed(costs: dict[int, np.ndarray], devices: int) -> float:
    """min over every split and every D_k with Σ D_k ≤ devices of the largest stage cost."""
    n = next(iter(costs.values())).shape[0] - 1
    best = math.inf
    for split in compositions(n):
        stages = stage_of(next(iter(costs.values())), split)
        for reps in itertools.product(costs, repeat=len(stages)):
            if sum(reps) <= devices:
                best = min(best, max(costs[D][u, v] for (u, v), D in zip(stages, reps, strict=True)))
    return best


@settings(max_examples=150, deadline=None)
@given(relaxations())
def test_least_period_is_the_brute_force_optimum(case: tuple[dict[int, np.ndarray], int]) -> None:
    """The bisection over the costs' entries with the one-dimensional DP finds the least largest stage
    cost of any split and D_k on the devices, and a layout that attains it."""
    costs, devices = case
    want = brute_relaxed(costs, devices)
    got = mixed.least_period(costs, devices)
    if not math.isfinite(want):
        assert got is None
        return
    assert got is not None and got.period_ms == want
    stages = stage_of(next(iter(costs.values())), got.split)
    assert len(stages) == len(got.replicas) and got.devices <= devices
    assert max(costs[D][u, v] for (u, v), D in zip(stages, got.replicas, strict=True)) == want


@settings(max_examples=100, deadline=None)
@given(relaxations(), st.floats(0.0, 300.0))
def test_least_devices_is_the_fewest(case: tuple[dict[int, np.ndarray], int], period: float) -> None:
    costs, _ = case
    n = next(iter(costs.values())).shape[0] - 1
    fewest = min((sum(reps) for split in compositions(n)
                  for stages in [stage_of(next(iter(costs.values())), split)]
                  for reps in itertools.product(costs, repeat=len(stages))
                  if all(costs[D][u, v] <= period for (u, v), D in zip(stages, reps, strict=True))), default=None)
    got = mixed.least_devices(costs, period)
    assert (got is None) == (fewest is None)
    if got is not None:
        assert got[0] == fewest


@given(st.lists(unit_cost, min_size=1, max_size=7))
def test_stage_costs_are_the_sums_and_grow_with_the_stage(per_unit: list[float]) -> None:
    C = mixed.stage_costs(np.array(per_unit))
    n = len(per_unit)
    for u in range(n + 1):
        for v in range(n + 1):
            if v <= u:
                assert C[u, v] == math.inf
            else:
                assert C[u, v] == pytest.approx(sum(per_unit[u:v]), abs=1e-9)
                assert v == n or C[u, v + 1] >= C[u, v]
                assert u == 0 or C[u - 1, v] >= C[u, v]


def every_layout(scenario, n: int, devices: int, Ds: list[int]):
    """Every split with every D_k (Σ ≤ devices), contiguous on the scenario's devices in order, and
    the same D_k with a replica's stages together where that is a different mapping."""
    names = [d.name for d in scenario.devices[:devices]]
    for split in compositions(n):
        K = len(split) + 1
        for reps in itertools.product(Ds, repeat=K):
            if sum(reps) > devices:
                continue
            yield split, Layout.packed(names, reps)
            if len(set(reps)) == 1 and reps[0] > 1 and K > 1:
                yield split, layouts_for(scenario, K, reps[0], devices)[1][1]


@settings(max_examples=12, deadline=None)
@given(st.integers(1, 4), st.sampled_from(["ddg-pipelined", "ddg", "bp"]), st.data())
def test_no_layout_beats_the_bound(n: int, schedule: str, data: st.DataObject) -> None:
    """The stated bound is below the period of every split with every per-stage D_k on the devices
    (closed forms of the costs model), and the result is no slower than the best of them that
    the layout search covers (the uniform ones)."""
    f = data.draw(st.lists(ms, min_size=n, max_size=n))
    b = data.draw(st.lists(ms, min_size=n, max_size=n))
    par = data.draw(st.lists(st.integers(0, 50_000_000), min_size=n, max_size=n))
    out = data.draw(st.lists(st.integers(0, 20_000_000), min_size=n, max_size=n))
    profile = make_profile(f, b, out, par, [1000] * n, batch_size=8)
    scenario = load_scenario(data.draw(st.sampled_from(["cluster-2x4", "ideal-8", "pcie-4gpu"])))
    devices = min(len(scenario.devices), data.draw(st.sampled_from([3, 4, 6])))
    found = search_layouts(profile, scenario, schedule, devices)
    assert found.best is not None
    every = []
    for split, layout in every_layout(scenario, n, devices, replica_counts(8, 1, devices)):
        costs = max_plus.costs_for_splits(profile, [split], scenario, layout=layout)
        p = float(closed_form.closed_form_period(schedule, closed_form.stage_costs(costs))[0])
        every.append((p, len(set(layout.replicas)) == 1))
    assert found.any_layout_bound_ms <= min(p for p, _ in every) * (1 + 1e-9)
    assert found.best.iteration_ms <= min(p for p, uniform in every if uniform) * (1 + 1e-9)


@settings(max_examples=25, deadline=None)
@given(st.integers(3, 7), st.sampled_from(["ddg-pipelined", "ddg"]), st.data())
def test_the_candidate_is_the_exact_best_split_of_its_layout(n: int, schedule: str, data: st.DataObject) -> None:
    """When per-stage D_k are searched, the candidate's period is the brute-force best split of its
    layout; the layout is valid (distinct devices of the first N, shards of the batch); it is the
    result where it beats the best uniform layout by the margin."""
    f = data.draw(st.lists(ms, min_size=n, max_size=n))
    b = data.draw(st.lists(ms, min_size=n, max_size=n))
    par = data.draw(st.lists(st.integers(0, 20_000_000), min_size=n, max_size=n))
    profile = make_profile(f, b, [100_000] * n, par, [1000] * n, batch_size=16)
    scenario = load_scenario(data.draw(st.sampled_from(["cluster-2x4", "cluster-4x2", "ideal-8"])))
    devices = data.draw(st.sampled_from([5, 6, 7, 8]))
    found = search_layouts(profile, scenario, schedule, devices)
    assert found.best is not None
    uniform = min(r.iteration_ms for r in found.per_replicas.values())
    m = found.mixed
    if m is None:
        assert found.best.iteration_ms == uniform
        return
    assert m.mapping == MIXED and len(set(m.replica_counts)) > 1
    layout = m.best.layout
    assert layout is not None and layout.stages == m.stages
    names = [d.name for d in scenario.devices[:devices]]
    assert set(layout.flat) <= set(names) and len(set(layout.flat)) == layout.world_size
    check_batch(16, 1, layout.replicas)
    want, _ = brute(profile, scenario, schedule, layout)
    assert m.iteration_ms == pytest.approx(want, rel=1e-7)
    if m.iteration_ms * (1 + MIXED_MARGIN) < uniform:
        assert found.best is m
    else:
        assert found.best.iteration_ms == uniform
    if not found.exact_bound:  # the relaxation's candidate is searched only where its bound leaves room
        assert found.any_layout_bound_ms * (1 + MIXED_MARGIN) < uniform
    else:  # the exact search's optimum is the bound, and no layout found beats it
        assert found.any_layout_bound_ms <= min(uniform, m.iteration_ms) * (1 + 1e-9)


@st.composite
def mixed_layouts(draw: st.DrawFn):
    n = draw(st.integers(2, 8))
    f = draw(st.lists(ms, min_size=n, max_size=n))
    b = draw(st.lists(ms, min_size=n, max_size=n))
    par = draw(st.lists(st.integers(0, 50_000_000), min_size=n, max_size=n))
    out = draw(st.lists(st.integers(0, 20_000_000), min_size=n, max_size=n))
    profile = make_profile(f, b, out, par, [1000] * n, batch_size=16)
    K = draw(st.integers(2, min(n, 4)))
    reps = draw(st.lists(st.sampled_from([1, 2, 4]), min_size=K, max_size=K).filter(
        lambda r: sum(r) <= 8 and len(set(r)) > 1))
    names = [d.name for d in load_scenario("cluster-2x4").devices]
    return profile, Layout.packed(names, reps), draw(st.sampled_from(["ddg-pipelined", "ddg", "bp"]))


@settings(max_examples=60, deadline=None)
@given(mixed_layouts())
def test_search_on_a_per_stage_layout_matches_brute_force(case) -> None:
    """The band search is exact on layouts whose stages have different D_k (its band is wide enough
    for the stage with the most replicas, whose units cost least)."""
    profile, layout, schedule = case
    scenario = load_scenario("cluster-2x4")
    want, arg = brute(profile, scenario, schedule, layout)
    res = planner.search(profile, scenario, schedule, layout.stages, layout=layout)
    assert (res.best is None) == (arg is None)
    if res.best is not None:
        assert res.best.iteration_ms == pytest.approx(want, rel=1e-7)


def test_place_keeps_a_stage_inside_a_node_when_there_is_room() -> None:
    """On 2 nodes × 4, a 4-replica stage after a 1-replica stage goes to the second node (its
    all-reduce stays on the fast links) rather than straddling both; with no room left it packs."""
    sc = load_scenario("cluster-2x4")
    names = [d.name for d in sc.devices]
    params = [1e8, 1e8]
    spread = mixed.place(sc, names, mixed.MixedSplit(1.0, [1], [1, 4]), params, "ring")
    assert spread.devices == ((names[0],), tuple(names[4:8]))
    packed = mixed.place(sc, names, mixed.MixedSplit(1.0, [1], [4, 4]), params, "ring")
    assert packed.devices == (tuple(names[:4]), tuple(names[4:8]))
    tight = mixed.place(sc, names[:5], mixed.MixedSplit(1.0, [1], [1, 4]), params, "ring")
    assert tight.devices == ((names[0],), tuple(names[1:5]))


@st.composite
def memory_profiles(draw: st.DrawFn, n: int, act_max: int, out_max: int, par: list[int] | None = None):
    """A profile of n units whose rows may save their input or output (a boundary tensor two
    units share), or leave the fields unknown."""
    out = draw(st.lists(st.integers(0, out_max), min_size=n, max_size=n))
    known = draw(st.booleans())
    s_in = [0] + [draw(st.sampled_from([0, out[i - 1]])) for i in range(1, n)]
    s_out = [draw(st.sampled_from([0, out[i]])) for i in range(n)]
    extra = draw(st.lists(st.integers(0, act_max), min_size=n, max_size=n))
    act = [e + a + b for e, a, b in zip(extra, s_in, s_out, strict=True)]
    return make_profile([1.0] * n, [1.0] * n, out, par, act, batch_size=16,
                        saved_input=s_in if known else None, saved_output=s_out if known else None)


@st.composite
def fitting_cases(draw: st.DrawFn):
    n = draw(st.integers(1, 5))
    Ds = draw(st.lists(st.sampled_from([1, 2, 4]), min_size=1, max_size=3, unique=True))
    costs = {D: mixed.stage_costs(np.array(draw(st.lists(unit_cost, min_size=n, max_size=n)))) for D in Ds}
    devices = draw(st.integers(1, 7))
    par = draw(st.lists(st.integers(0, 1000), min_size=n, max_size=n))
    profile = draw(memory_profiles(n, 1000, 300))
    schedule = draw(st.sampled_from(["ddg", "ddg-pipelined", "bp"]))
    fit = mixed.memory_fit(par, unit_bytes(profile), Ds, min(n, devices), schedule, 1, draw(st.floats(500.0, 20000.0)))
    return costs, devices, fit


@settings(max_examples=150, deadline=None)
@given(fitting_cases(), st.floats(0.0, 300.0))
def test_least_devices_fitting_is_the_fewest(case, period: float) -> None:
    """The memory-aware DP finds the fewest devices over every split and D_k whose stages all meet
    the period and the memory model (which depends on how many stages follow each)."""
    costs, _, fit = case
    C0 = next(iter(costs.values()))
    n = C0.shape[0] - 1
    fewest = None
    for split in compositions(n):
        stages = stage_of(C0, split)
        K = len(stages)
        if fit.stages < K:
            continue
        for reps in itertools.product(costs, repeat=K):
            if all(costs[D][u, v] <= period and u >= fit.first[(D, K - 1 - k)][v]
                   for k, ((u, v), D) in enumerate(zip(stages, reps, strict=True))):
                fewest = sum(reps) if fewest is None else min(fewest, sum(reps))
    got = mixed.least_devices_fitting(costs, period, fit)
    assert (got is None) == (fewest is None)
    if got is not None:
        m, split, reps = got
        assert m == fewest == sum(reps) and len(reps) == len(split) + 1
        stages = stage_of(C0, split)
        K = len(stages)
        for k, ((u, v), D) in enumerate(zip(stages, reps, strict=True)):
            assert costs[D][u, v] <= period and u >= fit.first[(D, K - 1 - k)][v]


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 6), st.sampled_from(["ddg", "ddg-pipelined", "bp"]), st.data())
def test_a_stage_the_memory_model_admits_fits_wherever_it_sits(n: int, schedule: str, data: st.DataObject) -> None:
    """Whatever stage ``memory_fit`` admits (units [u, v), D replicas, j stages after it) fits in
    ``stage_memory``'s model in a real split with j stages after it (limits drawn around the
    stage's real need, so a missing term shows)."""
    from ddgsim.predict.memory import stage_memory
    from ddgsim.schedule import Steady

    par = data.draw(st.lists(st.integers(0, 10_000_000), min_size=n, max_size=n))
    profile = data.draw(memory_profiles(n, 10_000_000, 40_000_000, par))
    v = data.draw(st.integers(1, n))
    u = data.draw(st.integers(0, v - 1))
    j = data.draw(st.integers(0, n - v))
    if j == 0 and v < n:
        v = n  # only the last stage has no stage after it
    D = data.draw(st.sampled_from([1, 2, 4]))
    after = [(v + i, v + i + 1) for i in range(j - 1)] + ([(v + j - 1, n)] if j else [])
    ranges = ([(0, u)] if u else []) + [(u, v)] + after
    k = 1 if u else 0
    reps = [1] * len(ranges)
    reps[k] = D
    need = stage_memory(profile, ranges, Steady(schedule), 1, replicas=reps)[k].total
    limit = need * data.draw(st.floats(0.7, 1.3)) + 1.0
    fit = mixed.memory_fit(par, unit_bytes(profile), [1, 2, 4], n, schedule, 1, limit)
    if u < fit.first[(D, j)][v]:
        event("not admitted")
        return
    event("admitted")
    assert need <= limit


def test_the_memory_model_counts_the_input_and_output_buffers() -> None:
    """A stage that holds nothing but a 40 MB input (and, not last, a 40 MB output), both saved
    by its units, needs the receive windows and the two sends: the model admits it at that need
    and not below."""
    from ddgsim.predict.memory import stage_memory
    from ddgsim.schedule import Steady

    mb40 = 40_000_000
    profile = make_profile([1.0] * 3, [1.0] * 3, [mb40, mb40, 0], [0] * 3, [mb40, 2 * mb40, mb40], batch_size=16,
                           saved_input=[0, mb40, mb40], saved_output=[mb40, mb40, 0])
    ub = unit_bytes(profile)
    for ranges, k, buffers in (([(0, 1), (1, 3)], 1, 3 * mb40), ([(0, 1), (1, 2), (2, 3)], 1, 5 * mb40)):
        u, v = ranges[k]
        j = len(ranges) - 1 - k
        mem = stage_memory(profile, ranges, Steady("ddg"), 1, replicas=[1] * len(ranges))[k]
        assert mem.buffers == buffers  # 2 posted receives + 1 sent per side, the sent activation saved
        need = mem.total
        below = mixed.memory_fit([0] * 3, ub, [1], 3, "ddg", 1, need - 2)
        at = mixed.memory_fit([0] * 3, ub, [1], 3, "ddg", 1, need + 2)
        assert below.first[(1, j)][v] > u and at.first[(1, j)][v] <= u
