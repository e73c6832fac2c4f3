"""The convergence analysis (docs/theory.md) as properties of runs of the executor's engine.

Every check evaluates an inequality that provably holds for what we observe:
* full-batch runs: the gradients are exact, so the "expectation" bounds hold along the
  one trajectory — checked per step and on the average;
* mini-batch runs: the per-trajectory inequality the proof establishes *before* taking
  expectations (it keeps the zero-mean term), checked per step;
* the expectation bound itself: on a 2-sample problem, by enumerating every batch sequence,
  so that E is computed exactly.
``M`` is the tightest value valid along the run (the proof uses the bound only at the
points it visits), or the a-priori bound of logistic regression where one exists.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import example, given, note, settings, target
from hypothesis import strategies as st

from ddgsim.converge import theory_check as tc
from ddgsim.theory import bounds as theory

# Engine runs are slow next to pure math: a few examples under the "ci" profile, the
# profile's own number under "thorough".
FEW = settings(max_examples=min(settings().max_examples, 8))
TOL = 1e-9


def tol(*arrays: np.ndarray | float) -> float:
    """Absolute tolerance for float64 round-off, relative to the magnitudes involved."""
    return TOL * (1.0 + max(float(np.max(np.abs(a))) for a in arrays))


blocks_st = st.integers(1, 6).flatmap(
    lambda K: st.lists(st.integers(1, 3), min_size=K, max_size=K))


@FEW
@given(kind=st.sampled_from(tc.KINDS), blocks=blocks_st, frac=st.floats(0.05, 1.5),
       batch=st.sampled_from([None, 4]), seed=st.integers(0, 2**16), extra=st.integers(1, 5))
@example(kind="lsq", blocks=[1], frac=1.0, batch=None, seed=0, extra=1)
@example(kind="logistic", blocks=[2, 1, 3, 1, 1, 2], frac=0.5, batch=4, seed=1, extra=3)
def test_delayed_gradient_identity(kind: str, blocks: list[int], frac: float, batch: int | None,
                                   seed: int, extra: int) -> None:
    """Stage k at iteration t applies ∇_{w_k} f_{x(s)}(w^s), s = t − (K−1−k), at the stashed
    weights: checked against autograd on the *unsplit* problem at the recorded w^s."""
    p = tc.make_problem(kind, blocks, n=12, seed=seed, batch_size=batch)
    K, N = p.stages, p.stages + extra
    gamma = frac / p.L
    traj = tc.run_ddg(p, lambda t: gamma / (1 + 0.1 * t), N)
    W = traj.W
    for k, (sl, recs) in enumerate(zip(p.slices(), traj.result.applied, strict=True)):
        d = K - 1 - k
        assert [r.iteration for r in recs] == list(range(d, N)), "stage updates once per iteration after warm-up"
        for r in recs:
            assert r.iteration - r.batch == d, "staleness"
            assert r.weights_used is not None and r.grad is not None
            np.testing.assert_array_equal(r.weights_used.numpy(), W[r.batch][sl])
            w = torch.tensor(W[r.batch], requires_grad=True)
            x, y = p.batch(p.batch_indices(r.batch))
            (g,) = torch.autograd.grad(p.torch_value(w, x, y), w)
            np.testing.assert_allclose(r.grad.numpy(), g.numpy()[sl], rtol=1e-12, atol=1e-12)
            assert r.lr == pytest.approx(gamma / (1 + 0.1 * r.iteration), rel=1e-15)
            np.testing.assert_allclose(W[r.iteration + 1][sl], W[r.iteration][sl] - r.lr * r.grad.numpy(),
                                       rtol=1e-14, atol=1e-14)
        for t in range(min(d, N)):
            np.testing.assert_array_equal(W[t + 1][sl], W[t][sl])


def slack(bound: float, observed: float) -> float:
    return math.inf if observed <= 0 else bound / observed


@FEW
@given(kind=st.sampled_from(tc.KINDS), K=st.integers(1, 8), frac=st.floats(0.05, 1.0),
       seed=st.integers(0, 2**16))
@example(kind="lsq", K=1, frac=1.0, seed=0)
@example(kind="quadratic", K=8, frac=1.0, seed=0)
@example(kind="logistic", K=8, frac=1.0, seed=0)
def test_full_batch_descent_and_fixed_step_bound(kind: str, K: int, frac: float, seed: int) -> None:
    """γ ≤ 1/L, exact gradients: every link of the one-step chain, the constant form
    f(w^{t+1}) − f(w^t) ≤ −(γ/2)‖∇_A f(w^t)‖² + (Lγ²/2)·σK·M·S_K, and the average bound."""
    p = tc.make_problem(kind, tc.split_blocks(2 * K, K), n=16, seed=seed)
    gamma = frac / p.L
    N = 6 * K + 10
    traj = tc.run_ddg(p, gamma, N)
    ch = tc.descent_chain(traj)
    gsq = tc.active_grad_sq(traj)
    m = tc.observed_m(traj)
    if p.m_full_batch() is not None:
        assert m <= p.m_full_batch() * (1 + 1e-12)  # type: ignore[operator]
    mk = theory.m_k_full_batch(K, m)
    const = np.array([theory.descent_bound(gamma, p.L, mk, g) for g in gsq])
    eps = tol(ch.change, ch.delay_walk, const)
    assert np.all(ch.change <= ch.lemma + eps), "descent lemma (L-smoothness)"
    assert np.all(ch.lemma <= ch.pathwise + eps), "polarisation + Young"
    assert np.all(ch.lemma <= ch.delay_walk + eps), "‖Δ‖² ≤ L² d Σ γ_j²‖G^j‖²"
    assert np.all(ch.delay_walk <= const + eps), "constant form"
    f0_gap = p.value(traj.W[0]) - p.f_star
    bound = theory.fixed_step_bound(gamma, p.L, mk, N, f0_gap)
    observed = float(gsq.mean())
    note(f"fixed-step bound {bound:.4g} observed {observed:.4g} slack {slack(bound, observed):.3g}")
    target(-math.log(slack(bound, observed)), label="log fixed-step slack (closer to 0 = tighter)")
    assert observed <= bound * (1 + 1e-12)


@FEW
@given(kind=st.sampled_from(tc.KINDS), K=st.integers(1, 8), frac=st.floats(0.05, 1.0),
       power=st.floats(0.5, 1.0), seed=st.integers(0, 2**16))
@example(kind="logistic", K=8, frac=1.0, power=0.5, seed=0)
def test_full_batch_diminishing_step_bound(kind: str, K: int, frac: float, power: float,
                                           seed: int) -> None:
    """γ_t = γ₀/(1+t)^p: Σγ_t‖∇_A f(w^t)‖²/Γ_T ≤ 2(f(w⁰)−f*)/Γ_T + L·M_K(σ)·Σγ_t²/Γ_T."""
    p = tc.make_problem(kind, tc.split_blocks(2 * K, K), n=16, seed=seed)
    g0 = frac / p.L
    N = 6 * K + 10
    traj = tc.run_ddg(p, lambda t: g0 / (1 + t) ** power, N)
    sig = tc.step_sigma(traj)
    assert sig == pytest.approx(K**power if K > 1 else 1.0)  # γ_{t−K+1}/γ_t peaks at t = K−1
    mk = theory.m_k_full_batch(K, tc.observed_m(traj), sigma=sig)
    gsq = tc.active_grad_sq(traj)
    ch = tc.descent_chain(traj)
    const = np.array([theory.descent_bound(g, p.L, mk, q) for g, q in zip(traj.steps, gsq, strict=True)])
    assert np.all(ch.change <= const + tol(ch.change, const))
    observed = float(np.sum(traj.steps * gsq) / traj.steps.sum())
    bound = theory.diminishing_step_bound(traj.steps, p.L, mk, p.value(traj.W[0]) - p.f_star)
    note(f"diminishing bound {bound:.4g} observed {observed:.4g}")
    assert observed <= bound * (1 + 1e-12)


@FEW
@given(kind=st.sampled_from(tc.KINDS), K=st.integers(1, 8), frac=st.floats(0.05, 1.0),
       batch=st.integers(1, 4), seed=st.integers(0, 2**16))
@example(kind="logistic", K=4, frac=1.0, batch=1, seed=0)
@example(kind="logistic", K=3, frac=1.0, batch=1, seed=65535)  # a saturated sigmoid: G = 0 vs 3.6e-11
def test_minibatch_pathwise_inequality(kind: str, K: int, frac: float, batch: int, seed: int) -> None:
    """Mini-batches: the per-trajectory inequality of the proof before expectations,
    f(w^{t+1}) − f(w^t) ≤ Σ_k [−(γ/2)‖a_k(w^t)‖² − (γ/2)(1−Lγ)‖a_k(w^s)‖² + (γ/2)(1+1/c)‖Δ_k‖²
    + (Lγ²/2 + γc/2)‖e_k‖² − γ(1−Lγ)⟨a_k(w^s), e_k⟩], c = Lγ̂_t."""
    p = tc.make_problem(kind, tc.split_blocks(2 * K, K), n=16, seed=seed, batch_size=batch)
    traj = tc.run_ddg(p, frac / p.L, 4 * K + 8)
    # The two inequalities below are the proof's algebra: they hold for *any* applied G.
    # What makes them about DDG is G itself — the mini-batch gradient of batch s = t − d
    # at the stashed w^s — checked here along the same run.
    G = tc.applied_grads(traj)
    for k, sl in enumerate(p.slices()):
        d = K - 1 - k
        for t in range(d, traj.iterations):
            want = p.grad(traj.W[t - d], p.batch_indices(t - d))[sl]
            # torch and numpy round a saturated sigmoid differently (1 − σ ≈ 1e-11): absolute 1e-9
            np.testing.assert_allclose(G[t, sl], want, rtol=1e-10, atol=1e-9)
    ch = tc.descent_chain(traj)
    eps = tol(ch.change, ch.pathwise)
    assert np.all(ch.change <= ch.lemma + eps)
    assert np.all(ch.lemma <= ch.pathwise + eps)


@pytest.mark.parametrize("K", [1, 2, 3])
def test_expectation_bound_exactly_by_enumeration(K: int) -> None:
    """Logistic regression, 2 samples, batches of one: all 2^N batch sequences enumerated, so
    E f(w^t) and E‖∇_A f(w^t)‖² are exact. Checks the per-step and fixed-step bounds in
    expectation with the a-priori M, and that the dropped term −γ(1−Lγ)⟨∇_k f(w^s), e⟩ has
    mean exactly zero while it is not zero along the paths (γ < 1/L: at γ = 1/L the factor
    1 − Lγ makes it vanish identically, and the check could not fail)."""
    N = 3 + 2 * K
    p = tc.make_problem("logistic", tc.split_blocks(2 * K, K), n=2, seed=3, batch_size=1)
    gamma = 0.5 / p.L
    f = np.zeros(N + 1)
    gsq = np.zeros(N)
    mart = np.zeros(N)
    cross = np.zeros(N)
    largest = 0.0
    for seq in itertools.product(range(p.n), repeat=N):
        traj = tc.run_ddg(p, gamma, N, batches=[np.array([i]) for i in seq])
        f += np.array([p.value(w) for w in traj.W]) / p.n**N
        gsq += tc.active_grad_sq(traj) / p.n**N
        chain = tc.descent_chain(traj)
        mart += chain.martingale / p.n**N
        cross += chain.cross / p.n**N
        largest = max(largest, float(np.max(np.abs(chain.martingale))))
    assert largest > 1e-3  # the term is there on every path...
    np.testing.assert_allclose(mart, 0.0, atol=1e-12)  # ...and averages out exactly
    if K > 1:  # the paper's E⟨∇_k f(w^t), e_k⟩ = 0 fails once a later stage used batch s
        assert np.max(np.abs(cross)) > 1e-6
    m = p.m_stochastic()
    assert m is not None
    mk = theory.m_k(K, m)
    step = np.array([theory.descent_bound(gamma, p.L, mk, g) for g in gsq])
    assert np.all(np.diff(f) <= step + 1e-12)
    bound = theory.fixed_step_bound(gamma, p.L, mk, N, p.value(p.w0) - p.f_star)
    assert gsq.mean() <= bound


def test_k1_run_is_plain_sgd() -> None:
    """K = 1: the engine's DDG is SGD, w^{t+1} = w^t − γ_t ∇f_{x(t)}(w^t), and the chain's
    delay terms vanish (pathwise = lemma)."""
    p = tc.make_problem("logistic", (5,), n=16, seed=2, batch_size=3)
    traj = tc.run_ddg(p, lambda t: 0.9 / p.L / (1 + t), 20)
    for t in range(20):
        ref = traj.W[t] - traj.steps[t] * p.grad(traj.W[t], p.batch_indices(t))
        np.testing.assert_allclose(traj.W[t + 1], ref, rtol=1e-13, atol=1e-13)
    ch = tc.descent_chain(traj)
    np.testing.assert_allclose(ch.pathwise, ch.lemma + 0.0, atol=1e-13)


@pytest.mark.parametrize("schedule", ["ddg", "ddg-pipelined"])
def test_stale_weights_by_hand_k3_quadratic(schedule: str) -> None:
    """f(w) = Σ_k ½ λ_k w_k², one weight per stage, K = 3, full batch: stage k with delay d
    must follow w^{t+1} = w^t − γ λ w^{t−d} (t ≥ d; unchanged before). Written out by hand;
    a stage that used its live weight w^t instead (no stashing) would follow a recursion that
    differs from this one by far more than round-off — checked too, so the test can tell."""
    lam, w0, gamma, n_iter = (1.0, 0.7, 1.3), (1.0, -2.0, 0.5), 0.4, 12
    p = tc.scalar_quadratic(lam, w0)
    traj = tc.run_ddg(p, gamma, n_iter, schedule=schedule)
    for k in range(3):
        d = 2 - k
        stale = [w0[k]]
        live = [w0[k]]
        for t in range(n_iter):
            stale.append(stale[t] if t < d else stale[t] - gamma * lam[k] * stale[t - d])
            live.append(live[t] if t < d else live[t] - gamma * lam[k] * live[t])
        np.testing.assert_allclose(traj.W[:, k], stale, rtol=1e-12, atol=1e-14)
        if d > 0:
            assert np.max(np.abs(np.array(stale) - np.array(live))) > 0.05
