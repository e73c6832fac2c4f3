"""The exact per-stage D_k search (:mod:`ddgsim.plan.exact`) against brute force over every split ×
every D_k, priced by the simulator's costs model (``max_plus.costs_for_splits`` + the closed form)."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from sim_helpers import chain, make_profile, ms, overheads, with_overheads

from ddgsim.plan import exact
from ddgsim.plan.layouts import replica_counts
from ddgsim.predict import closed_form, max_plus
from ddgsim.predict.overheads import Overheads
from ddgsim.predict.scenario import cluster, load_scenario
from ddgsim.profile.format import Profile
from ddgsim.replicas import Layout


def replica_sequences(options: list[int], devices: int, stages: int) -> list[tuple[int, ...]]:
    """Every D_k sequence of ``stages`` counts from ``options`` with Σ D_k ≤ ``devices``, in
    ``itertools.product`` order (grown a stage at a time, as the product of 5 options over 12 stages
    would be 244 million tuples)."""
    seqs: list[tuple[int, ...]] = [()]
    for left in range(stages, 0, -1):
        least = (left - 1) * min(options)  # what the stages after this one need at the least
        seqs = [(*r, d) for r in seqs for d in options if sum(r) + d + least <= devices]
    return seqs


def brute(profile: Profile, scenario, devices: int, options: list[int],
          placement: str = "packed") -> tuple[float, list[int], tuple[int, ...]]:
    """The least ddg-pipelined period over every K, every split and every D_k (Σ D_k ≤ devices), each
    layout priced by ``costs_for_splits`` and the closed form; ``placement`` ``reversed`` puts the
    stages on the devices from the last one back (the same on a symmetric scenario)."""
    n = profile.num_units
    names = [d.name for d in scenario.devices[:devices]]
    if placement == "reversed":
        names = names[::-1]
    best: tuple[float, list[int], tuple[int, ...]] = (math.inf, [], ())
    for K in range(1, n + 1):
        splits = [list(s) for s in itertools.combinations(range(1, n), K - 1)]
        for reps in replica_sequences(options, devices, K):
            costs = max_plus.costs_for_splits(profile, splits, scenario, layout=Layout.packed(names, reps))
            per = closed_form.closed_form_period("ddg-pipelined", closed_form.stage_costs(costs))
            i = int(np.argmin(per))
            if per[i] < best[0]:
                best = (float(per[i]), splits[i], reps)
    return best


@st.composite
def symmetric_cases(draw: st.DrawFn, max_units: int = 12, max_devices: int = 8):
    n = draw(st.integers(1, max_units))
    f = draw(st.lists(ms, min_size=n, max_size=n))
    b = draw(st.lists(ms, min_size=n, max_size=n))
    out = draw(st.lists(st.integers(0, 20_000_000), min_size=n, max_size=n))
    par = draw(st.lists(st.integers(0, 50_000_000), min_size=n, max_size=n))
    profile = make_profile(f, b, out, par, batch_size=draw(st.sampled_from([7, 8, 10, 12, 16])))
    N = draw(st.integers(1, max_devices))
    bw = draw(st.sampled_from([math.inf, 0.5, 2.0, 12.0, 100.0]))
    lat = draw(st.sampled_from([0.0, 5.0, 100.0, 2000.0]))
    speed = draw(st.sampled_from([0.5, 1.0, 2.0]))
    scenario = with_overheads(chain(N, bw, lat, [speed] * N, mesh=True), draw(overheads()))
    return profile, scenario, N


def small_enough(profile: Profile, options: list[int], N: int, limit: int = 20_000) -> bool:
    """Brute force within a few seconds: layouts × splits."""
    n = profile.num_units
    total = sum(math.comb(n - 1, K - 1) * len(replica_sequences(options, N, K)) for K in range(1, min(n, N) + 1))
    return total <= limit


@settings(max_examples=60, deadline=None)
@given(symmetric_cases())
def test_exact_search_equals_brute_force(case) -> None:
    """Every K, split and D_k on ≤ 8 devices and ≤ 12 units: the DP's period is the brute-force optimum,
    and the layout it returns attains it (by the simulator's costs)."""
    profile, scenario, N = case
    options = replica_counts(profile.batch_size, 1, N)
    if not small_enough(profile, options, N, limit=8_000):
        event("skipped: too large for brute force")
        return
    assert exact.symmetric(scenario, N)
    found = exact.exact_search(profile, scenario, N, options)
    want, split, reps = brute(profile, scenario, N, options)
    event(f"distinct D_k: {len(set(reps)) > 1}")
    assert found.period_ms <= want * (1 + 1e-7) + 1e-9, (found, want, split, reps)
    assert found.period_ms >= want * (1 - 1e-7) - 1e-9, (found, want, split, reps)
    assert found.devices <= N and set(found.replicas) <= set(options)
    every = list(range(1, min(N, profile.batch_size) + 1))
    if every != options and small_enough(profile, every, N, limit=1_500):
        # the counts left out (the same largest shard as fewer replicas) never beat the ones searched
        event("replica counts left out: checked against every count")
        assert found.period_ms <= brute(profile, scenario, N, every)[0] * (1 + 1e-7) + 1e-9
    names = [d.name for d in scenario.devices[:N]]
    got = exact.evaluate(profile, scenario, names, found.split, found.replicas, max_plus.UPDATE_GB_S, "ring")
    assert got == found.period_ms
    if scenario.overheads.alone is None:  # the tables price jobs of ≥ 2 processes (and one without [alone])
        check_dp(profile, scenario, N, options, want, split, reps)


def check_dp(profile: Profile, scenario, N: int, options: list[int], want: float, split: list[int],
             reps: tuple[int, ...]) -> None:
    """The DP alone: the tables price the brute-force optimum as the simulator does; at its period the DP
    finds a layout that attains it, and just below it finds none."""
    n = profile.num_units
    names = [d.name for d in scenario.devices[:N]]
    T = exact._tables(profile, scenario, names, sorted(set(options) | {1}), max_plus.UPDATE_GB_S, "ring")
    assert math.isclose(exact._period(T, n, split, reps), want, rel_tol=1e-9, abs_tol=1e-12)
    at = exact._feasible(T, n, N, want * (1 + 1e-9) + 1e-12, 1)
    assert at is not None
    assert exact._period(T, n, *at) <= want * (1 + 1e-9) + 1e-12
    assert exact._feasible(T, n, N, want * (1 - 1e-6), 1) is None


@pytest.mark.parametrize("seed", range(4))
def test_largest_cases_equal_brute_force(seed: int) -> None:
    """12 units on 8 devices (D_k in 1, 2, 4, 8; the last seed also 3: shards of 3, 3 and 2 samples), slow
    links and the executor's overheads: the sizes the random cases above reach only now and then."""
    rng = random.Random(seed)
    n, N = 12, 8
    profile = make_profile([rng.uniform(0.05, 50) for _ in range(n)], [rng.uniform(0.05, 50) for _ in range(n)],
                           [rng.randrange(0, 20_000_000) for _ in range(n)],
                           [rng.randrange(0, 50_000_000) for _ in range(n)], batch_size=8)
    over = Overheads(forward_us=40.0, backward_us=700.0, update_us=40.0, send_us=[0.0, 700.0][seed % 2],
                     receive_us=[5000.0, 40.0][seed % 2], tail_us=40.0)
    scenario = with_overheads(chain(N, [0.2, 1.0][seed // 2], [2000.0, 100.0][seed % 2], mesh=True), over)
    options = replica_counts(8, 1, N) if seed == 3 else [1, 2, 4, 8]
    found = exact.exact_search(profile, scenario, N, options)
    want, split, reps = brute(profile, scenario, N, options)
    assert math.isclose(found.period_ms, want, rel_tol=1e-7), (found, want, split, reps)
    check_dp(profile, scenario, N, options, want, split, reps)


@settings(max_examples=10, deadline=None)
@given(symmetric_cases(max_units=6, max_devices=6))
def test_placement_does_not_matter_on_symmetric_scenarios(case) -> None:
    """The premise of the search: on a symmetric scenario the stages in reverse device order cost the same."""
    profile, scenario, N = case
    options = replica_counts(profile.batch_size, 1, N)
    a = brute(profile, scenario, N, options)
    b = brute(profile, scenario, N, options, placement="reversed")
    assert a[0] == b[0]


def test_uneven_per_stage_layout_beats_uniform() -> None:
    """A model whose first units are heavy with few parameters and whose last unit is light with many:
    the best layout gives its stages different D_k, and the search finds it (brute force agrees)."""
    profile = make_profile([40, 40, 10, 2], [80, 80, 20, 4], [100, 100, 100, 100],
                           [0, 0, 1_000_000, 60_000_000], batch_size=8)
    scenario = chain(8, 2.0, 5.0, mesh=True)
    options = replica_counts(8, 1, 8)
    found = exact.exact_search(profile, scenario, 8, options)
    want = brute(profile, scenario, 8, options)
    assert len(set(want[2])) > 1
    assert math.isclose(found.period_ms, want[0], rel_tol=1e-7)
    assert len(set(found.replicas)) > 1


def test_symmetric() -> None:
    assert exact.symmetric(chain(4, 2.0, 5.0, mesh=True), 4)
    assert exact.symmetric(load_scenario("ideal-8"), 8)
    assert exact.symmetric(load_scenario("ideal-1024"), 1024)
    assert not exact.symmetric(chain(4, 2.0, 5.0), 4)  # a chain: routes of several hops
    assert not exact.symmetric(chain(3, [2.0, 1.0, 2.0], 5.0, mesh=True), 3)  # links differ
    assert not exact.symmetric(chain(3, 2.0, 5.0, [1.0, 2.0, 1.0], mesh=True), 3)  # speeds differ
    assert not exact.symmetric(cluster(2, 4), 8)
    assert exact.symmetric(chain(2, 2.0, 5.0), 2)
