"""Predicted vs measured: run several splits on the executor and compare with the simulator.

For every K and schedule, a few splits are chosen — the planner's optimum, the
authors' even split and deliberately unbalanced ones — each is simulated
(``ddgsim.predict.event_sim``) and run for real (``ddgsim execute``: one process per stage, one
thread each), and the steady-state iteration times are compared.

*Predicted* is the simulator's steady-state period. *Measured* is, from the
executor's metrics, the median over iterations of the gap between the moments
the slowest stage finished consecutive iterations, after dropping the first
``warmup`` gaps (pipeline fill, first-touch allocations). K = 1 is the
one-process ``bp`` run.

A run whose execution fails is tried once more; if it fails again it is recorded
as ``failed`` (``status`` and ``error`` columns, measured fields empty) and the
other runs go on. The statistics and figures use the runs that were measured.
"""

from __future__ import annotations

import csv
import itertools
import math
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

from ddgsim.errors import UserError, one_line
from ddgsim.fileio import atomic_open
from ddgsim.plan.build import plan_from_prediction
from ddgsim.plan.split import even_split, imbalance_weights, weighted_split
from ddgsim.predict.event_sim import simulate
from ddgsim.predict.scenario import Scenario
from ddgsim.profile.format import Profile
from ddgsim.replicas import Layout

COLUMNS = ("model", "K", "schedule", "split", "predicted_ms", "measured_ms", "error_pct",
           "label", "batch_size", "steps", "scenario", "status", "error", "attempts",
           "micro_batches", "repeats", "measured_min_ms", "measured_max_ms", "measured_all_ms", "runtime",
           "steal_pct", "redone", "replicas", "predicted_memory_mib", "measured_memory_mib",
           "noise_pct", "speedup_predicted", "speedup_measured", "speedup_error_pct")
"""``validation.csv`` columns; the first seven are the contract, the rest context (a file without
``status``, ``error``, ``attempts`` is read as every run ``ok`` at the first attempt; one without
the repeat columns as one repeat with M = 1). The last four are derived (:attr:`Row.noise_pct`,
:func:`speedups`), written for readers of the file and recomputed when it is read."""

WITHIN_TOLERANCE = "within tolerance"
WITHIN_NOISE = "within noise"
MODEL_ERROR = "model error"

CSV_NAME = "validation.csv"
OK = "ok"
FAILED = "failed"
ATTEMPTS = 2
"""Tries per run: the first and one retry."""


class ExecutionFailed(RuntimeError):
    """The executor ran and failed (non-zero exit status); the message is the one-line reason."""


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    """One run to predict and measure."""

    stages: int
    """K (1: the one-process bp run)."""
    schedule: str
    split: tuple[int, ...]
    label: str
    """Why this split: ``planned``, ``even``, ``front x2`` (stage 0 gets twice the share) ..."""
    micro_batches: int = 1
    """M (gpipe, 1f1b); 1 for the others."""
    runtime: str = "ddgsim"
    """Who runs it: ``ddgsim`` (the executor) or ``torch`` (``torch.distributed.pipelining``)."""
    replicas: int = 1
    """D: replicas of every stage (K·D processes; D = 1 a pure pipeline)."""

    @property
    def name(self) -> str:
        cuts = "-".join(map(str, self.split)) or "all"
        micro = f"-m{self.micro_batches}" if self.micro_batches > 1 else ""
        runtime = "" if self.runtime == "ddgsim" else f"-{self.runtime}"
        reps = f"-d{self.replicas}" if self.replicas > 1 else ""
        return f"k{self.stages}{reps}-{self.schedule}{micro}{runtime}-{cuts}"

    def layout(self, scenario: Scenario) -> Layout | None:
        return replica_layout(scenario, self.stages, self.replicas)


def replica_layout(scenario: Scenario, stages: int, replicas: int) -> Layout | None:
    """The first K·D devices of ``scenario``, a stage's replicas side by side; ``None`` for D = 1."""
    if replicas == 1:
        return None
    return Layout.packed([d.name for d in scenario.devices], [replicas] * stages)


@dataclass(frozen=True, kw_only=True)
class Row:
    """One line of ``validation.csv``."""

    model: str
    K: int
    schedule: str
    split: str
    predicted_ms: float
    measured_ms: float
    error_pct: float
    """100 · (predicted − measured) / measured: > 0 when the simulator is pessimistic."""
    label: str = ""
    batch_size: int = 0
    steps: int = 0
    scenario: str = ""
    status: str = OK
    """``ok``, or ``failed``: every attempt failed, ``measured_ms`` and ``error_pct`` are NaN."""
    error: str = ""
    """Why the run failed, one line (empty when ok)."""
    attempts: int = 1
    """Executions tried, over all repeats (a failed execution is retried once)."""
    micro_batches: int = 1
    repeats: int = 1
    """Executions measured; ``measured_ms`` is their median."""
    measured_all_ms: tuple[float, ...] = ()
    """Every repeat's measurement, in the order run."""
    runtime: str = "ddgsim"
    """``ddgsim`` (the project's executor) or ``torch`` (``torch.distributed.pipelining``)."""
    steal_pct: float = math.nan
    """Most CPU time the hypervisor stole during one of the kept repeats, in % (NaN: unknown)."""
    redone: int = 0
    """Executions measured again because of stolen CPU time."""
    replicas: int = 1
    """D, replicas of every stage (1: a pure pipeline)."""
    predicted_memory_mib: tuple[float, ...] = ()
    """The simulator's peak memory per stage (per replica), MiB."""
    measured_memory_mib: tuple[float, ...] = ()
    """Measured peak memory per stage (its largest replica; median over the repeats), MiB
    (:mod:`ddgsim.execute.memwatch`); empty where the runtime does not measure it."""

    @property
    def memory_errors_pct(self) -> list[float]:
        """Per stage, 100 · (predicted − measured) / measured (empty without both)."""
        if len(self.predicted_memory_mib) != len(self.measured_memory_mib):
            return []
        return [100.0 * (p - m) / m for p, m in zip(self.predicted_memory_mib, self.measured_memory_mib, strict=True)
                if m > 0]

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def measured_min_ms(self) -> float:
        return min(self.measured_all_ms) if self.measured_all_ms else self.measured_ms

    @property
    def measured_max_ms(self) -> float:
        return max(self.measured_all_ms) if self.measured_all_ms else self.measured_ms

    @property
    def spread_pct(self) -> float:
        """(max − min) / median of the repeats, in %: how much the machine moved between them."""
        if not self.ok or not self.measured_all_ms:
            return math.nan
        return 100.0 * (self.measured_max_ms - self.measured_min_ms) / self.measured_ms

    @property
    def noise_pct(self) -> float:
        """Half the spread of the repeats, in % of their median: how far one measurement of this
        configuration strays from another (0 with one repeat; NaN when failed)."""
        return self.spread_pct / 2

    def verdict(self, tol_pct: float) -> str:
        """:data:`WITHIN_TOLERANCE` (|error| ≤ ``tol_pct``), :data:`WITHIN_NOISE` (≤ its noise) or
        :data:`MODEL_ERROR` (beyond both)."""
        err = abs(self.error_pct)
        if err <= tol_pct:
            return WITHIN_TOLERANCE
        return WITHIN_NOISE if err <= self.noise_pct else MODEL_ERROR

    @classmethod
    def from_csv(cls, rec: dict[str, str]) -> Row:
        return cls(model=rec["model"], K=int(rec["K"]), schedule=rec["schedule"], split=rec["split"],
                   predicted_ms=_float(rec["predicted_ms"]), measured_ms=_float(rec["measured_ms"]),
                   error_pct=_float(rec["error_pct"]), label=rec.get("label") or "",
                   batch_size=int(rec.get("batch_size") or 0), steps=int(rec.get("steps") or 0),
                   scenario=rec.get("scenario") or "", status=rec.get("status") or OK,
                   error=rec.get("error") or "", attempts=int(rec.get("attempts") or 1),
                   micro_batches=int(rec.get("micro_batches") or 1), repeats=int(rec.get("repeats") or 1),
                   measured_all_ms=_floats(rec.get("measured_all_ms")),
                   runtime=rec.get("runtime") or "ddgsim", steal_pct=_float(rec.get("steal_pct")),
                   redone=int(rec.get("redone") or 0), replicas=int(rec.get("replicas") or 1),
                   predicted_memory_mib=_floats(rec.get("predicted_memory_mib")),
                   measured_memory_mib=_floats(rec.get("measured_memory_mib")))


