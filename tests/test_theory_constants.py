"""The constants of ddgsim.theory.bounds: closed forms, K = 1 reductions, the Levin–May boundary."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from ddgsim.theory import bounds as theory

finite = st.floats(min_value=1e-3, max_value=1e3, allow_nan=False)


@given(K=st.integers(1, 64))
def test_sum_sq_delays_closed_form(K: int) -> None:
    assert theory.sum_sq_delays(K) == sum(d * d for d in theory.delays(K))
    assert theory.delays(K) == list(range(K - 1, -1, -1))


@given(M=finite, V=finite, L=finite, gamma_frac=st.floats(0.01, 1.0), T=st.integers(1, 10**6),
       gap=finite)
def test_k1_is_plain_sgd(M: float, V: float, L: float, gamma_frac: float, T: int, gap: float) -> None:
    """K = 1: M_K is the SGD noise bound V, 0 for exact gradients; the fixed-step bound is
    SGD's ``2(f(w⁰)−f*)/(γT) + γLV`` (GD's ``2(f(w⁰)−f*)/(γT)``); σ is 1 for any steps."""
    gamma = gamma_frac / L
    assert theory.m_k(1, M, variance=V) == V
    assert theory.m_k(1, M, sigma=7.0, variance=V) == V
    assert theory.m_k_full_batch(1, M, sigma=7.0) == 0.0
    sgd = theory.fixed_step_bound(gamma, L, theory.m_k(1, M, variance=V), T, gap)
    assert sgd == pytest.approx(2 * gap / (gamma * T) + gamma * L * V, rel=1e-12)
    assert theory.fixed_step_bound(gamma, L, theory.m_k_full_batch(1, M), T, gap) == pytest.approx(
        2 * gap / (gamma * T), rel=1e-12)
    assert theory.sigma([3.0, 1.0, 0.5, 2.0], 1) == 1.0
    assert theory.stage_step_limits(1, L) == [pytest.approx(2.0 / L)]


@given(K=st.integers(1, 64), sig=st.floats(1.0, 100.0))
def test_our_constant_is_never_looser_than_the_restated_one(K: int, sig: float) -> None:
    """(1+(1+σ)(K−1))M + 2σK·M·S_K ≤ K·M + σK⁴M: fixing the correlation gap costs less than
    the restated constant's slack in the delay term."""
    assert theory.m_k(K, 1.0, sigma=sig) <= theory.m_k_paper(K, 1.0, sigma=sig) * (1 + 1e-12)
    assert theory.m_k_full_batch(K, 1.0, sigma=sig) <= theory.m_k(K, 1.0, sigma=sig)


@given(steps=st.lists(st.floats(1e-4, 1.0), min_size=1, max_size=40), K=st.integers(1, 8))
def test_sigma_matches_the_paper_for_nonincreasing_steps(steps: list[float], K: int) -> None:
    steps = sorted(steps, reverse=True)
    paper = max(steps[max(0, t - K + 1)] / steps[t] for t in range(len(steps)))
    assert theory.sigma(steps, K) == pytest.approx(max(1.0, paper))


@given(tau=st.integers(0, 40))
@example(tau=0)
@example(tau=1)
def test_levin_may_limit_is_where_the_companion_spectral_radius_crosses_one(tau: int) -> None:
    a_star = theory.levin_may_limit(tau)
    assert theory.spectral_radius(a_star * (1 - 1e-6), tau) < 1.0
    assert theory.spectral_radius(a_star * (1 + 1e-6), tau) > 1.0
    # bisection on the spectral radius finds the same number
    lo, hi = 1e-9, 2.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if theory.spectral_radius(mid, tau) < 1.0 else (lo, mid)
    assert lo == pytest.approx(a_star, abs=1e-7)


@given(tau=st.integers(0, 20), frac=st.floats(0.01, 0.99))
def test_levin_may_whole_interval_is_stable(tau: int, frac: float) -> None:
    assert theory.spectral_radius(frac * theory.levin_may_limit(tau), tau) < 1.0


def test_levin_may_known_values() -> None:
    assert theory.levin_may_limit(0) == 2.0
    assert theory.levin_may_limit(1) == pytest.approx(1.0)
    assert theory.levin_may_limit(2) == pytest.approx((math.sqrt(5) - 1) / 2)  # 2cos(2π/5)
    assert theory.levin_may_limit(10**6) == pytest.approx(math.pi / 2e6, rel=1e-5)


