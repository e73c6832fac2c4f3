"""Small problems as K-stage networks run by the executor's engine, and the observed sides of
the convergence bounds of :mod:`ddgsim.theory.bounds` along the runs (imports torch).

Every problem is a finite sum ``f(w) = (1/n) Σ_i f_i(w)`` whose parameter vector ``w`` is cut
into one block per stage. The activation carries ``(x, z)`` packed in one tensor: ``x`` is the
sample's data, ``z`` a running scalar each stage adds its term to; the loss reads ``z``.

* ``lsq``: ``f_i = ½(x_i·w − y_i)²``; stage k adds ``x_{i,k}·w_k`` to the logit.
  ``L = λ_max(XᵀX/n)`` exactly; ``f*`` exact (least-squares solve).
* ``logistic``: ``f_i = log(1 + e^{z_i}) − y_i z_i``, ``z_i = x_i·w``, ``y_i ∈ {0, 1}``.
  ``L = ‖X‖₂²/(4n)`` (Hessian ``XᵀDX/n`` with ``D ≤ 1/4``), an upper bound; ``f* ≥ 0`` used as
  the lower bound. A priori ``‖∇_k f_i(w)‖ ≤ ‖x_{i,k}‖`` for every ``w``.
* ``quadratic``: ``f_i = Σ_k ½ w_kᵀA_k w_k − (b_k + ξ_{i,k})·w_k`` with ``Σ_i ξ_i = 0``;
  stage k adds its term to ``z``. ``L = max_k λ_max(A_k)`` exactly, ``f*`` exact.

Observers use closed-form numpy gradients of the *unsplit* problem at the weights the
engine recorded (``EngineResult.weights``), never the engine's own update code.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from ddgsim.execute.engine import EngineResult, run_inprocess
from ddgsim.execute.stage import OptimConfig
from ddgsim.schedule import make_schedule
from ddgsim.theory import bounds as theory

KINDS = ("lsq", "logistic", "quadratic")


@dataclass(frozen=True, kw_only=True)
class Problem:
    """A finite-sum problem cut into stages, with its constants."""

    name: str
    kind: str
    """``lsq``, ``logistic`` or ``quadratic``."""
    blocks: tuple[int, ...]
    """Parameters per stage (K = len(blocks))."""
    X: np.ndarray
    """(n, d) sample data: features, or the noise ξ of ``quadratic``."""
    y: np.ndarray
    """(n,) targets (zeros for ``quadratic``)."""
    A: np.ndarray
    """(d, d) block-diagonal curvature of ``quadratic`` (zeros otherwise)."""
    b: np.ndarray
    """(d,) linear term of ``quadratic``."""
    w0: np.ndarray
    """(d,) initial weights."""
    batch_size: int | None = None
    """Samples per batch (drawn uniformly with replacement); None = the full data set."""
    seed: int = 0
    """Seed of the batch draws."""
    L: float = field(init=False)
    """Lipschitz constant of ∇f (exact, or a rigorous upper bound for ``logistic``)."""
    f_star: float = field(init=False)
    """``inf f`` (exact, or a rigorous lower bound for ``logistic``)."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if sum(self.blocks) != self.dim or min(self.blocks) < 1:
            raise ValueError(f"blocks {self.blocks} must be positive and sum to d={self.dim}")
        object.__setattr__(self, "L", self._lipschitz())
        object.__setattr__(self, "f_star", self._f_star())

    @property
    def dim(self) -> int:
        return int(self.w0.shape[0])

    @property
    def stages(self) -> int:
        return len(self.blocks)

    @property
    def n(self) -> int:
        return int(self.X.shape[0])

    def slices(self) -> list[slice]:
        edges = np.concatenate([[0], np.cumsum(self.blocks)]).astype(int)
        return [slice(int(a), int(b)) for a, b in itertools.pairwise(edges)]

    def _lipschitz(self) -> float:
        if self.kind == "lsq":
            return float(np.linalg.eigvalsh(self.X.T @ self.X / self.n)[-1])
        if self.kind == "logistic":
            return float(np.linalg.norm(self.X, 2) ** 2 / (4 * self.n))
        return float(np.linalg.eigvalsh(self.A)[-1])

    def _f_star(self) -> float:
        if self.kind == "lsq":
            w, *_ = np.linalg.lstsq(self.X, self.y, rcond=None)
            return self.value(w)
        if self.kind == "logistic":
            return 0.0
        return self.value(np.linalg.solve(self.A, self.b))

    # -- the unsplit problem, numpy ------------------------------------------------
    def value(self, w: np.ndarray, idx: np.ndarray | None = None) -> float:
        """``f(w)``, or the mean of ``f_i`` over the samples ``idx``."""
        X = self.X if idx is None else self.X[idx]
        y = self.y if idx is None else self.y[idx]
        if self.kind == "lsq":
            return float(0.5 * np.mean((X @ w - y) ** 2))
        if self.kind == "logistic":
            z = X @ w
            return float(np.mean(np.logaddexp(0.0, z) - y * z))
        return float(0.5 * w @ self.A @ w - (self.b + X.mean(axis=0)) @ w)

    def grad(self, w: np.ndarray, idx: np.ndarray | None = None) -> np.ndarray:
        """``∇f(w)``, or the mean gradient of ``f_i`` over the samples ``idx``."""
        X = self.X if idx is None else self.X[idx]
        y = self.y if idx is None else self.y[idx]
        if self.kind == "lsq":
            return np.asarray(X.T @ (X @ w - y) / len(y))
        if self.kind == "logistic":
            return np.asarray(X.T @ (1.0 / (1.0 + np.exp(-(X @ w))) - y) / len(y))
        return np.asarray(self.A @ w - self.b - X.mean(axis=0))

    def m_full_batch(self) -> float | None:
        """A priori ``max_k sup_w ‖∇_k f(w)‖²`` where one exists (``logistic``), else None."""
        if self.kind != "logistic":
            return None
        return max(float(np.mean(np.linalg.norm(self.X[:, s], axis=1))) ** 2 for s in self.slices())

    def m_stochastic(self) -> float | None:
        """A priori ``max_k sup_w E‖∇_k f_batch(w)‖²`` (``logistic``: ``max_k mean_i ‖x_{i,k}‖²``)."""
        if self.kind != "logistic":
            return None
        return max(float(np.mean(np.linalg.norm(self.X[:, s], axis=1) ** 2)) for s in self.slices())

    def batch_indices(self, t: int) -> np.ndarray:
        """The samples of the batch entering at iteration t (a pure function of t)."""
        if self.batch_size is None:
            return np.arange(self.n)
        rng = np.random.default_rng([self.seed, t])
        return rng.integers(0, self.n, size=self.batch_size)

    # -- the split problem, torch ---------------------------------------------------
    def modules(self) -> list[nn.Module]:
        """One module per stage, parameters = that stage's block of ``w0`` (float64)."""
        out: list[nn.Module] = []
        for s in self.slices():
            w = torch.tensor(self.w0[s], dtype=torch.float64)
            if self.kind == "quadratic":
                out.append(_QuadStage(s, w, torch.tensor(self.A[s, s]), torch.tensor(self.b[s])))
            else:
                out.append(_LinearStage(s, w))
        return out

    def batch(self, idx: np.ndarray) -> tuple[Tensor, Tensor]:
        """Packed stage-0 input ``[x | z=0]`` and targets for the samples ``idx``."""
        x = torch.tensor(self.X[idx], dtype=torch.float64)
        z = torch.zeros(len(idx), 1, dtype=torch.float64)
        return torch.cat([x, z], dim=1), torch.tensor(self.y[idx], dtype=torch.float64)

    def loss_fn(self, out: Tensor, y: Tensor) -> Tensor:
        z = out[:, -1]
        if self.kind == "lsq":
            return 0.5 * torch.mean((z - y) ** 2)
        if self.kind == "logistic":
            return torch.mean(nn.functional.softplus(z) - y * z)
        return torch.mean(z)

    def torch_value(self, w: Tensor, x: Tensor, y: Tensor) -> Tensor:
        """The unsplit loss on a packed batch, for autograd (independent of the stages)."""
        data = x[:, :-1]
        if self.kind == "quadratic":
            a = torch.tensor(self.A)
            b = torch.tensor(self.b)
            return 0.5 * w @ a @ w - (b + data.mean(dim=0)) @ w
        return self.loss_fn(torch.cat([data, (data @ w)[:, None]], dim=1), y)


