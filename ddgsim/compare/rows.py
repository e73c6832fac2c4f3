"""One validation run's record (:class:`Row`), its verdict and its label."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from ddgsim.schedule import get_schedule

WITHIN_TOLERANCE = "within tolerance"
WITHIN_NOISE = "within noise"
MODEL_ERROR = "model error"
MACHINE_SPEED = "the machine's speed"
SESSION_SPEED = "the machine's speed over the session"
"""Beyond tolerance and its own noise, but within them once predicted at the speed the machine ran
at over the whole validation — measured by the speed probe between executions, independent of the
run (:attr:`Row.session_error_pct`): the profile's few seconds met the machine at another speed."""
CONTENTION = "contention"
"""Beyond tolerance and noise, within tolerance at its own compute speed, but not with the machine's
speed of the moment (the one-process run then), and its stages compute at once (not bp): its stage
processes computed slower than one process alone did at the same moment — they slowed each other
more than the model says
(:func:`ddgsim.compare.accuracy.summarize`)."""

MEMORY_FLOOR_MIB = 1.0
"""A stage's peak memory below this, predicted and measured, is compared in MiB, not in %: a stage
holding a final linear layer (0.16 MiB predicted, 2.5 KiB measured by the allocator) or an MLP's few
KiB is off by thousands of % and by nothing that matters."""

OK = "ok"
FAILED = "failed"


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
    compute_ratio_all: tuple[float, ...] = ()
    """Per repeat (as ``measured_all_ms``): the compute time its stages measured (the F, B and U
    windows, median per iteration, summed over the stages) over the time the prediction gives them:
    how fast the machine computed during that execution, against the profile (empty where the
    runtime does not time its actions)."""
    measured_at_s: tuple[float, ...] = ()
    """Per repeat (as ``measured_all_ms``): the middle of its execution, in seconds after the
    validation's first execution began — what pairs it with the one-process run of the same moment
    (:func:`ddgsim.compare.accuracy.reference_ms`); empty in files written before."""
    session_factor: float = math.nan
    """How much slower (> 1) the machine computed over the validation than when the profile was
    measured: the median of the speed probe's readings between the executions over the profile's
    whole-model step (:mod:`ddgsim.compare.session`); one per validation, NaN where not probed."""
    predicted_session_ms: float = math.nan
    """The prediction with every device computing at :attr:`session_factor` × the profile's times
    (the executor's fixed costs and the links as they are); NaN where not probed."""

    @property
    def session_error_pct(self) -> float:
        """The error at the machine's speed over the session: the median over repeats of
        100 · (:attr:`predicted_session_ms` − measured) / measured; NaN where not probed."""
        if not self.ok or not self.measured_all_ms or not self.predicted_session_ms > 0:
            return math.nan
        return scaled_error_pct(self.predicted_session_ms, [1.0] * len(self.measured_all_ms), self.measured_all_ms)

    @property
    def compute_matched_error_pct(self) -> float:
        """The error with each execution's own compute speed: the median over repeats of
        100 · (predicted · ratio − measured) / measured, ``ratio`` that repeat's
        :attr:`compute_ratio_all`. What is left is the pipeline model's own (waits, overlaps,
        messages, overheads outside the actions); NaN without a ratio for every repeat."""
        if not self.ok or not self.compute_ratio_all or len(self.compute_ratio_all) != len(self.measured_all_ms):
            return math.nan
        return scaled_error_pct(self.predicted_ms, self.compute_ratio_all, self.measured_all_ms)

    def _memory_pairs(self) -> list[tuple[float, float]]:
        if len(self.predicted_memory_mib) != len(self.measured_memory_mib):
            return []
        return list(zip(self.predicted_memory_mib, self.measured_memory_mib, strict=True))

    @property
    def memory_errors_pct(self) -> list[float]:
        """Per stage of :data:`MEMORY_FLOOR_MIB` or more (predicted or measured), 100 · (predicted −
        measured) / measured (empty without both)."""
        return [100.0 * (p - m) / m for p, m in self._memory_pairs() if m > 0 and max(p, m) >= MEMORY_FLOOR_MIB]

    @property
    def small_memory_errors_mib(self) -> list[float]:
        """Per stage under :data:`MEMORY_FLOOR_MIB` both predicted and measured, predicted − measured in MiB."""
        return [p - m for p, m in self._memory_pairs() if max(p, m) < MEMORY_FLOOR_MIB]

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

    def verdict(self, tol_pct: float, at_moment_pct: float = math.nan) -> str:
        """:data:`WITHIN_TOLERANCE` (|error| ≤ ``tol_pct``), :data:`WITHIN_NOISE` (≤ its noise),
        :data:`SESSION_SPEED` (its :attr:`session_error_pct` within ``tol_pct`` or its noise); beyond all
        those but within ``tol_pct`` at its own compute speed (:attr:`compute_matched_error_pct`)
        :data:`CONTENTION` when its stages compute at once (:attr:`stages_overlap`) and ``at_moment_pct``
        — its error against the one-process run of the same moment
        (:func:`ddgsim.compare.accuracy.speed_matched_errors`; NaN: none) — is still beyond ``tol_pct``,
        else :data:`MACHINE_SPEED` (the machine computed at another speed than the
        profile's during those executions); otherwise :data:`MODEL_ERROR`."""
        err = abs(self.error_pct)
        if err <= tol_pct:
            return WITHIN_TOLERANCE
        if err <= self.noise_pct:
            return WITHIN_NOISE
        if abs(self.session_error_pct) <= max(tol_pct, self.noise_pct):
            return SESSION_SPEED
        if not abs(self.compute_matched_error_pct) <= tol_pct:
            return MODEL_ERROR
        return CONTENTION if abs(at_moment_pct) > tol_pct and self.stages_overlap else MACHINE_SPEED

    @property
    def stages_overlap(self) -> bool:
        """Whether its processes compute at once: every run but one of a schedule whose stages take
        turns (bp, :attr:`ddgsim.schedule.ScheduleSpec.in_turn`: only a stage's update may overlap the
        backward of the one before) with one replica per stage. Off against the one-process run of the
        same moment, such a run met the machine at another speed than that run did minutes apart, not
        a neighbour's contention."""
        return self.K > 1 and not (get_schedule(self.schedule).in_turn and self.replicas == 1)