def test_bounds_numbers() -> None:
    """Hand-checked: K=2 ⇒ S=1, M_K = (1+2·1)·1 + 2·1·2·1·1 = 7; bound = 2·3/(0.5·10) + 0.5·2·7."""
    assert theory.m_k(2, 1.0) == 7.0
    assert theory.m_k_full_batch(2, 1.0) == 2.0
    assert theory.fixed_step_bound(0.5, 2.0, 7.0, 10, 3.0) == pytest.approx(1.2 + 7.0)
    assert theory.diminishing_step_bound([1.0, 0.5], 1.0, 2.0, 3.0) == pytest.approx(
        6 / 1.5 + 2.0 * 1.25 / 1.5)
    assert theory.descent_bound(0.5, 2.0, 7.0, 4.0) == pytest.approx(-1.0 + 1.75)
    assert theory.best_fixed_step(2.0, 7.0, 10**6, 3.0) == pytest.approx(math.sqrt(6 / (10**6 * 14)))
    assert theory.best_fixed_step(2.0, 7.0, 1, 3.0) == 0.5


@pytest.mark.parametrize(("fn", "args"), [
    (theory.delays, (0,)),
    (theory.max_step, (0.0,)),
    (theory.m_k, (2, -1.0)),
    (theory.levin_may_limit, (-1,)),
    (theory.sigma, ([1.0, 0.0], 2)),
])
def test_bad_input_raises(fn: Callable[..., object], args: tuple[object, ...]) -> None:
    with pytest.raises(ValueError):
        fn(*args)


def test_constants_by_hand() -> None:
    """Values computed by hand from the formulas in docs/theory.md."""
    assert theory.sum_sq_delays(4) == 14 and isinstance(theory.sum_sq_delays(4), int)  # 3²+2²+1²
    # M_3 = (1 + (1+σ)(K−1))V + 2σKM·S_3 = (1 + 2.5·2)·0.5 + 2·1.5·3·2·5
    assert theory.m_k(3, 2.0, sigma=1.5, variance=0.5) == pytest.approx(93.0)
    assert theory.m_k(3, 0.0) == 0.0  # M = 0 is allowed (a deterministic, converged run)
    assert theory.m_k_paper(3, 2.0, sigma=1.5) == pytest.approx(3 * 2 + 1.5 * 81 * 2)
    assert theory.m_k_paper(3, 2.0) == pytest.approx(3 * 2 + 81 * 2)  # σ = 1 unless told
    # constant steps 0.1 for 10 iterations: Γ = 1, Σγ² = 0.1 → 2·f0/Γ + L·M_K·0.1
    assert theory.diminishing_step_bound(lambda t: 0.1, 2.0, 3.0, 1.0, iterations=10) == pytest.approx(2.6)
    assert theory.diminishing_step_bound([0.1] * 10 + [5.0] * 3, 2.0, 3.0, 1.0, iterations=10) == pytest.approx(2.6)
    # γ_t = 1/(t+1), K = 2: the largest ratio over a 2-step window is γ_0/γ_1 = 2
    assert theory.sigma(lambda t: 1 / (t + 1), 2, iterations=4) == pytest.approx(2.0)
    assert theory.sigma([1.0, 1.0, 0.1], 2, iterations=2) == 1.0  # the 0.1 lies past the horizon


def test_best_fixed_step_edges() -> None:
    # √(2·f0/(T·L·M_K)) = √(2·0.5/(100·1·0.5)) = √0.02, below the cap 1/L = 1
    assert theory.best_fixed_step(1.0, 0.5, 100, 0.5) == pytest.approx(0.02**0.5)
    assert theory.best_fixed_step(2.0, 0.0, 100, 0.5) == 0.5  # no noise, no delay: the cap
    assert theory.best_fixed_step(2.0, 0.5, 100, 0.0) == 0.5  # nothing to descend: the cap
    assert theory.best_fixed_step(2.0, 1e-6, 10, 1.0) == 0.5  # the optimum lies beyond the cap


@pytest.mark.parametrize(("call", "message"), [
    (lambda: theory.delays(0), "number of stages must be ≥ 1, got 0"),
    (lambda: theory.max_step(0.0), "L must be > 0, got 0.0"),
    (lambda: theory.fixed_step_bound(0.1, 1.0, 1.0, 0, 1.0), "T must be > 0, got 0"),
    (lambda: theory.fixed_step_bound(0.0, 1.0, 1.0, 5, 1.0), "gamma must be > 0, got 0.0"),
    (lambda: theory.m_k(2, -1.0), "m must be ≥ 0, got -1.0"),
    (lambda: theory.m_k(2, 1.0, variance=-0.5), "variance must be ≥ 0, got -0.5"),
    (lambda: theory.levin_may_limit(-1), "delay must be ≥ 0, got -1"),
    (lambda: theory.sigma(lambda t: 1.0, 2), "iterations is required when steps is a function"),
    (lambda: theory.sigma([], 2), "step sizes must be a non-empty sequence of positive numbers"),
    (lambda: theory.sigma([0.1, 0.0], 2), "step sizes must be a non-empty sequence of positive numbers"),
])
def test_bad_arguments_name_the_value(call, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError) as err:
        call()
    assert str(err.value) == message
