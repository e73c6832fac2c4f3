"""DDG on a block-diagonal quadratic, through the engine: the Levin–May boundary.

With one weight per stage and f(w) = Σ_k ½ λ_k w_k², stage k of the engine computes
w_k^{t+1} = w_k^t − γλ_k w_k^{t−τ_k}, τ_k = K−1−k (and w_k^{t+1} = w_k^t while t < τ_k,
the warm-up: the same recursion started from the constant history w_k^{−τ..0} = w_k^0, which
cannot change asymptotic stability). It converges iff γλ_k < 2cos(τ_kπ/(2τ_k+1)) for all k.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ddgsim.converge import theory_check as tc
from ddgsim.theory import bounds as theory

FEW = settings(max_examples=min(settings().max_examples, 8))
GAMMA = 0.5


def levin_may(a: float, tau: int, x0: float, steps: int) -> np.ndarray:
    """x_{t+1} = x_t − a·x_{t−τ} for t ≥ τ, x_{t+1} = x_t before (the engine's warm-up)."""
    x = np.empty(steps + 1)
    x[0] = x0
    for t in range(steps):
        x[t + 1] = x[t] - (a * x[t - tau] if t >= tau else 0.0)
    return x


def horizon(factors: list[float], K: int, cap: int, decades: float) -> int:
    """Iterations for ``decades`` powers of 10 of decay or growth of the slowest stage."""
    rates = [abs(math.log(max(1e-12, theory.spectral_radius(f * theory.levin_may_limit(K - 1 - k), K - 1 - k))))
             for k, f in enumerate(factors)]
    return min(cap, math.ceil(decades * math.log(10) / min(rates)) + 10)


def run(factors: list[float], cap: int = 600, decades: float = 3) -> tuple[np.ndarray, list[float]]:
    K = len(factors)
    lam = [f * theory.levin_may_limit(K - 1 - k) / GAMMA for k, f in enumerate(factors)]
    p = tc.scalar_quadratic(lam, [1.0] * K)
    N = horizon(factors, K, cap, decades)
    traj = tc.run_ddg(p, GAMMA, N)
    for k in range(K):
        ref = levin_may(GAMMA * lam[k], K - 1 - k, 1.0, N)
        np.testing.assert_allclose(traj.W[:, k], ref, rtol=1e-9, atol=1e-12)
    return traj.W, lam


def tail(W: np.ndarray, k: int, K: int) -> float:
    return float(np.max(np.abs(W[-(K - k) :, k])))


@FEW
@given(K=st.integers(1, 8), data=st.data())
@example(K=8, data=None)
def test_converges_below_and_diverges_above_the_limit(K: int, data: st.DataObject | None) -> None:
    if data is None:  # explicit example: every stage 20% below, then stage 0 20% above
        below = [0.8] * K
        bad = 0
    else:
        below = data.draw(st.lists(st.floats(0.3, 0.75), min_size=K, max_size=K), label="below")
        bad = data.draw(st.integers(0, K - 1), label="bad stage")
    W, _ = run(below)
    assert all(tail(W, k, K) < 0.1 for k in range(K)), "every stage below its limit converges"
    above = list(below)
    above[bad] = 1.2 if data is None else data.draw(st.floats(1.25, 1.5), label="above")
    W, _ = run(above)
    assert tail(W, bad, K) > 10.0, f"stage {bad} above its limit diverges"
    assert all(tail(W, k, K) < 0.1 for k in range(K) if k != bad), "the others are unaffected"


@pytest.mark.parametrize("K", [2, 3])
def test_exact_boundary_within_two_percent(K: int) -> None:
    """The stalest stage, 2% either side of 2cos(τπ/(2τ+1)): decays / grows by 10²."""
    tau = K - 1
    W, _ = run([0.98] + [0.5] * (K - 1), cap=3000, decades=2)
    assert tail(W, 0, K) < 0.1
    W, _ = run([1.02] + [0.5] * (K - 1), cap=3000, decades=2)
    assert tail(W, 0, K) > 10.0
    assert theory.levin_may_limit(tau) == pytest.approx(2 * math.cos(tau * math.pi / (2 * tau + 1)))


def test_one_over_l_is_unstable_for_stale_stages() -> None:
    """γ = 1/L (the analysis' largest step) sits above the stability limit of every stage with
    τ ≥ 2 (2cos(2π/5) ≈ 0.618 < 1): the bounds then hold only because M grows with the run."""
    W, _ = run([1.0 / theory.levin_may_limit(2), 0.5, 0.5])
    assert tail(W, 0, 3) > 10.0
