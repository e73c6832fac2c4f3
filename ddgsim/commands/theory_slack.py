"""``ddgsim theory-slack``: measured slack of each convergence bound over K stages (CSV).

    python -m ddgsim theory-slack --out slack.csv --K-max 8

For K = 1..K-max, runs DDG on the executor's engine on fixed problems (16 parameters cut
into K blocks, 32 samples) and writes one row per (K, bound, problem) with the bound, the
observed value and their ratio ``bound/observed`` (``inf`` when the observed side is ≤ 0).
Bounds (docs/theory.md): ``descent_step`` max_t of f(w^{t+1})−f(w^t)+(γ/2)‖∇_A f(w^t)‖² vs
(Lγ²/2)M_K; ``fixed_step_avg`` and ``diminishing_avg`` (γ_t = γ₀/√(1+t)) on full-batch runs
with the trajectory's M; ``fixed_step_avg_paper_mk`` the same run against the restated
constant K·M + K⁴·M; ``expected_fixed_step_avg`` (and ``…_paper_mk``) a mini-batch run (logistic, a-priori M),
observed = mean over seeds (an estimate of the expectation). The step is 0.9× the largest
step that is both ≤ 1/L and stable on a quadratic of curvature L.
"""

from __future__ import annotations

import argparse
import csv
import math
from dataclasses import replace
from pathlib import Path

from ddgsim.commands._help import add_command
from ddgsim.errors import UserError

COLUMNS = ("K", "bound", "problem", "bound_value", "observed_value", "slack_ratio")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(subparsers, "theory-slack", help="measured slack of the convergence bounds (CSV)",
                              description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--out", required=True, metavar="FILE.csv", help="CSV file to write")
    p.add_argument("--K-max", dest="k_max", type=int, default=8, metavar="K", help="largest K (default 8)")
    p.add_argument("--iterations", type=int, default=200, metavar="N", help="iterations per run (default 200)")
    p.add_argument("--seeds", type=int, default=8, metavar="R",
                   help="mini-batch runs averaged for the expectation row (default 8)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def check_args(out: Path, k_max: int, iterations: int, seeds: int) -> None:
    if k_max < 1:
        raise UserError(f"--K-max must be ≥ 1, got {k_max}")
    if iterations < 2 * k_max:
        raise UserError(f"--iterations must be ≥ 2·K-max = {2 * k_max}, got {iterations}")
    if seeds < 1:
        raise UserError(f"--seeds must be ≥ 1, got {seeds}")
    if not out.parent.is_dir():
        raise UserError(f"--out: folder '{out.parent}' does not exist")


def ratio(bound: float, observed: float, roundoff: float = 0.0) -> float:
    """``bound/observed``; ``inf`` when the observed side is ≤ 0 (or within round-off of it)."""
    return math.inf if observed <= roundoff else bound / observed


def slack_rows(K: int, iterations: int, seeds: int) -> list[dict[str, object]]:
    """The rows of one K (imports torch through :mod:`ddgsim.converge.theory_check`)."""
    import numpy as np

    from ddgsim.converge import theory_check as tc
    from ddgsim.theory import bounds as theory

    rows: list[dict[str, object]] = []

    def add(bound: str, problem: str, value: float, observed: float, roundoff: float = 0.0) -> None:
        rows.append({"K": K, "bound": bound, "problem": problem, "bound_value": value,
                     "observed_value": observed, "slack_ratio": ratio(value, observed, roundoff)})

    blocks = tc.split_blocks(16, K)
    for kind in tc.KINDS:
        p = tc.make_problem(kind, blocks, n=32, seed=0)
        gamma = 0.9 * min(theory.max_step(p.L), *theory.stage_step_limits(K, p.L))
        name = f"{kind}-full-batch"
        traj = tc.run_ddg(p, gamma, iterations)
        gsq = tc.active_grad_sq(traj)
        m = tc.observed_m(traj)
        mk = theory.m_k_full_batch(K, m)
        ch = tc.descent_chain(traj)
        fmax = max(abs(p.value(w)) for w in traj.W)
        add("descent_step", name, 0.5 * p.L * gamma**2 * mk, float(np.max(ch.change + 0.5 * gamma * gsq)),
            roundoff=1e-12 * (1.0 + fmax))
        gap = p.value(p.w0) - p.f_star
        add("fixed_step_avg", name, theory.fixed_step_bound(gamma, p.L, mk, iterations, gap), float(gsq.mean()))
        add("fixed_step_avg_paper_mk", name,
            theory.fixed_step_bound(gamma, p.L, theory.m_k_paper(K, m), iterations, gap), float(gsq.mean()))
        def diminishing(t: int, g0: float = gamma) -> float:
            return g0 / math.sqrt(1 + t)

        traj = tc.run_ddg(p, diminishing, iterations)
        gsq = tc.active_grad_sq(traj)
        mk = theory.m_k_full_batch(K, tc.observed_m(traj), sigma=tc.step_sigma(traj))
        add("diminishing_avg", name, theory.diminishing_step_bound(traj.steps, p.L, mk, gap),
            float(np.sum(traj.steps * gsq) / traj.steps.sum()))
    observed = []
    for seed in range(seeds):
        p = replace(tc.make_problem("logistic", blocks, n=32, seed=0, batch_size=4), seed=1000 + seed)
        gamma = 0.9 * min(theory.max_step(p.L), *theory.stage_step_limits(K, p.L))
        observed.append(float(tc.active_grad_sq(tc.run_ddg(p, gamma, iterations)).mean()))
    m_sto = p.m_stochastic()
    assert m_sto is not None
    gap = p.value(p.w0) - p.f_star
    for bound, mk in (("expected_fixed_step_avg", theory.m_k(K, m_sto)),
                      ("expected_fixed_step_avg_paper_mk", theory.m_k_paper(K, m_sto))):
        add(bound, "logistic-batch4", theory.fixed_step_bound(gamma, p.L, mk, iterations, gap),
            float(np.mean(observed)))
    return rows


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    check_args(out, args.k_max, args.iterations, args.seeds)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    rows: list[dict[str, object]] = []
    with Progress(TextColumn("theory-slack"), BarColumn(), MofNCompleteColumn(), TextColumn("K values"),
                  TimeElapsedColumn(), transient=True, disable=args.no_progress) as bar:
        task = bar.add_task("K", total=args.k_max)
        for K in range(1, args.k_max + 1):
            rows += slack_rows(K, args.iterations, args.seeds)
            bar.advance(task)
    from ddgsim.fileio import atomic_open

    with atomic_open(out, newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    print(f"wrote {len(rows)} rows to {out}")
    return 0
