"""How close the predictions were: errors, speedups over K = 1, the ranking and each run's verdict."""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ddgsim.compare.rows import (
    CONTENTION,
    MACHINE_SPEED,
    MEMORY_FLOOR_MIB,
    MODEL_ERROR,
    SESSION_SPEED,
    WITHIN_NOISE,
    WITHIN_TOLERANCE,
    Row,
    run_label,
    scaled_error_pct,
)
from ddgsim.errors import UserError


@dataclass(frozen=True, kw_only=True)
class Summary:
    """How close the predictions were over all runs."""

    runs: int
    median_abs_error_pct: float
    worst_abs_error_pct: float
    kendall_tau: float
    """Kendall τ between predicted and measured times (1: same order)."""
    kendall_p: float
    discordant: list[tuple[str, str]] = field(default_factory=list)
    """Pairs ordered differently although their predictions differ by more than ``tol_pct``."""
    tol_pct: float = 5.0
    failed: list[str] = field(default_factory=list)
    """The runs that failed, each ``K=2 ddg [6] (reason)``; not in ``runs`` nor in the statistics."""
    median_spread_pct: float = math.nan
    """Median over runs of (max − min)/median of their repeats, in %."""
    worst_spread_pct: float = math.nan
    repeats: int = 1
    """The runs' usual number of repeats (the one-process run has one more: it also closes the last round)."""
    speed_matched_median_pct: float = math.nan
    """Median |error| once each prediction is scaled by the K = 1 run of the same moment
    (measured / predicted): the pipeline model's error with the machine's speed of the
    moment factored out (:func:`speed_matched_errors`). NaN without a K = 1 run to pair with."""
    speed_matched_worst_pct: float = math.nan
    memory_median_pct: float = math.nan
    """Median over stages of every measured run of |predicted − measured| / measured peak memory, in %
    (the stages of :data:`ddgsim.compare.rows.MEMORY_FLOOR_MIB` or more)."""
    memory_worst_pct: float = math.nan
    memory_stages: int = 0
    memory_small_stages: int = 0
    """Stages under the floor, predicted and measured: compared in MiB."""
    memory_small_worst_mib: float = math.nan
    verdicts: dict[str, list[str]] = field(default_factory=dict)
    """Per :meth:`Row.verdict`, the runs (``label: error, noise``) it applies to."""
    speedup_median_pct: float = math.nan
    """Median over runs of |predicted − measured speedup over K = 1| / measured, each measured
    against the K = 1 run of the same moment (:func:`speedups`); NaN without a K = 1 run to pair with."""
    speedup_worst_pct: float = math.nan
    speedup_runs: int = 0
    compute_matched_median_pct: float = math.nan
    """Median over runs of |:attr:`Row.compute_matched_error_pct`|: the error with each execution's own
    compute speed, the pipeline model's share of it; NaN where no run timed its actions."""
    compute_matched_worst_pct: float = math.nan
    compute_matched_runs: int = 0
    session_median_pct: float = math.nan
    """Median over runs of |:attr:`Row.session_error_pct`|: the errors once predicted at the machine's
    speed over the session (the speed probe's median); NaN where not probed."""
    session_worst_pct: float = math.nan
    session_runs: int = 0
    session_factor: float = math.nan
    """:attr:`Row.session_factor` of the runs (one per validation)."""
    compute_ratios: tuple[float, ...] = ()
    """Every execution's :attr:`Row.compute_ratio_all`: how fast the machine computed, run by run,
    against the profile."""

    @property
    def ranking_preserved(self) -> bool:
        return not self.discordant

    def to_json(self) -> dict[str, Any]:
        """The figures ``summary.json`` holds, under its names."""
        return {
            "runs": self.runs, "median_abs_error_pct": self.median_abs_error_pct,
            "worst_abs_error_pct": self.worst_abs_error_pct, "kendall_tau": self.kendall_tau,
            "kendall_p": self.kendall_p, "ranking_preserved": self.ranking_preserved,
            "discordant": self.discordant, "tolerance_pct": self.tol_pct,
            "runs_failed": len(self.failed), "failed": self.failed, "repeats": self.repeats,
            "median_spread_pct": self.median_spread_pct, "worst_spread_pct": self.worst_spread_pct,
            "speed_matched_median_pct": self.speed_matched_median_pct,
            "speed_matched_worst_pct": self.speed_matched_worst_pct,
            "speedup_median_abs_error_pct": self.speedup_median_pct,
            "speedup_worst_abs_error_pct": self.speedup_worst_pct, "speedup_runs": self.speedup_runs,
            "verdicts": self.verdicts,
            "compute_matched_median_abs_error_pct": self.compute_matched_median_pct,
            "compute_matched_worst_abs_error_pct": self.compute_matched_worst_pct,
            "compute_matched_runs": self.compute_matched_runs,
            "session_factor": _or_none(self.session_factor),
            "session_median_abs_error_pct": _or_none(self.session_median_pct),
            "session_worst_abs_error_pct": _or_none(self.session_worst_pct), "session_runs": self.session_runs,
            "compute_ratio_median": float(statistics.median(self.compute_ratios)) if self.compute_ratios else math.nan,
            "compute_ratio_min": min(self.compute_ratios, default=math.nan),
            "compute_ratio_max": max(self.compute_ratios, default=math.nan),
            "memory_median_abs_error_pct": self.memory_median_pct, "memory_worst_abs_error_pct": self.memory_worst_pct,
            "memory_stages": self.memory_stages, "memory_small_stages": self.memory_small_stages,
            "memory_small_worst_abs_error_mib": self.memory_small_worst_mib}

    def _verdict_lines(self) -> list[str]:
        if not self.verdicts:
            return []
        n = {k: len(self.verdicts.get(k, []))
             for k in (WITHIN_TOLERANCE, WITHIN_NOISE, SESSION_SPEED, MACHINE_SPEED, CONTENTION, MODEL_ERROR)}
        session = (f" {n[SESSION_SPEED]} within {self.tol_pct:g}% or their noise at the machine's speed over the "
                   "session (the speed probe's median),"
                   if self.session_runs else "")
        machine = (f" {n[MACHINE_SPEED]} within {self.tol_pct:g}% at their own compute speed (the machine's speed "
                   f"of the moment), {n[CONTENTION]} within it at their own compute speed but not at the one-process "
                   "run's of the same moment (contention: the processes slowed each other beyond the model),"
                   if self.compute_matched_runs else "")
        out = [f"against each run's noise (half the spread of its repeats): {n[WITHIN_TOLERANCE]} within "
               f"{self.tol_pct:g}%, {n[WITHIN_NOISE]} inside their noise,{session}{machine} {n[MODEL_ERROR]} model error"]
        out += [f"  model error: {x}" for x in self.verdicts.get(MODEL_ERROR, [])]
        out += [f"  contention: {x}" for x in self.verdicts.get(CONTENTION, [])]
        out += [f"  the machine's speed: {x}" for x in self.verdicts.get(MACHINE_SPEED, [])]
        out += [f"  inside its noise: {x}" for x in self.verdicts.get(WITHIN_NOISE, [])]
        out += [f"  the machine's speed over the session: {x}" for x in self.verdicts.get(SESSION_SPEED, [])]
        return out

    def _memory_line(self) -> str:
        """``peak memory per stage, predicted vs measured (19 stages of 1 MiB or more): median |error| 1.2%,
        worst 6.0%; 2 stages under 1 MiB, within 0.16 MiB``."""
        floor = f"{MEMORY_FLOOR_MIB:g} MiB"
        line = "peak memory per stage, predicted vs measured"
        if self.memory_stages:
            n = self.memory_stages
            line += (f" ({n} stage{'s' if n != 1 else ''} of {floor} or more): median |error| "
                     f"{_pct(self.memory_median_pct)}, worst {_pct(self.memory_worst_pct)}")
        if self.memory_small_stages:
            n = self.memory_small_stages
            line += (f"{';' if self.memory_stages else ':'} {n} stage{'s' if n != 1 else ''} under {floor}, "
                     f"within {self.memory_small_worst_mib:.2f} MiB")
        return line

    def lines(self) -> list[str]:
        rank = "yes" if self.ranking_preserved else f"no ({len(self.discordant)} discordant pair(s))"
        if not self.runs:
            rank = "n/a (no run measured)"
        failed = f", {len(self.failed)} failed (not counted below)" if self.failed else ""
        return [
            f"runs: {self.runs}{failed}",
            *[f"  failed: {f}" for f in self.failed],
            f"repeats per run: {self.repeats} (interleaved); spread between repeats (max-min)/median: "
            f"median {_pct(self.median_spread_pct)}, largest {_pct(self.worst_spread_pct)}",
            f"median absolute error: {_pct(self.median_abs_error_pct)}",
            f"worst absolute error: {_pct(self.worst_abs_error_pct)}",
            *([f"at the machine's speed over the session ({self.session_factor:.3f}x the profile's, by the speed "
               f"probe between executions): median |error| {_pct(self.session_median_pct)}, worst "
               f"{_pct(self.session_worst_pct)} ({self.session_runs} runs)"] if self.session_runs else []),
            *self._verdict_lines(),
            *([f"speedup over K=1, predicted vs measured against the K=1 run of the same moment "
               f"(the machine's drift cancels): median |error| {_pct(self.speedup_median_pct)}, worst {_pct(self.speedup_worst_pct)} "
               f"({self.speedup_runs} runs)"] if self.speedup_runs else []),
            *([f"with each execution's own compute speed (its stages' measured compute against the predicted: "
               f"median {statistics.median(self.compute_ratios):.2f}x, {min(self.compute_ratios):.2f}-"
               f"{max(self.compute_ratios):.2f}x): median |error| {_pct(self.compute_matched_median_pct)}, worst "
               f"{_pct(self.compute_matched_worst_pct)} ({self.compute_matched_runs} runs; what is left is the "
               f"pipeline model's)"] if self.compute_matched_runs else []),
            f"Kendall tau (predicted vs measured): {self.kendall_tau:.3f} (p = {self.kendall_p:.3g})",
            *([self._memory_line()] if self.memory_stages or self.memory_small_stages else []),
            f"ranking preserved (pairs whose predictions differ by > {self.tol_pct:g}%): {rank}",
            *[f"  measured order differs: {a} vs {b}" for a, b in self.discordant],
        ]