class _LinearStage(nn.Module):
    """Adds ``x_k·w_k`` to the running logit and passes ``(x, z)`` on."""

    def __init__(self, cols: slice, w: Tensor) -> None:
        super().__init__()
        self.cols = cols
        self.w = nn.Parameter(w.clone())

    def forward(self, h: Tensor) -> Tensor:
        x, z = h[:, :-1], h[:, -1:]
        return torch.cat([x, z + x[:, self.cols] @ self.w[:, None]], dim=1)


class _QuadStage(nn.Module):
    """Adds ``½ w_kᵀA_k w_k − (b_k + ξ_k)·w_k`` to the running objective."""

    a: Tensor
    b: Tensor

    def __init__(self, cols: slice, w: Tensor, a: Tensor, b: Tensor) -> None:
        super().__init__()
        self.cols = cols
        self.w = nn.Parameter(w.clone())
        self.register_buffer("a", a)
        self.register_buffer("b", b)

    def forward(self, h: Tensor) -> Tensor:
        x, z = h[:, :-1], h[:, -1:]
        term = 0.5 * self.w @ self.a @ self.w - (self.b + x[:, self.cols]) @ self.w
        return torch.cat([x, z + term[:, None]], dim=1)


# ---------------------------------------------------------------- problem factories


def split_blocks(dim: int, stages: int) -> tuple[int, ...]:
    """Cut ``dim`` parameters into ``stages`` nearly equal blocks."""
    base, extra = divmod(dim, stages)
    return tuple(base + (1 if k < extra else 0) for k in range(stages))