def scaled_error_pct(predicted_ms: float, factors: Sequence[float], measured_ms: Sequence[float]) -> float:
    """Median over repeats of 100 · (predicted · factor − measured) / measured: the error once each
    repeat's prediction is scaled to the speed the machine ran at (``factors``, one per repeat)."""
    return float(statistics.median(100.0 * (predicted_ms * f - m) / m
                                   for f, m in zip(factors, measured_ms, strict=True)))


def run_label(r: Row) -> str:
    """``K=2×D=2 gpipe M=2 (torch.distributed.pipelining) [6]``: the run, without its label."""
    micro = f" M={r.micro_batches}" if r.micro_batches > 1 else ""
    runtime = " (torch.distributed.pipelining)" if r.runtime == "torch" else ""
    reps = f"×D={r.replicas}" if r.replicas > 1 else ""
    return f"K={r.K}{reps} {r.schedule}{micro}{runtime} [{r.split or '-'}]"


def failure_line(rows: Sequence[Row]) -> str | None:
    """``2 of 10 runs failed: resnet20 ddg K=2 split [6] (executor exit status 1, twice); ...``, or None."""
    failed = [r for r in rows if not r.ok]
    if not failed:
        return None
    what = "; ".join(f"{r.model} {r.schedule} {run_label(r).split(' ')[0]} split [{r.split or '-'}] "
                     f"({r.error or 'no reason recorded'})" for r in failed)
    return f"{len(failed)} of {len(rows)} runs failed: {what}"


def cell(x: float, spec: str) -> str:
    """A number in a table cell, formatted by ``spec``; NaN (not measured) is left empty."""
    return "" if math.isnan(x) else format(x, spec)