def _or_none(x: float) -> float | None:
    """A figure for JSON: NaN (not measured) is null."""
    return None if math.isnan(x) else x


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.1f}%"


def _with_base(rows: Sequence[Row]) -> list[tuple[int, Row, list[float]]]:
    """(row index, its one-process run, that run's time at the moment of each of the row's repeats)
    for every measured row of K ≥ 2 whose group (model, batch, scenario) has exactly one one-process
    run (:func:`reference_ms`)."""
    out: list[tuple[int, Row, list[float]]] = []
    groups: dict[tuple[str, int, str], list[int]] = {}
    for i, r in enumerate(rows):
        if r.ok and r.measured_all_ms:
            groups.setdefault((r.model, r.batch_size, r.scenario), []).append(i)
    for idx in groups.values():
        base = [i for i in idx if rows[i].K == 1 and rows[i].replicas == 1]
        if len(base) != 1:
            continue
        ref = rows[base[0]]
        for i in idx:
            at = reference_ms(ref, rows[i]) if i != base[0] else None
            if at is not None:
                out.append((i, ref, at))
    return out


def reference_ms(ref: Row, r: Row) -> list[float] | None:
    """Per repeat of ``r``: the one-process run ``ref``'s time at that moment.

    With the moment of every execution recorded (:attr:`Row.measured_at_s`), the one-process
    run's measurements — one opens every round, one more closes the last — are interpolated
    linearly in time to the middle of each of ``r``'s executions: a machine that drifts inside a
    round moves the reference with it. Without them (files written before), repeat j of ``r``
    takes repeat j of ``ref``, the run that opened its round; ``None`` when the two do not pair up.
    """
    if _timed(ref) and _timed(r):
        import numpy as np

        return [float(x) for x in np.interp(r.measured_at_s, ref.measured_at_s, ref.measured_all_ms)]
    if len(r.measured_all_ms) == len(ref.measured_all_ms):
        return list(ref.measured_all_ms)
    return None


