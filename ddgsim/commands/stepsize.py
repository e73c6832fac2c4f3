"""``ddgsim stepsize``: the step sizes the DDG convergence analysis allows for K stages.

    python -m ddgsim stepsize --stages 4 --L 2.0 --M 1.0 --T 10000 --f0-gap 3.0 [--json]

Prints the largest step of the analysis (γ ≤ 1/L), the exact stability limit per stage on a
quadratic of curvature L (γ < 2cos(τπ/(2τ+1))/L, τ = K−1−k), and, with ``--T``, the bound on
the average squared gradient norm after T steps (docs/theory.md).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from ddgsim.commands._args import for_terminal
from ddgsim.commands._help import add_command
from ddgsim.errors import UserError
from ddgsim.theory import bounds as theory


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(subparsers, "stepsize", help="step sizes the convergence analysis allows for K stages",
        description="Largest step of the DDG analysis, the per-stage stability limit on a "
                    "quadratic, and the bound on the average squared gradient norm.")
    p.add_argument("--stages", "-K", type=int, required=True, metavar="K", help="number of stages K ≥ 1")
    p.add_argument("--L", type=float, default=1.0, metavar="VALUE",
                   help="Lipschitz constant of the gradient (default 1: steps in units of 1/L)")
    p.add_argument("--M", type=float, default=1.0, metavar="VALUE",
                   help="bound on E‖∇_k f_x(w)‖² per stage (default 1)")
    p.add_argument("--T", type=int, default=None, metavar="STEPS",
                   help="iterations: also print the bound on the average E‖∇f‖² after T steps")
    p.add_argument("--f0-gap", type=float, default=1.0, metavar="VALUE",
                   help="f(w⁰) − f* for the bound (default 1)")
    p.add_argument("--full-batch", action="store_true",
                   help="exact gradients: use M_K = K·M·S_K instead of the stochastic constant")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=run)


def validate(stages: int, lipschitz: float, m: float, steps: int | None, f0_gap: float) -> None:
    """UserError naming the first bad value."""
    if stages < 1:
        raise UserError(f"--stages must be ≥ 1, got {stages}")
    if not (lipschitz > 0 and math.isfinite(lipschitz)):
        raise UserError(f"--L must be a finite number > 0, got {lipschitz}")
    if not (m >= 0 and math.isfinite(m)):
        raise UserError(f"--M must be a finite number ≥ 0, got {m}")
    if steps is not None and steps <= 0:
        raise UserError(f"--T must be > 0, got {steps}")
    if not (f0_gap >= 0 and math.isfinite(f0_gap)):
        raise UserError(f"--f0-gap must be a finite number ≥ 0, got {f0_gap}")


def stage_step_limits(stages: int, lipschitz: float) -> list[float]:
    """Largest stable step of each stage on a quadratic of curvature L (see :mod:`ddgsim.theory.bounds`)."""
    validate(stages, lipschitz, 0.0, None, 0.0)
    return theory.stage_step_limits(stages, lipschitz)


def advise(stages: int, lipschitz: float, m: float, steps: int | None = None,
           f0_gap: float = 1.0, full_batch: bool = False) -> dict[str, Any]:
    """Everything the command prints, as a JSON-ready dict."""
    validate(stages, lipschitz, m, steps, f0_gap)
    mk = theory.m_k_full_batch(stages, m) if full_batch else theory.m_k(stages, m)
    gmax = theory.max_step(lipschitz)
    limits = theory.stage_step_limits(stages, lipschitz)
    out: dict[str, Any] = {
        "stages": stages, "L": lipschitz, "M": m, "gradients": "full-batch" if full_batch else "stochastic",
        "max_step": gmax,
        "stable_step": min(gmax, min(limits)),
        "M_K": mk,
        "M_K_paper": theory.m_k_paper(stages, m),
        "per_stage": [
            {"stage": k, "staleness": stages - 1 - k, "levin_may": theory.levin_may_limit(stages - 1 - k),
             "step_limit": lim}
            for k, lim in enumerate(limits)
        ],
    }
    if steps is not None:
        best = theory.best_fixed_step(lipschitz, mk, steps, f0_gap)
        out["T"] = steps
        out["f0_gap"] = f0_gap
        out["bound_at_max_step"] = theory.fixed_step_bound(gmax, lipschitz, mk, steps, f0_gap)
        out["best_step"] = best
        out["bound_at_best_step"] = theory.fixed_step_bound(best, lipschitz, mk, steps, f0_gap)
    return out


def render(adv: dict[str, Any]) -> str:
    """Plain-text report of :func:`advise`."""
    lines = [
        f"DDG with K={adv['stages']} stages, L={adv['L']:g}, M={adv['M']:g} ({adv['gradients']} gradients)",
        f"  largest step the analysis allows   γ ≤ 1/L = {adv['max_step']:.6g}",
        f"  largest step stable on a quadratic γ < {adv['stable_step']:.6g}  (min of 1/L and the stalest stage's limit)",
        f"  M_K = {adv['M_K']:.6g}   (paper's restated K·M + K⁴·M = {adv['M_K_paper']:.6g})",
        "  stage  staleness  2cos(τπ/(2τ+1))  step limit on a quadratic",
    ]
    for row in adv["per_stage"]:
        lines.append(f"  {row['stage']:>5}  {row['staleness']:>9}  {row['levin_may']:>15.6f}  "
                     f"{row['step_limit']:.6g}")
    if "T" in adv:
        lines += [
            f"  after T={adv['T']} steps, f(w⁰)−f* = {adv['f0_gap']:g}: (1/T) Σ E‖∇f(w^t)‖² ≤",
            f"    {adv['bound_at_max_step']:.6g} at γ = 1/L",
            f"    {adv['bound_at_best_step']:.6g} at γ = {adv['best_step']:.6g} (the bound's best fixed step)",
        ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    adv = advise(args.stages, args.L, args.M, args.T, args.f0_gap, args.full_batch)
    if args.json:
        print(json.dumps(adv, indent=2))
    else:
        print("\n".join(for_terminal(line, sys.stdout) for line in render(adv).splitlines()))
    return 0
