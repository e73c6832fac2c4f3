"""Convergence constants and bounds of DDG (Huo et al., ICML 2018), re-derived.

The derivation is written out in ``docs/theory.md``; the key steps are repeated in the
docstrings here. Code stages are 0-based: stage ``k`` of ``K`` applies, at iteration ``t``,
the gradient of the batch that entered at ``s = t - d_k``, evaluated at ``w^s``, with delay
``d_k = K - 1 - k``. Stage ``k`` does not update while ``t < d_k`` (warm-up).

Assumptions (A1) ``f`` bounded below by ``f*``; (A2) ``∇f`` is L-Lipschitz; (A3) for every
stage ``E‖∇_k f_ξ(w)‖² ≤ M`` (second moment) and ``E‖∇_k f_ξ(w) − ∇_k f(w)‖² ≤ V ≤ M``
(variance) at every point the run visits. Every step satisfies ``γ_t ≤ 1/L``.

The results, for ``A_t = {k : t ≥ d_k}`` the stages that update at iteration ``t`` (all of
them once ``t ≥ K − 1``):

* descent:  ``E f(w^{t+1}) − E f(w^t) ≤ −(γ_t/2) E‖∇_{A_t} f(w^t)‖² + (L γ_t²/2) M_K``
* fixed step:  ``(1/T) Σ_{t<T} E‖∇_{A_t} f(w^t)‖² ≤ 2 (f(w⁰) − f*)/(γT) + γ L M_K``
* any steps:  ``Σ γ_t E‖∇_{A_t} f(w^t)‖² / Γ_T ≤ 2 (f(w⁰) − f*)/Γ_T + L M_K Σ γ_t² / Γ_T``

with ``M_K = (1 + (1+σ)(K−1)) V + 2σ K M S_K`` (stochastic, :func:`m_k`) or
``M_K = σ K M S_K`` (full-batch gradients, :func:`m_k_full_batch`), where
``S_K = Σ_k d_k² = (K−1)K(2K−1)/6``. K = 1 gives ``M_1 = V`` (plain SGD) and ``0`` (plain GD).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

StepSizes = Sequence[float] | np.ndarray | Callable[[int], float]


def delays(stages: int) -> list[int]:
    """Staleness ``d_k = K − 1 − k`` of each 0-based stage under DDG."""
    _check_stages(stages)
    return [stages - 1 - k for k in range(stages)]


def sum_sq_delays(stages: int) -> int:
    """``S_K = Σ_k d_k² = (K−1)K(2K−1)/6``: how far, in squared steps, stale weights lag."""
    _check_stages(stages)
    return (stages - 1) * stages * (2 * stages - 1) // 6


def sigma(steps: StepSizes, stages: int, iterations: int | None = None) -> float:
    """Step-size ratio ``σ = max_t max_{max(0,t−K+1) ≤ j ≤ t} γ_j / γ_t`` (≥ 1).

    The paper defines ``σ = max_t γ_{max(0,t−K+1)}/γ_t``; both agree for non-increasing steps.
    A constant step gives 1. ``steps`` is a list or a function of ``t`` (then give
    ``iterations``).
    """
    gam = _steps_array(steps, iterations)
    out = 1.0
    for t in range(len(gam)):
        lo = max(0, t - stages + 1)
        out = max(out, float(np.max(gam[lo : t + 1]) / gam[t]))
    return out


def m_k(stages: int, m: float, *, sigma: float = 1.0, variance: float | None = None) -> float:
    """``M_K = (1 + (1+σ)(K−1))·V + 2σ·K·M·S_K`` — stochastic gradients, in expectation.

    ``V`` (the variance bound) defaults to ``M``. The first term is the gradient noise: the
    undelayed last stage pays ``V`` as in SGD, each delayed stage ``(1+σ)V`` because its
    noise is correlated with the weights it is applied to (Young's inequality with weight
    ``L·γ̂_t``, ``γ̂_t`` the largest step in the delay window). The second term is the delay:
    ``‖w^t − w^{t−d}‖² ≤ d Σ_{j=t−d}^{t−1} γ_j² ‖G^j‖²`` with ``E‖G^j‖² ≤ K·M``.
    """
    _check_stages(stages)
    v = m if variance is None else variance
    _check_nonneg(m=m, variance=v)
    return (1 + (1 + sigma) * (stages - 1)) * v + 2 * sigma * stages * m * sum_sq_delays(stages)


def m_k_full_batch(stages: int, m: float, *, sigma: float = 1.0) -> float:
    """``M_K = σ·K·M·S_K`` — exact (full-batch) gradients; holds along every trajectory.

    ``M`` bounds ``‖∇_k f(w)‖²`` at the points visited. No noise term and no Young step:
    the delay enters only through ``(γ_t/2)‖∇_k f(w^t) − ∇_k f(w^s)‖²``. K = 1 gives 0.
    """
    _check_stages(stages)
    _check_nonneg(m=m)
    return sigma * stages * m * sum_sq_delays(stages)


def m_k_paper(stages: int, m: float, *, sigma: float = 1.0) -> float:
    """The restated constant ``K·M + σ·K⁴·M`` (shown for comparison; not what we prove)."""
    return stages * m + sigma * stages**4 * m


def max_step(lipschitz: float) -> float:
    """Largest step the analysis allows: ``γ ≤ 1/L`` (used in the descent and delay steps)."""
    _check_positive(L=lipschitz)
    return 1.0 / lipschitz


def descent_bound(step: float, lipschitz: float, mk: float, grad_sq: float) -> float:
    """Right side of the one-step bound: ``−(γ/2)‖∇_A f(w^t)‖² + (Lγ²/2)·M_K``."""
    return -0.5 * step * grad_sq + 0.5 * lipschitz * step * step * mk


def fixed_step_bound(step: float, lipschitz: float, mk: float, steps: int, f0_gap: float) -> float:
    """``2(f(w⁰) − f*)/(γT) + γ·L·M_K``: bound on ``(1/T) Σ_{t<T} E‖∇_A f(w^t)‖²``."""
    _check_positive(T=steps, gamma=step)
    return 2.0 * f0_gap / (step * steps) + step * lipschitz * mk


def diminishing_step_bound(steps: StepSizes, lipschitz: float, mk: float, f0_gap: float,
                           iterations: int | None = None) -> float:
    """``2(f(w⁰) − f*)/Γ_T + L·M_K·Σγ_t²/Γ_T``, ``Γ_T = Σ_{t<T} γ_t``.

    Bounds the weighted average ``Σ γ_t E‖∇_A f(w^t)‖² / Γ_T``; ``M_K`` must use the σ of
    these steps. It tends to 0 when ``Σγ_t = ∞`` and ``Σγ_t² < ∞``.
    """
    gam = _steps_array(steps, iterations)
    total = float(gam.sum())
    return 2.0 * f0_gap / total + lipschitz * mk * float((gam**2).sum()) / total


def best_fixed_step(lipschitz: float, mk: float, steps: int, f0_gap: float) -> float:
    """Step minimising :func:`fixed_step_bound`: ``min(1/L, sqrt(2(f(w⁰)−f*)/(T·L·M_K)))``."""
    cap = max_step(lipschitz)
    if mk <= 0 or f0_gap <= 0:
        return cap
    return min(cap, math.sqrt(2.0 * f0_gap / (steps * lipschitz * mk)))


def stability_ratio(delay: int) -> float:
    """A stage's stability limit over BP's: ``levin_may_limit(τ) / levin_may_limit(0)`` =
    cos(τπ/(2τ+1)) (1 at τ = 0, ½ at τ = 1, 0.31 at τ = 2). The compensation that scales a
    stage's rate by its delay, and the pilots' rate sweep, both take it from here."""
    return levin_may_limit(delay) / levin_may_limit(0)


def levin_may_limit(delay: int) -> float:
    """``2cos(τπ/(2τ+1))``: ``x_{t+1} = x_t − a·x_{t−τ}`` is stable iff ``0 < a <`` this.

    Levin & May (1976), "A note on difference-delay equations", Theor. Popul. Biol. 9.
    τ = 0 gives 2 (gradient descent on a quadratic: γλ < 2); the limit falls like π/(2τ).
    """
    if delay < 0:
        raise ValueError(f"delay must be ≥ 0, got {delay}")
    return 2.0 * math.cos(delay * math.pi / (2 * delay + 1))


def spectral_radius(a: float, delay: int) -> float:
    """Spectral radius of the companion matrix of ``x_{t+1} = x_t − a·x_{t−τ}``.

    State ``(x_t, …, x_{t−τ})``; characteristic polynomial ``z^{τ+1} − z^τ + a``.
    """
    size = delay + 1
    comp = np.zeros((size, size))
    comp[0, 0] = 1.0
    comp[0, delay] -= a
    for i in range(1, size):
        comp[i, i - 1] = 1.0
    return float(np.max(np.abs(np.linalg.eigvals(comp))))


def stage_step_limits(stages: int, lipschitz: float) -> list[float]:
    """Per stage, the largest stable step on a quadratic of curvature L: ``2cos(τπ/(2τ+1))/L``.

    ``τ = K − 1 − k``. Exact for a block-diagonal quadratic (stage k is then the Levin–May
    recursion with ``a = γλ``); on general problems it is a necessary condition only.
    """
    _check_positive(L=lipschitz)
    return [levin_may_limit(d) / lipschitz for d in delays(stages)]


def _steps_array(steps: StepSizes, iterations: int | None) -> np.ndarray:
    if callable(steps):
        if iterations is None:
            raise ValueError("iterations is required when steps is a function")
        gam = np.array([float(steps(t)) for t in range(iterations)])
    else:
        gam = np.asarray(steps, dtype=float)
        if iterations is not None:
            gam = gam[:iterations]
    if gam.size == 0 or np.any(gam <= 0):
        raise ValueError("step sizes must be a non-empty sequence of positive numbers")
    return gam


def _check_stages(stages: int) -> None:
    if stages < 1:
        raise ValueError(f"number of stages must be ≥ 1, got {stages}")


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")


def _check_nonneg(**values: float) -> None:
    for name, value in values.items():
        if not value >= 0:
            raise ValueError(f"{name} must be ≥ 0, got {value}")