def _timed(r: Row) -> bool:
    return bool(r.measured_at_s) and len(r.measured_at_s) == len(r.measured_all_ms)


def speed_matched_errors(rows: Sequence[Row]) -> dict[int, float]:
    """Per row (by index, all but the one-process run): the error once the machine's speed drift is factored out.

    The repeats are interleaved in rounds, each opened by the one-process run (K = 1) of the
    same model and batch, and the last closed by one more. That run's measured/predicted ratio at
    the moment of an execution (:func:`reference_ms`) says how fast the machine ran then
    compared with when the profile was measured; the prediction is scaled by it and compared
    with that execution's measurement, and the row's figure is the median over its repeats.
    Rows whose group lacks one K = 1 row to pair with are left out.
    """
    out: dict[int, float] = {}
    for i, ref, at in _with_base(rows):
        out[i] = scaled_error_pct(rows[i].predicted_ms, [b / ref.predicted_ms for b in at], rows[i].measured_all_ms)
    return out


class Speedup(NamedTuple):
    """A run's speedup over the one-process run of its group."""

    predicted: float
    measured: float
    """Median over the rounds of (the one-process run's time / this run's), each round's own."""
    error_pct: float
    """Median over the rounds of 100 · (predicted − measured) / measured speedup."""
    rounds: tuple[float, ...] = ()
    """The measured speedup of every round."""


def speedups(rows: Sequence[Row]) -> dict[int, Speedup]:
    """Per row of K ≥ 2 (by index): its speedup over K = 1, predicted, and measured against the
    one-process run of the same moment (:func:`reference_ms`).

    A ratio of two runs measured minutes apart at most, the reference interpolated to the moment
    of each execution, cancels the machine's speed of the moment."""
    out: dict[int, Speedup] = {}
    for i, ref, at in _with_base(rows):
        r = rows[i]
        pred = ref.predicted_ms / r.predicted_ms
        meas = [b / m for b, m in zip(at, r.measured_all_ms, strict=True)]
        out[i] = Speedup(pred, float(statistics.median(meas)),
                         float(statistics.median(100.0 * (pred - x) / x for x in meas)), tuple(meas))
    return out