def _floats(text: str | None) -> tuple[float, ...]:
    """A CSV list of numbers joined by ``;`` (empty: none)."""
    return tuple(float(x) for x in (text or "").split(";") if x)


def _float(text: str | None) -> float:
    """A CSV number; empty (a failed run's measurement) is NaN."""
    return float(text) if text and text.strip() else math.nan


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
    """Most repeats of one run."""
    speed_matched_median_pct: float = math.nan
    """Median |error| once each round's predictions are scaled by that round's K = 1 run
    (measured / predicted): the pipeline model's error with the machine's speed of the
    moment factored out (:func:`speed_matched_errors`). NaN without a complete K = 1 run."""
    speed_matched_worst_pct: float = math.nan
    memory_median_pct: float = math.nan
    """Median over stages of every measured run of |predicted − measured| / measured peak memory, in %."""
    memory_worst_pct: float = math.nan
    memory_stages: int = 0
    verdicts: dict[str, list[str]] = field(default_factory=dict)
    """Per :meth:`Row.verdict`, the runs (``label: error, noise``) it applies to."""
    speedup_median_pct: float = math.nan
    """Median over runs of |predicted − measured speedup over K = 1| / measured, the speedups taken
    in the same round (:func:`speedups`); NaN without a complete K = 1 run."""
    speedup_worst_pct: float = math.nan
    speedup_runs: int = 0

    @property
    def ranking_preserved(self) -> bool:
        return not self.discordant

    def _verdict_lines(self) -> list[str]:
        if not self.verdicts:
            return []
        n = {k: len(self.verdicts.get(k, [])) for k in (WITHIN_TOLERANCE, WITHIN_NOISE, MODEL_ERROR)}
        out = [f"against each run's noise (half the spread of its repeats): {n[WITHIN_TOLERANCE]} within "
               f"{self.tol_pct:g}%, {n[WITHIN_NOISE]} inside their noise, {n[MODEL_ERROR]} model error"]
        out += [f"  model error: {x}" for x in self.verdicts.get(MODEL_ERROR, [])]
        out += [f"  inside its noise: {x}" for x in self.verdicts.get(WITHIN_NOISE, [])]
        return out

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
            *self._verdict_lines(),
            *([f"speedup over K=1, predicted vs measured in the same round (the machine's drift cancels): "
               f"median |error| {_pct(self.speedup_median_pct)}, worst {_pct(self.speedup_worst_pct)} "
               f"({self.speedup_runs} runs)"] if self.speedup_runs else []),
            f"Kendall tau (predicted vs measured): {self.kendall_tau:.3f} (p = {self.kendall_p:.3g})",
            *([f"peak memory per stage, predicted vs measured ({self.memory_stages} stages): median |error| "
               f"{_pct(self.memory_median_pct)}, worst {_pct(self.memory_worst_pct)}"] if self.memory_stages else []),
            f"ranking preserved (pairs whose predictions differ by > {self.tol_pct:g}%): {rank}",
            *[f"  measured order differs: {a} vs {b}" for a, b in self.discordant],
        ]


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.1f}%"


# ---------------------------------------------------------------- choosing splits

def choose_splits(profile: Profile, scenario: Scenario, schedule: str, stages: int, count: int,
                  micro_batches: int = 1, replicas: int = 1) -> list[RunSpec]:
    """``count`` distinct splits: planned, even, then unbalanced ones (labels joined on ties)."""
    from ddgsim.plan.build import plan_for_k

    if stages == 1:
        label = "one process" if replicas == 1 else f"data parallel, {replicas} processes"
        return [RunSpec(stages=1, schedule="bp", split=(), label=label, replicas=replicas)]
    found: dict[tuple[int, ...], list[str]] = {}
    layout = replica_layout(scenario, stages, replicas)
    res = plan_for_k(profile, scenario, schedule, stages, micro_batches=micro_batches, layout=layout,
                     baselines=False)
    if res.planned is not None:
        found.setdefault(tuple(res.planned.split), []).append("planned")
    found.setdefault(tuple(even_split(profile.num_units, stages)), []).append("even")
    for label, w in imbalance_weights(stages):
        if len(found) >= count:
            break
        found.setdefault(tuple(weighted_split(profile, stages, w)), []).append(label)
    return [RunSpec(stages=stages, schedule=schedule, split=s, label="=".join(labels), micro_batches=micro_batches,
                    replicas=replicas) for s, labels in list(found.items())[:count]]