def make_problem(kind: str, blocks: Sequence[int], *, n: int = 32, seed: int = 0,
                 batch_size: int | None = None) -> Problem:
    """A random problem of ``kind`` with the given split (deterministic in ``seed``)."""
    rng = np.random.default_rng(seed)
    dim = int(sum(blocks))
    w0 = rng.normal(size=dim)
    zeros = np.zeros((dim, dim))
    if kind == "quadratic":
        A = np.zeros((dim, dim))
        lo = 0
        for size in blocks:
            q, _ = np.linalg.qr(rng.normal(size=(size, size)))
            A[lo : lo + size, lo : lo + size] = q @ np.diag(rng.uniform(0.2, 2.0, size)) @ q.T
            lo += size
        xi = rng.normal(size=(n, dim))
        xi -= xi.mean(axis=0)
        return Problem(name=f"quadratic-d{dim}", kind=kind, blocks=tuple(blocks), X=xi,
                       y=np.zeros(n), A=A, b=rng.normal(size=dim), w0=w0,
                       batch_size=batch_size, seed=seed)
    X = rng.normal(size=(n, dim)) / np.sqrt(dim)
    w_true = rng.normal(size=dim)
    if kind == "lsq":
        y = X @ w_true + 0.3 * rng.normal(size=n)
    else:
        y = (rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-3.0 * X @ w_true))).astype(float)
    return Problem(name=f"{kind}-d{dim}-n{n}", kind=kind, blocks=tuple(blocks), X=X, y=y,
                   A=zeros, b=np.zeros(dim), w0=w0, batch_size=batch_size, seed=seed)


def scalar_quadratic(curvatures: Sequence[float], w0: Sequence[float]) -> Problem:
    """``f(w) = Σ_k ½ λ_k w_k²``, one weight per stage: stage k is the Levin–May recursion."""
    dim = len(curvatures)
    return Problem(name="scalar-quadratic", kind="quadratic", blocks=(1,) * dim,
                   X=np.zeros((1, dim)), y=np.zeros(1), A=np.diag(np.asarray(curvatures, float)),
                   b=np.zeros(dim), w0=np.asarray(w0, float))


# ---------------------------------------------------------------- running


@dataclass(frozen=True, kw_only=True)
class Trajectory:
    """A DDG run of the engine and what it recorded."""

    problem: Problem
    steps: np.ndarray
    """γ_t for t = 0..N−1."""
    W: np.ndarray
    """(N+1, d): ``W[t]`` = w^t, all stages' weights after t iterations."""
    result: EngineResult

    @property
    def iterations(self) -> int:
        return int(self.steps.shape[0])


def run_ddg(problem: Problem, steps: float | Callable[[int], float], iterations: int,
            *, schedule: str = "ddg", batches: Sequence[np.ndarray] | None = None) -> Trajectory:
    """Run ``schedule`` (DDG by default) on the engine with plain SGD, recording every update.

    ``batches[t]`` overrides the samples of batch t (default :meth:`Problem.batch_indices`).
    """
    torch.set_num_threads(1)
    sched = make_schedule(schedule, problem.stages, iterations)
    optim = OptimConfig(lr=steps)

    def batch_fn(t: int) -> tuple[Tensor, Tensor]:
        return problem.batch(problem.batch_indices(t) if batches is None else batches[t])

    result = run_inprocess(problem.modules(), sched, batch_fn, problem.loss_fn, optim, record=True)
    W = np.stack([torch.cat(list(row)).double().numpy() for row in result.weights])
    gam = np.array([optim.lr_at(t) for t in range(iterations)])
    return Trajectory(problem=problem, steps=gam, W=W, result=result)


# ---------------------------------------------------------------- observed quantities


def applied_grads(traj: Trajectory) -> np.ndarray:
    """(N, d): ``G^t``, the gradient each stage applied at iteration t (0 while warming up)."""
    G = np.zeros((traj.iterations, traj.problem.dim))
    for s, recs in zip(traj.problem.slices(), traj.result.applied, strict=True):
        for rec in recs:
            assert rec.grad is not None
            G[rec.iteration, s] = rec.grad.double().numpy()
    return G