def summarize(rows: Sequence[Row], tol_pct: float = 5.0) -> Summary:
    """Errors, Kendall τ and the ranking over the measured (``ok``) rows; failed ones are listed apart."""
    from scipy.stats import kendalltau

    if not rows:
        raise UserError("no runs to summarize")
    failed = [f"{run_label(r)} ({r.error or 'no reason recorded'})" for r in rows if not r.ok]
    rows = [r for r in rows if r.ok]
    if not rows:
        return Summary(runs=0, median_abs_error_pct=math.nan, worst_abs_error_pct=math.nan, kendall_tau=math.nan,
                       kendall_p=math.nan, tol_pct=tol_pct, failed=failed)
    errs = [abs(r.error_pct) for r in rows]
    pred = [r.predicted_ms for r in rows]
    meas = [r.measured_ms for r in rows]
    if len(rows) >= 2 and len(set(pred)) > 1 and len(set(meas)) > 1:
        res = kendalltau(pred, meas)
        tau, p = float(res.statistic), float(res.pvalue)
    else:
        tau, p = math.nan, math.nan
    bad = []
    for a, b in itertools.combinations(rows, 2):
        if abs(a.predicted_ms - b.predicted_ms) <= tol_pct / 100 * min(a.predicted_ms, b.predicted_ms):
            continue
        if (a.predicted_ms - b.predicted_ms) * (a.measured_ms - b.measured_ms) < 0:
            bad.append((run_label(a), run_label(b)))
    spreads = [r.spread_pct for r in rows if not math.isnan(r.spread_pct)]
    at_moment = speed_matched_errors(rows)
    matched = [abs(e) for e in at_moment.values()]
    ups = [abs(x.error_pct) for x in speedups(rows).values()]
    verdicts: dict[str, list[str]] = {}
    for i, r in enumerate(rows):
        verdict = r.verdict(tol_pct, at_moment.get(i, math.nan))
        verdicts.setdefault(verdict, []).append(
            f"{run_label(r)} {r.label}: error {r.error_pct:+.1f}%, noise ±{r.noise_pct:.1f}%"
            + ("" if math.isnan(r.session_error_pct) else f", at the session's speed {r.session_error_pct:+.1f}%")
            + ("" if math.isnan(r.compute_matched_error_pct) else
               f", at its own compute speed {r.compute_matched_error_pct:+.1f}%")
            + (f", at the one-process run's of the same moment {at_moment[i]:+.1f}%" if verdict == CONTENTION else ""))
    mem = [abs(e) for r in rows for e in r.memory_errors_pct]
    small = [abs(e) for r in rows for e in r.small_memory_errors_mib]
    own = [abs(r.compute_matched_error_pct) for r in rows if not math.isnan(r.compute_matched_error_pct)]
    session = [abs(r.session_error_pct) for r in rows if not math.isnan(r.session_error_pct)]
    factors = [r.session_factor for r in rows if r.session_factor > 0]
    return Summary(verdicts=verdicts, speedup_runs=len(ups),
                   session_median_pct=float(statistics.median(session)) if session else math.nan,
                   session_worst_pct=max(session) if session else math.nan, session_runs=len(session),
                   session_factor=float(statistics.median(factors)) if factors else math.nan,
                   compute_matched_median_pct=float(statistics.median(own)) if own else math.nan,
                   compute_matched_worst_pct=max(own) if own else math.nan, compute_matched_runs=len(own),
                   compute_ratios=tuple(c for r in rows if not math.isnan(r.compute_matched_error_pct)
                                        for c in r.compute_ratio_all),
                   speedup_median_pct=float(statistics.median(ups)) if ups else math.nan,
                   speedup_worst_pct=max(ups) if ups else math.nan,
                   speed_matched_median_pct=float(statistics.median(matched)) if matched else math.nan,
                   speed_matched_worst_pct=max(matched) if matched else math.nan,
                   memory_median_pct=float(statistics.median(mem)) if mem else math.nan,
                   memory_worst_pct=max(mem) if mem else math.nan, memory_stages=len(mem),
                   memory_small_stages=len(small), memory_small_worst_mib=max(small, default=math.nan),
                   runs=len(rows), median_abs_error_pct=float(statistics.median(errs)),
                   worst_abs_error_pct=max(errs), kendall_tau=tau, kendall_p=p, discordant=bad, tol_pct=tol_pct,
                   failed=failed, median_spread_pct=float(statistics.median(spreads)) if spreads else math.nan,
                   worst_spread_pct=max(spreads) if spreads else math.nan,
                   repeats=statistics.median_low(r.repeats for r in rows))