# ---------------------------------------------------------------- one run

class Measured(NamedTuple):
    """What one execution measured."""

    step_ms: float
    """:func:`measured_step_ms`."""
    memory_mib: tuple[float, ...]
    """:func:`measured_memory`."""


def measured_memory(metrics: dict[str, Any]) -> tuple[float, ...]:
    """Peak memory per stage (its largest replica), MiB, from a run's metrics; empty if not measured."""
    most: dict[int, float] = {}
    for st in metrics["per_stage"]:
        b = st.get("peak_memory_bytes")
        if b is None:
            return ()
        most[st["stage"]] = max(most.get(st["stage"], 0.0), b / 2**20)
    return tuple(most[k] for k in sorted(most))


def measured_step_ms(metrics: dict[str, Any], warmup: int) -> float:
    """Median step time of a run's metrics (:func:`ddgsim.execute.measure.step_times`), first ``warmup`` dropped."""
    from ddgsim.execute.measure import step_times

    if len({it for st in metrics["per_stage"] for it in st["iterations"]}) < 2:
        raise UserError("a run needs at least 2 steps to measure an iteration time")
    gaps = step_times(metrics["per_stage"])
    kept = gaps[min(warmup, len(gaps) - 1):]
    return float(statistics.median(kept))


def execute(plan: Path, steps: int, threads: int, metrics: Path, trace: Path | None, device: str,
            log_dir: Path | None = None) -> None:
    """Run ``plan`` for real from this process (the launcher spawns one process per stage).

    Raises :class:`ExecutionFailed` when the executor fails, naming the failing stage, its first
    error line and its log (kept in ``log_dir``).
    """
    from ddgsim.execute.childlog import LaunchFailed
    from ddgsim.execute.config import RunConfig
    from ddgsim.execute.launch import launch

    try:
        code = launch(RunConfig(plan=plan, steps=steps, threads=threads, data="synthetic", evaluate=False,
                                progress=False, metrics=metrics, trace=trace,
                                backend="nccl" if device == "cuda" else "gloo"), log_dir=log_dir)
    except LaunchFailed as exc:
        raise ExecutionFailed(f"executor: {exc}") from None
    if code != 0:
        raise ExecutionFailed(f"executor exit status {code}")


# ---------------------------------------------------------------- comparing

def _with_base(rows: Sequence[Row]) -> list[tuple[int, Row]]:
    """(row index, its one-process run) for every measured row of K ≥ 2 whose group (model, batch,
    scenario) has exactly one one-process run, measured in every round as the row was."""
    out: list[tuple[int, Row]] = []
    groups: dict[tuple[str, int, str], list[int]] = {}
    for i, r in enumerate(rows):
        if r.ok and r.measured_all_ms:
            groups.setdefault((r.model, r.batch_size, r.scenario), []).append(i)
    for idx in groups.values():
        base = [i for i in idx if rows[i].K == 1 and rows[i].replicas == 1]
        if len(base) != 1:
            continue
        ref = rows[base[0]]
        out += [(i, ref) for i in idx if i != base[0] and len(rows[i].measured_all_ms) == len(ref.measured_all_ms)]
    return out


def speed_matched_errors(rows: Sequence[Row]) -> dict[int, float]:
    """Per row (by index, all but the one-process run): the error once the machine's speed drift is factored out.

    The repeats are interleaved in rounds, and each round starts with the one-process run
    (K = 1) of the same model and batch. Its measured/predicted ratio in round r says how
    fast the machine ran that round compared with when the profile was measured; every
    prediction of round r is scaled by it and compared with that round's measurement, and
    the row's figure is the median over rounds. Rows whose group lacks a K = 1 row with a
    measurement in every round (or that miss rounds themselves) are left out.
    """
    out: dict[int, float] = {}
    for i, ref in _with_base(rows):
        r = rows[i]
        factors = [m / ref.predicted_ms for m in ref.measured_all_ms]
        errs = [100.0 * (r.predicted_ms * f - m) / m for f, m in zip(factors, r.measured_all_ms, strict=True)]
        out[i] = float(statistics.median(errs))
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
    """Per row of K ≥ 2 (by index): its speedup over K = 1, predicted and measured in the same round.

    A ratio of two runs of one round, measured minutes apart at most, cancels the machine's
    speed of the moment (the same rounds as :func:`speed_matched_errors`)."""
    out: dict[int, Speedup] = {}
    for i, ref in _with_base(rows):
        r = rows[i]
        pred = ref.predicted_ms / r.predicted_ms
        meas = [b / m for b, m in zip(ref.measured_all_ms, r.measured_all_ms, strict=True)]
        out[i] = Speedup(pred, float(statistics.median(meas)),
                         float(statistics.median(100.0 * (pred - x) / x for x in meas)), tuple(meas))
    return out


def summarize(rows: Sequence[Row], tol_pct: float = 5.0) -> Summary:
    """Errors, Kendall τ and the ranking over the measured (``ok``) rows; failed ones are listed apart."""
    from scipy.stats import kendalltau

    if not rows:
        raise UserError("no runs to summarize")
    failed = [f"{_run_label(r)} ({r.error or 'no reason recorded'})" for r in rows if not r.ok]
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
            bad.append((_run_label(a), _run_label(b)))
    spreads = [r.spread_pct for r in rows if not math.isnan(r.spread_pct)]
    matched = [abs(e) for e in speed_matched_errors(rows).values()]
    ups = [abs(x.error_pct) for x in speedups(rows).values()]
    verdicts: dict[str, list[str]] = {}
    for r in rows:
        verdicts.setdefault(r.verdict(tol_pct), []).append(
            f"{_run_label(r)} {r.label}: error {r.error_pct:+.1f}%, noise ±{r.noise_pct:.1f}%")
    mem = [abs(e) for r in rows for e in r.memory_errors_pct]
    return Summary(verdicts=verdicts, speedup_runs=len(ups),
                   speedup_median_pct=float(statistics.median(ups)) if ups else math.nan,
                   speedup_worst_pct=max(ups) if ups else math.nan,
                   speed_matched_median_pct=float(statistics.median(matched)) if matched else math.nan,
                   speed_matched_worst_pct=max(matched) if matched else math.nan,
                   memory_median_pct=float(statistics.median(mem)) if mem else math.nan,
                   memory_worst_pct=max(mem) if mem else math.nan, memory_stages=len(mem),
                   runs=len(rows), median_abs_error_pct=float(statistics.median(errs)),
                   worst_abs_error_pct=max(errs), kendall_tau=tau, kendall_p=p, discordant=bad, tol_pct=tol_pct,
                   failed=failed, median_spread_pct=float(statistics.median(spreads)) if spreads else math.nan,
                   worst_spread_pct=max(spreads) if spreads else math.nan,
                   repeats=max(r.repeats for r in rows))