def active_mask(traj: Trajectory) -> np.ndarray:
    """(N, d) booleans: coordinate belongs to a stage that updates at iteration t."""
    K = traj.problem.stages
    mask = np.zeros((traj.iterations, traj.problem.dim), dtype=bool)
    for k, s in enumerate(traj.problem.slices()):
        mask[K - 1 - k :, s] = True
    return mask


def active_grad_sq(traj: Trajectory) -> np.ndarray:
    """(N,): ``‖∇_{A_t} f(w^t)‖²`` (= ``‖∇f(w^t)‖²`` once every stage updates)."""
    p = traj.problem
    grads = np.stack([p.grad(traj.W[t]) for t in range(traj.iterations)])
    return np.asarray(np.sum(np.where(active_mask(traj), grads, 0.0) ** 2, axis=1))


def step_sigma(traj: Trajectory) -> float:
    return theory.sigma(traj.steps, traj.problem.stages)


def observed_m(traj: Trajectory) -> float:
    """``max_{t,k} ‖g_k^t‖²``: the smallest M valid along this run."""
    G = applied_grads(traj)
    return max(float(np.sum(G[:, s] ** 2, axis=1).max()) for s in traj.problem.slices())


@dataclass(frozen=True, kw_only=True)
class Descent:
    """Per iteration t: the observed change of f and the right sides of the proof's chain."""

    change: np.ndarray
    """``f(w^{t+1}) − f(w^t)``."""
    lemma: np.ndarray
    """Descent lemma ``−γ⟨∇f(w^t), G^t⟩ + (Lγ²/2)‖G^t‖²`` (pathwise)."""
    pathwise: np.ndarray
    """After the split ``g = ∇_k f(w^s) + e``, polarisation and Young (pathwise, observed Δ, e);
    includes the zero-mean term ``−γ(1−Lγ)⟨∇_k f(w^s), e⟩``."""
    martingale: np.ndarray
    """That zero-mean term alone."""
    cross: np.ndarray
    """``−γ Σ_{k: d_k ≥ 1} ⟨∇_k f(w^t), e_k⟩``: the paper's chain takes its mean to be 0, but
    w^t already depends on the noise e_k of batch s (later stages applied it), so it is not."""
    delay_walk: np.ndarray
    """``pathwise`` with ``‖Δ_k‖²`` replaced by ``L² d_k Σ_j γ_j² ‖G^j‖²`` (full batch: e = 0)."""


def descent_chain(traj: Trajectory) -> Descent:
    """Evaluate every inequality of the one-step proof along ``traj`` (docs/theory.md, §2)."""
    p, W, gam = traj.problem, traj.W, traj.steps
    K, L, N = p.stages, p.L, traj.iterations
    G = applied_grads(traj)
    fvals = np.array([p.value(W[t]) for t in range(N + 1)])
    change = fvals[1:] - fvals[:-1]
    lemma = np.zeros(N)
    pathwise = np.zeros(N)
    mart = np.zeros(N)
    walk = np.zeros(N)
    cross = np.zeros(N)
    gsq = np.sum(G**2, axis=1)
    for t in range(N):
        g_t = p.grad(W[t])
        lemma[t] = -gam[t] * g_t @ G[t] + 0.5 * L * gam[t] ** 2 * gsq[t]
        hat = float(np.max(gam[max(0, t - K + 1) : t + 1]))
        c = L * hat
        for k, s in enumerate(p.slices()):
            d = K - 1 - k
            if t < d:
                continue
            a_t = g_t[s]
            a_s = p.grad(W[t - d])[s]
            e = G[t, s] - a_s
            delta = a_t - a_s
            common = (-0.5 * gam[t] * a_t @ a_t - 0.5 * gam[t] * (1 - L * gam[t]) * a_s @ a_s
                      - gam[t] * (1 - L * gam[t]) * a_s @ e)
            mart[t] += -gam[t] * (1 - L * gam[t]) * a_s @ e
            noise = 0.5 * L * gam[t] ** 2 * (e @ e)
            if d == 0:
                pathwise[t] += common + noise
                walk[t] += common + noise
                continue
            cross[t] += -gam[t] * a_t @ e
            young = 0.5 * gam[t] * c * (e @ e)
            coef = 0.5 * gam[t] * (1 + 1 / c)
            pathwise[t] += common + noise + young + coef * (delta @ delta)
            drift = d * float(np.sum(gam[t - d : t] ** 2 * gsq[t - d : t]))
            walk[t] += common + 0.5 * gam[t] * L**2 * drift
    return Descent(change=change, lemma=lemma, pathwise=pathwise, martingale=mart,
                   cross=cross, delay_walk=walk)