def _run_label(r: Row) -> str:
    micro = f" M={r.micro_batches}" if r.micro_batches > 1 else ""
    runtime = " (torch.distributed.pipelining)" if r.runtime == "torch" else ""
    reps = f"×D={r.replicas}" if r.replicas > 1 else ""
    return f"K={r.K}{reps} {r.schedule}{micro}{runtime} [{r.split or '-'}]"


def failure_line(rows: Sequence[Row]) -> str | None:
    """``2 of 10 runs failed: resnet20 ddg K=2 split [6] (executor exit status 1, twice); ...``, or None."""
    failed = [r for r in rows if not r.ok]
    if not failed:
        return None
    what = "; ".join(f"{r.model} {r.schedule} {_run_label(r).split(' ')[0]} split [{r.split or '-'}] "
                     f"({r.error or 'no reason recorded'})" for r in failed)
    return f"{len(failed)} of {len(rows)} runs failed: {what}"


def _num(x: float, spec: str) -> str:
    """A CSV number; NaN (not measured) is written empty."""
    return "" if math.isnan(x) else format(x, spec)


def write_csv(rows: Sequence[Row], path: Path) -> None:
    """The whole file, written aside and renamed: a reader never sees half of it."""
    ups = speedups(rows)
    nan = Speedup(math.nan, math.nan, math.nan)
    with atomic_open(path, newline="") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        for i, r in enumerate(rows):
            up = ups.get(i, nan)
            w.writerow([r.model, r.K, r.schedule, r.split, _num(r.predicted_ms, ".6g"), _num(r.measured_ms, ".6g"),
                        _num(r.error_pct, ".2f"), r.label, r.batch_size, r.steps, r.scenario, r.status, r.error,
                        r.attempts, r.micro_batches, r.repeats, _num(r.measured_min_ms, ".6g"),
                        _num(r.measured_max_ms, ".6g"), ";".join(format(x, ".6g") for x in r.measured_all_ms),
                        r.runtime, _num(r.steal_pct, ".2f"), r.redone, r.replicas,
                        ";".join(format(x, ".4g") for x in r.predicted_memory_mib),
                        ";".join(format(x, ".4g") for x in r.measured_memory_mib), _num(r.noise_pct, ".2f"),
                        _num(up.predicted, ".4f"), _num(up.measured, ".4f"), _num(up.error_pct, ".2f")])


def read_csv(path: str | Path) -> list[Row]:
    try:
        with Path(path).open(newline="") as fh:
            recs = list(csv.DictReader(fh))
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    missing = [c for c in COLUMNS[:7] if recs and c not in recs[0]]
    if missing:
        raise UserError(f"{path} is not a validation.csv: column '{missing[0]}' is missing")
    return [Row.from_csv(r) for r in recs]


# ---------------------------------------------------------------- figures

def scatter_figure(rows: Sequence[Row], title: str = "Predicted vs measured iteration time") -> Any:
    """Measured (``ok``) rows only."""
    import plotly.graph_objects as go

    rows = [r for r in rows if r.ok]
    fig = go.Figure()
    times = [r.predicted_ms for r in rows] + [r.measured_ms for r in rows]
    lo, hi = (min(times) * 0.9, max(times) * 1.1) if times else (0.0, 1.0)
    fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="y = x",
                             line={"color": "#888", "dash": "dash"}))
    for band, style in ((5, {"color": "#999", "width": 1}), (10, {"color": "#bbb", "width": 1, "dash": "dot"})):
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo / (1 + band / 100), hi / (1 + band / 100)], mode="lines",
                                 line=style, name=f"±{band}%", legendgroup=f"b{band}"))
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo / (1 - band / 100), hi / (1 - band / 100)], mode="lines",
                                 line=style, showlegend=False, legendgroup=f"b{band}"))
    symbols = ["circle", "square", "diamond", "triangle-up", "x", "star"]

    def group(r: Row) -> tuple[int, int, str, int, str]:
        return r.K, r.replicas, r.schedule, r.micro_batches, r.runtime

    for i, (_key, grp) in enumerate(itertools.groupby(sorted(rows, key=group), key=group)):
        g = list(grp)
        fig.add_trace(go.Scatter(
            x=[r.measured_ms for r in g], y=[r.predicted_ms for r in g], mode="markers",
            marker={"size": 11, "symbol": symbols[i % len(symbols)]}, name=_run_label(g[0]).rsplit(" [", 1)[0],
            text=[f"split [{r.split or '-'}] {r.label}<br>error {r.error_pct:+.1f}%" for r in g],
            hovertemplate="%{text}<br>measured %{x:.1f} ms<br>predicted %{y:.1f} ms<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="measured ms / iteration", yaxis_title="predicted ms / iteration",
                      height=560, width=720)
    if lo > 0 and hi / lo > 20:  # times spanning orders of magnitude (a small model beside ResNets)
        fig.update_xaxes(type="log", range=[math.log10(lo), math.log10(hi)], constrain="domain")
        fig.update_yaxes(type="log", range=[math.log10(lo), math.log10(hi)], constrain="domain")
    else:
        fig.update_xaxes(range=[lo, hi], constrain="domain")
        fig.update_yaxes(range=[lo, hi], constrain="domain")
    return fig


def error_figure(rows: Sequence[Row], title: str = "Prediction error per run") -> Any:
    """Measured (``ok``) rows only."""
    import plotly.graph_objects as go

    rows = [r for r in rows if r.ok]
    several = len({(r.model, r.batch_size) for r in rows}) > 1
    labels = [(f"{r.model} b{r.batch_size} " if several else "") + f"{_run_label(r)} {r.label}" for r in rows]
    seen: dict[str, int] = {}
    for i, text in enumerate(labels):  # one bar per run, even where two runs read alike
        seen[text] = seen.get(text, 0) + 1
        if seen[text] > 1:
            labels[i] = f"{text} #{seen[text]}"
    fig = go.Figure(go.Bar(y=labels, x=[r.error_pct for r in rows], orientation="h",
                           error_x={"type": "data", "array": [0.0 if math.isnan(r.noise_pct) else r.noise_pct
                                                              for r in rows], "color": "#555", "thickness": 1},
                           marker_color=["#E45756" if abs(r.error_pct) > 10 else "#F58518" if abs(r.error_pct) > 5
                                         else "#54A24B" for r in rows],
                           hovertemplate="%{y}<br>%{x:+.1f}%<extra></extra>"))
    for x in (-10, -5, 5, 10):
        fig.add_vline(x=x, line={"color": "#bbb", "dash": "dot"})
    fig.update_layout(title=title, xaxis_title="(predicted − measured) / measured, %  (median of the repeats; "
                                               "bars: the run's noise, half the spread of its repeats)",
                      height=140 + 20 * len(rows), margin={"l": 20}, yaxis={"autorange": "reversed"})
    return fig


def speedup_figure(rows: Sequence[Row], title: str = "Speedup over K = 1, predicted vs measured (same round)") -> Any:
    """Every run of K ≥ 2 with a one-process run in each of its rounds (:func:`speedups`): the
    measured speedup (median over rounds, range as error bars) against the predicted one."""
    import plotly.graph_objects as go

    ups = speedups(rows)
    fig = go.Figure()
    if ups:
        vals = [v for u in ups.values() for v in (u.predicted, u.measured)]
        lo, hi = min(vals) * 0.9, max(vals) * 1.1
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="y = x",
                                 line={"color": "#888", "dash": "dash"}))
        idx = sorted(ups)
        lows = [ups[i].measured - min(ups[i].rounds) for i in idx]
        highs = [max(ups[i].rounds) - ups[i].measured for i in idx]
        fig.add_trace(go.Scatter(
            x=[ups[i].measured for i in idx], y=[ups[i].predicted for i in idx], mode="markers",
            marker={"size": 10}, name="runs",
            error_x={"type": "data", "array": highs, "arrayminus": lows, "color": "#999"},
            text=[f"{_run_label(rows[i])} {rows[i].label}<br>error {ups[i].error_pct:+.1f}%" for i in idx],
            hovertemplate="%{text}<br>measured %{x:.2f}x<br>predicted %{y:.2f}x<extra></extra>"))
        fig.update_xaxes(range=[lo, hi], constrain="domain")
        fig.update_yaxes(range=[lo, hi], constrain="domain")
    fig.update_layout(title=title, xaxis_title="measured speedup (median over rounds; bars: range)",
                      yaxis_title="predicted speedup", height=520, width=680)
    return fig


def runs_table(rows: Sequence[Row]) -> Any:
    """Every run, failed ones included (red, with the reason): what the CSV holds."""
    import plotly.graph_objects as go

    head = ["K", "schedule", "split", "label", "predicted ms", "measured ms", "error %", "status"]
    cols = [[r.K for r in rows], [r.schedule for r in rows], [r.split or "-" for r in rows],
            [r.label for r in rows], [_num(r.predicted_ms, ".2f") for r in rows],
            [_num(r.measured_ms, ".2f") or "-" for r in rows], [_num(r.error_pct, "+.1f") or "-" for r in rows],
            [(OK if r.attempts == 1 else f"{OK} (attempt {r.attempts})") if r.ok else f"{r.status}: {r.error}"
             for r in rows]]
    fill = ["#FAD4D4" if not r.ok else "white" for r in rows]
    failed = sum(not r.ok for r in rows)
    fig = go.Figure(go.Table(header={"values": head, "align": "left", "fill_color": "#EEE"},
                             cells={"values": cols, "align": "left", "fill_color": [fill] * len(head)},
                             columnwidth=[1, 3, 2, 3, 2, 2, 2, 6]))
    fig.update_layout(title=f"All runs ({failed} failed)" if failed else "All runs",
                      height=160 + 28 * len(rows), margin={"t": 60, "b": 10})
    return fig


def timeline_figure(sim_trace: Path, measured_trace: Path, title: str, sim_iterations: int) -> Any:
    """Two steady-state iterations, predicted and measured, side by side on one time scale
    (the measured ones from the middle of the run its trace holds)."""
    from ddgsim.compare.figures import batch_of, events_from_trace, gantt_pair, steady_window
    from ddgsim.trace import load_trace

    pred, span_p = steady_window(events_from_trace(load_trace(sim_trace)), sim_iterations // 2)
    events = events_from_trace(load_trace(measured_trace))
    steps = len({batch_of(e.name) for e in events if e.cat == "F"} - {None})
    meas, span_m = steady_window(events, max(0, steps // 2 - 1))
    return gantt_pair(pred, meas, title, span_ms=max(span_p, span_m) or None)


# ---------------------------------------------------------------- the whole validation

@dataclass(kw_only=True)
class Options:
    """What ``ddgsim validate`` was asked for."""

    stages: list[int]
    schedules: list[str]
    splits: int = 3
    steps: int = 10
    warmup: int | None = None
    """Gaps dropped before the median; None: K (the pipeline fill)."""
    threads: int = 1
    device: str = "cpu"
    trace: bool = True
    tol_pct: float = 5.0
    repeats: int = 3
    """Executions per run, interleaved: repeat r of every run before repeat r + 1 of any."""
    micro_batches: tuple[int, ...] = (2,)
    """M for the micro-batched schedules (gpipe, 1f1b): one set of runs per M."""
    runtimes: tuple[str, ...] = ("ddgsim",)
    """``torch`` also runs every gpipe/1f1b split under ``torch.distributed.pipelining``."""
    replicas: tuple[int, ...] = (1,)
    """D for every K: each K is run with every stage on D replicas (K·D processes), for each D."""
    skip_oversized: bool = False
    """Leave out the (K, D) pairs with more processes than the scenario has devices (listed by
    :func:`oversized`) instead of refusing them."""
    min_warmup_ms: float = 300.0
    """With ``warmup`` None, the gaps dropped cover at least this long (steps of a millisecond
    take hundreds of iterations to settle: caches, the allocator, the CPU's clock)."""
    min_window_ms: float = 500.0
    """The gaps the median is taken over cover at least this long: a run of short steps runs
    more than ``steps`` iterations (:func:`run_length`)."""
    max_steal_pct: float = 3.0
    """An execution during which the hypervisor stole more than this share of the machine's CPU
    time is measured again (up to :data:`STEAL_TRIES` times; the least disturbed one is kept)."""


STEAL_TRIES = 3
"""Executions of one repeat at most while the hypervisor keeps stealing CPU time."""


MICRO_BATCHED = ("gpipe", "1f1b")

MAX_RUN_STEPS = 2000
"""No run is lengthened beyond this many iterations."""


def run_length(step_ms: float, stages: int, opts: Options) -> tuple[int, int]:
    """(iterations to execute, gaps to drop before the median) for a run whose steps take about
    ``step_ms`` (predicted before its first execution, measured after).

    ``opts.steps`` iterations drop ``opts.warmup`` gaps (default K, the pipeline fill) and
    measure the rest — unless the steps are short: then the dropped gaps cover at least
    ``opts.min_warmup_ms`` (without an explicit ``warmup``) and the measured ones at least
    ``opts.min_window_ms``, at most :data:`MAX_RUN_STEPS` in all. Twelve steps of a millisecond are a 12 ms sample of a
    machine whose speed moves by tens of percent within a second, still warming up.
    """
    warm = stages if opts.warmup is None else opts.warmup
    measured = opts.steps - 1 - warm
    if step_ms > 0 and math.isfinite(step_ms):
        if opts.warmup is None:
            warm = max(warm, math.ceil(opts.min_warmup_ms / step_ms))
        measured = max(measured, math.ceil(opts.min_window_ms / step_ms))
    steps = min(1 + warm + measured, max(MAX_RUN_STEPS, opts.steps))
    return steps, min(warm, steps - 2)


def plan_runs(profile: Profile, scenario: Scenario, opts: Options) -> list[RunSpec]:
    from ddgsim.replicas import check_batch

    runs: list[RunSpec] = []
    skipped = oversized(scenario, opts) if opts.skip_oversized else []
    for K, D in itertools.product(opts.stages, opts.replicas):
        if profile.num_units < K:
            raise UserError(f"--gpus {K} is more stages than the {profile.num_units} units of '{profile.model}'")
        if (K, D) in skipped:
            continue
        if len(scenario.devices) < K * D:
            what = f"--gpus {K}" + (f" with --replicas {D}" if D > 1 else "")
            raise UserError(f"{what} needs {K * D} devices but scenario '{scenario.name}' has "
                            f"{len(scenario.devices)}")
        if K == 1:
            check_batch(profile.batch_size, 1, [D])
            runs += choose_splits(profile, scenario, "bp", 1, 1, replicas=D)
            continue
        for sched in opts.schedules:
            for m in opts.micro_batches if sched in MICRO_BATCHED else (1,):
                check_batch(profile.batch_size, m, [D] * K)
                chosen = choose_splits(profile, scenario, sched, K, opts.splits, m, replicas=D)
                runs += chosen
                if sched in MICRO_BATCHED and "torch" in opts.runtimes and D == 1:
                    runs += [replace(spec, runtime="torch") for spec in chosen]
    return runs


def oversized(scenario: Scenario, opts: Options) -> list[tuple[int, int]]:
    """The (K, D) pairs asked for that need more devices than ``scenario`` has."""
    return [(K, D) for K, D in itertools.product(opts.stages, opts.replicas) if len(scenario.devices) < K * D]


def execute_torch(plan: Path, steps: int, threads: int, metrics: Path, device: str,
                  log_dir: Path | None = None) -> None:
    """Run ``plan`` under ``torch.distributed.pipelining`` (:mod:`ddgsim.compare.torch_pipelining`)."""
    from ddgsim.compare.torch_pipelining import launch
    from ddgsim.execute.childlog import LaunchFailed

    try:
        code = launch(plan, steps, metrics, threads, device, log_dir=log_dir)
    except LaunchFailed as exc:
        raise ExecutionFailed(str(exc)) from None
    if code != 0:
        raise ExecutionFailed(f"torch.distributed.pipelining exit status {code}")


def _attempt(plan: Path, opts: Options, metrics_path: Path, trace_path: Path | None, steps: int, warmup: int,
             runtime: str = "ddgsim") -> tuple[Measured | str, float | None]:
    """Execute the plan once and measure it: (its step time and memory, or why it failed in one line;
    the percent of CPU time the hypervisor stole meanwhile, ``None`` where unknown)."""
    from ddgsim.profile.machine import cpu_jiffies, steal_pct

    before = cpu_jiffies()
    got = _execute_and_measure(plan, opts, metrics_path, trace_path, steps, warmup, runtime)
    return got, steal_pct(before, cpu_jiffies())


def _execute_and_measure(plan: Path, opts: Options, metrics_path: Path, trace_path: Path | None, steps: int,
                         warmup: int, runtime: str) -> Measured | str:
    for stale in (metrics_path, trace_path):  # an earlier validate into the same folder left them
        if stale is not None:
            stale.unlink(missing_ok=True)
    logs = metrics_path.with_name(metrics_path.name.removesuffix(".metrics.json") + ".logs")
    try:
        if runtime == "torch":
            execute_torch(plan, steps, opts.threads, metrics_path, opts.device, log_dir=logs)
        else:
            execute(plan, steps, opts.threads, metrics_path, trace_path, opts.device, log_dir=logs)
        shutil.rmtree(logs, ignore_errors=True)  # kept only where a process failed
        if not metrics_path.is_file():
            return f"the executor exited 0 but wrote no {metrics_path.name}"
        from ddgsim.execute.measure import load_metrics

        data = load_metrics(metrics_path)
        return Measured(measured_step_ms(data, warmup), measured_memory(data))
    except SystemExit as exc:  # the executor's argument parser
        return f"executor exit status {exc.code}"
    except (ExecutionFailed, UserError) as exc:
        return one_line(str(exc))
    except Exception as exc:  # anything else one run raises must not lose the runs measured so far
        _reraise_signal(exc)
        return one_line(f"{type(exc).__name__}: {exc}")


def _reraise_signal(exc: Exception) -> None:
    """Ctrl-C or SIGTERM reaching the launcher (torch elastic's ``SignalException``) stops validate: no retry."""
    import signal

    api = sys.modules.get("torch.distributed.elastic.multiprocessing.api")
    if api is not None and isinstance(exc, api.SignalException):
        if exc.sigval == signal.SIGINT:
            raise KeyboardInterrupt from exc
        raise exc


@dataclass
class _Run:
    """One run being validated: its prediction, files and the measurements so far."""

    spec: RunSpec
    sim: Any
    plan: Path
    sim_trace: Path
    trace: Path | None
    values: list[float] = field(default_factory=list)
    steal: list[float] = field(default_factory=list)
    """Percent of CPU time stolen during each kept measurement (NaN: unknown)."""
    reasons: list[str] = field(default_factory=list)
    memory: list[tuple[float, ...]] = field(default_factory=list)
    """Measured peak memory per stage (MiB) of each kept execution."""
    steps: int = 0
    """Iterations each execution runs (:func:`run_length`)."""
    warmup: int = 0
    """Gaps dropped before the median."""
    attempts: int = 0
    disturbed: int = 0
    """Executions measured again because the hypervisor stole too much CPU time."""


def _prepare(spec: RunSpec, profile: Profile, profile_ref: dict[str, Any], scenario: Scenario,
             scenario_ref: str, runs_dir: Path, opts: Options) -> _Run:
    """Simulate ``spec``; write its plan and predicted trace."""
    from ddgsim.trace import write_trace

    layout = spec.layout(scenario)
    sim = simulate(profile, list(spec.split), scenario, spec.schedule, micro_batches=spec.micro_batches,
                   layout=layout)
    plan = plan_from_prediction(profile, profile_ref, scenario_ref, spec.schedule, spec.split, sim,
                                micro_batches=spec.micro_batches, extra={"validation_label": spec.label},
                                layout=layout)
    plan_path = runs_dir / f"{spec.name}.plan.json"
    plan.save(plan_path)
    sim_trace = runs_dir / f"{spec.name}.predicted.trace.json"
    write_trace(sim_trace, sim.timeline, process=f"predicted {spec.schedule}", rows=list(sim.devices))
    steps, warmup = run_length(sim.iteration_ms, spec.stages, opts)
    return _Run(spec=spec, sim=sim, plan=plan_path, sim_trace=sim_trace, steps=steps, warmup=warmup,
                trace=runs_dir / f"{spec.name}.measured.trace.json" if opts.trace and spec.runtime == "ddgsim"
                else None)


def _row(run: _Run, profile: Profile, scenario: Scenario) -> Row:
    spec, split = run.spec, ",".join(map(str, run.spec.split))
    row = Row(model=profile.model, K=spec.stages, schedule=spec.schedule, split=split,
              predicted_ms=run.sim.iteration_ms, measured_ms=math.nan, error_pct=math.nan, label=spec.label,
              batch_size=profile.batch_size, steps=run.steps, scenario=scenario.name, attempts=run.attempts,
              micro_batches=spec.micro_batches, repeats=len(run.values), measured_all_ms=tuple(run.values),
              runtime=spec.runtime, steal_pct=max((x for x in run.steal if not math.isnan(x)), default=math.nan),
              redone=run.disturbed, replicas=spec.replicas,
              predicted_memory_mib=tuple(b / 2**20 for b in run.sim.peak_memory_bytes),
              measured_memory_mib=tuple(statistics.median(xs) for xs in zip(*run.memory, strict=True))
              if run.memory and len({len(m) for m in run.memory}) == 1 else ())
    if not run.values:
        error = f"{run.reasons[0]}, twice" if len(set(run.reasons)) == 1 and len(run.reasons) == 2 else \
            "; then ".join(run.reasons)
        return replace(row, status=FAILED, error=error)
    measured = float(statistics.median(run.values))
    note = f"{len(run.reasons)} failed execution(s): {run.reasons[0]}" if run.reasons else ""
    return replace(row, measured_ms=measured, error_pct=100.0 * (run.sim.iteration_ms - measured) / measured,
                   error=note)


def run_all(profile: Profile, profile_ref: dict[str, Any], scenario: Scenario, scenario_ref: str,
            opts: Options, out: Path, log: Callable[[str], None] | None = None,
            warn: Callable[[str], None] | None = None) -> tuple[list[Row], list[Any]]:
    """Predict every run, then measure each ``opts.repeats`` times, interleaved; files go under ``out/runs``.

    Repeat r of every run happens before repeat r + 1 of any, so a machine that speeds up or
    slows down over the minutes moves all runs alike; a run's ``measured_ms`` is the median of
    its repeats. ``out/validation.csv`` is rewritten after every execution, so an interrupted
    validation keeps what it measured. A failed execution is tried once more; failing again, it
    is noted (through ``warn``, stderr by default) and the next one starts. A run with no
    measurement at all becomes a ``failed`` row.
    """
    log = log or _print
    warn = warn or stderr
    runs_dir = out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    specs = plan_runs(profile, scenario, opts)
    runs = [_prepare(spec, profile, profile_ref, scenario, scenario_ref, runs_dir, opts) for spec in specs]
    longer = sorted({r.steps for r in runs if r.steps > opts.steps})
    log(f"{len(specs)} runs × {opts.repeats} repeats (interleaved) of {opts.steps} steps each" + (
        f"; {sum(r.steps > opts.steps for r in runs)} of short steps run {longer[0]}–{longer[-1]} "
        f"(at least {opts.min_warmup_ms:g} ms of warm-up and {opts.min_window_ms:g} ms measured)" if longer else ""))
    for rep in range(opts.repeats):
        for i, run in enumerate(runs):
            spec = run.spec
            t0 = time.perf_counter()
            steps, warm = run.steps, run.warmup
            micro = f" M={spec.micro_batches}" if spec.micro_batches > 1 else ""
            micro += " under torch.distributed.pipelining" if spec.runtime == "torch" else ""
            reps = f"×D={spec.replicas}" if spec.replicas > 1 else ""
            what = (f"[{rep + 1}/{opts.repeats}] [{i + 1}/{len(runs)}] K={spec.stages}{reps} {spec.schedule}{micro} "
                    f"split [{','.join(map(str, spec.split)) or '-'}] ({spec.label})")
            metrics_path = runs_dir / f"{spec.name}.r{rep + 1}.metrics.json"
            got: float | str = ""
            failures = measured = 0
            kept: tuple[float, Measured] | None = None  # (stolen %, measured) of the least disturbed execution
            while failures < ATTEMPTS:
                result, stolen = _attempt(run.plan, opts, metrics_path, run.trace, steps, warm, spec.runtime)
                run.attempts += 1
                if isinstance(result, str):
                    got = result
                    failures += 1
                    run.reasons.append(got)
                    warn(f"{what}: failed ({got}); " + ("retrying once" if failures < ATTEMPTS else "going on"))
                    continue
                stolen = math.nan if stolen is None else stolen
                if kept is None or stolen < kept[0]:
                    kept = (stolen, result)
                measured += 1
                # the next execution's length from what this one took: a prediction far too fast
                # must not make every repeat run thousands of steps
                run.steps, run.warmup = run_length(result[0], spec.stages, opts)
                if not stolen > opts.max_steal_pct or measured >= STEAL_TRIES:
                    break
                run.disturbed += 1
                warn(f"{what}: the hypervisor stole {stolen:.1f}% of the CPU time during the run "
                     f"(> {opts.max_steal_pct:g}%); measuring again")
            memory: tuple[float, ...] = ()  # the kept execution's peak memory per stage, MiB
            if kept is not None:
                run.steal.append(kept[0])
                got, memory = kept[1]
                run.values.append(got)
                if memory:
                    run.memory.append(memory)
            took = f"({time.perf_counter() - t0:.0f} s" + (
                f", {kept[0]:.1f}% stolen)" if kept is not None and not math.isnan(kept[0]) else ")")
            if isinstance(got, str):
                log(f"{what}: predicted {run.sim.iteration_ms:.1f} ms, FAILED ({got})  {took}")
            else:
                mem = (f"; peak memory per stage {'/'.join(f'{b / 2**20:.0f}' for b in run.sim.peak_memory_bytes)} "
                       f"MiB predicted, {'/'.join(f'{x:.0f}' for x in memory)} measured" if memory else "")
                log(f"{what}: predicted {run.sim.iteration_ms:.1f} ms, measured {got:.1f} ms, "
                    f"error {100 * (run.sim.iteration_ms - got) / got:+.1f}%{mem}  {took}")
            write_csv([_row(r, profile, scenario) for r in runs[:len(runs) if rep else i + 1]], out / CSV_NAME)
    rows = [_row(r, profile, scenario) for r in runs]
    timelines = []
    for run, row in zip(runs, rows, strict=True):
        spec = run.spec
        if row.ok and run.trace is not None and run.trace.is_file() and \
                (spec.label.startswith("planned") or spec.stages == 1):
            try:
                timelines.append(timeline_figure(
                    run.sim_trace, run.trace, f"{_run_label(row)} ({spec.label}): two steady-state iterations",
                    run.sim.iterations))
            except Exception as exc:  # a figure is not worth the rest of the report
                warn(f"{_run_label(row)}: no timeline figure ({one_line(f'{type(exc).__name__}: {exc}')})")
    return rows, timelines


def write_report(path: Path, rows: Sequence[Row], summary: Summary, timelines: Sequence[Any],
                 header: Sequence[str] = ()) -> Path:
    from ddgsim.compare.figures import write_html

    title = f"ddgsim validation: {rows[0].model}, batch {rows[0].batch_size}" if rows else "ddgsim validation"
    measured = [scatter_figure(rows), error_figure(rows)] if any(r.ok for r in rows) else []
    if speedups(rows):
        measured.append(speedup_figure(rows))
    figs = [*measured, runs_table(rows), *timelines]
    return write_html(path, figs, title, intro="\n".join([*header, *summary.lines()]))


def export_figures(folder: Path, rows: Sequence[Row], summary: Summary, timelines: Sequence[Any]) -> list[Path]:
    """PNGs for a README: the scatter, the errors, every timeline (where Chromium is present)."""
    from ddgsim.compare.figures import export_pngs

    model = f"{rows[0].model}, batch {rows[0].batch_size}" if rows else ""
    head = (f"median |error| {summary.median_abs_error_pct:.1f}%, worst {summary.worst_abs_error_pct:.1f}%, "
            f"Kendall τ {summary.kendall_tau:.2f}")
    figs = [("validation-scatter.png", scatter_figure(rows, f"Predicted vs measured ({model})<br><sup>{head}</sup>")),
            ("validation-errors.png", error_figure(rows, f"Prediction error per run ({model})"))]
    if speedups(rows):
        figs.append(("validation-speedups.png", speedup_figure(rows, f"Speedup over K = 1 ({model})")))
    figs += [(f"validation-timeline-{i + 1}.png", fig) for i, fig in enumerate(timelines)]
    items = [(fig, folder / name) for name, fig in figs]
    return [p for _, p in items] if export_pngs(items, width=1100) == len(items) else []


def profile_warning(profile: Profile, where: str = "", micro_batches: Sequence[int] = ()) -> str | None:
    """A line when the profile describes another machine, was measured under load or not with 1 thread,
    or lacks measured costs for a micro-batch count to validate."""
    import os

    from ddgsim.profile.machine import provenance_note

    meta = profile.meta
    load = meta.get("loadavg_before") or meta.get("loadavg_after")
    cpus = os.cpu_count() or 1
    notes = []
    foreign = provenance_note(profile, where or profile.model)
    if foreign:
        notes.append(foreign.removeprefix("note: "))
    if isinstance(load, list) and load and float(load[0]) > 0.5 * cpus:
        notes.append(f"measured under load (load average {load[0]} on {cpus} CPUs)")
    if profile.threads != 1:
        notes.append(f"measured with {profile.threads} threads, the executor runs 1 per stage")
    off = profile.rows_disagree()
    if off:
        notes.append(off)
    missing = [m for m in micro_batches if profile.micro_costs(m) is None]
    if missing:
        notes.append(f"no measured costs for {', '.join(map(str, missing))} micro-batches (1/M of the batch is used)")
    if not notes:
        return None
    return (f"warning: profile of {profile.model} at batch {profile.batch_size}: " + "; ".join(notes)
            + ". Re-profile on a quiet machine: "
            f"python -m ddgsim profile {profile.model} --batch-size {profile.batch_size} --threads 1 --no-cache "
            + (f"--micro-batches {','.join(map(str, micro_batches))} " if micro_batches else "")
            + "--out FILE, then --profile FILE")


def _print(msg: str) -> None:
    print(msg, flush=True)


def stderr(msg: str) -> None:
    sys.stderr.write(msg + "\n")
