"""Predict every run, then measure them all in interleaved rounds: a failed execution is retried
once, one disturbed by the hypervisor is measured again."""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ddgsim.compare.execution import Measured, attempt
from ddgsim.compare.options import Options, run_length
from ddgsim.compare.report import timeline_figure
from ddgsim.compare.rows import FAILED, Row, run_label
from ddgsim.compare.selection import RunSpec, plan_runs
from ddgsim.compare.session import SessionSpeed
from ddgsim.compare.validation_csv import CSV_NAME, write_csv
from ddgsim.errors import one_line
from ddgsim.plan.build import plan_from_prediction
from ddgsim.plan.records import ProfileRef
from ddgsim.predict.event_sim import simulate
from ddgsim.predict.scenario import Scenario
from ddgsim.profile.format import Profile

log = logging.getLogger(__name__)

ATTEMPTS = 2
"""Tries per run: the first and one retry."""

STEAL_TRIES = 3
"""Executions of one repeat at most while the hypervisor keeps stealing CPU time."""


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
    at: list[float] = field(default_factory=list)
    """When each kept execution ran (:attr:`Row.measured_at_s`)."""
    compute: list[float] = field(default_factory=list)
    """Each kept execution's :attr:`Row.compute_ratio_all` (none where the runtime does not time its actions)."""
    steps: int = 0
    """Iterations each execution runs (:func:`run_length`)."""
    warmup: int = 0
    """Gaps dropped before the median."""
    attempts: int = 0
    disturbed: int = 0
    """Executions measured again because the hypervisor stole too much CPU time."""
    executions: int = 0
    """Repeats begun so far (failed ones included): the number of the next metrics file."""
    session_ms: float = math.nan
    """The prediction at the machine's speed over the session (:func:`at_session_speed`)."""
    timed_share: float = 0.0
    """The share of the stages' predicted busy time that is their compute (the profile's), not the
    executor's fixed costs per action (:func:`compute_share`)."""


def _prepare(spec: RunSpec, profile: Profile, profile_ref: ProfileRef | None, scenario: Scenario,
             scenario_ref: str, runs_dir: Path, opts: Options) -> _Run:
    """Simulate ``spec``; write its plan and predicted trace."""
    from ddgsim.trace import write_trace

    layout = spec.layout(scenario)
    sim = _simulate(spec, profile, scenario)
    plan = plan_from_prediction(profile, profile_ref, scenario_ref, spec.schedule, spec.split, sim,
                                micro_batches=spec.micro_batches, extra={"validation_label": spec.label},
                                layout=layout)
    plan_path = runs_dir / f"{spec.name}.plan.json"
    plan.save(plan_path)
    sim_trace = runs_dir / f"{spec.name}.predicted.trace.json"
    write_trace(sim_trace, sim.timeline, process=f"predicted {spec.schedule}", rows=list(sim.devices))
    steps, warmup = run_length(sim.iteration_ms, spec.stages, opts)
    return _Run(spec=spec, sim=sim, plan=plan_path, sim_trace=sim_trace, steps=steps, warmup=warmup,
                timed_share=compute_share(profile, spec.split, scenario, spec.micro_batches, layout),
                trace=runs_dir / f"{spec.name}.measured.trace.json" if opts.trace and spec.runtime == "ddgsim"
                else None)


def _simulate(spec: RunSpec, profile: Profile, scenario: Scenario) -> Any:
    """The simulator's prediction of ``spec`` on ``scenario``."""
    return simulate(profile, list(spec.split), scenario, spec.schedule, micro_batches=spec.micro_batches,
                    layout=spec.layout(scenario))


def at_session_speed(scenario: Scenario, factor: float) -> Scenario | None:
    """``scenario`` with every device computing ``factor`` times slower than profiled (its
    :attr:`~ddgsim.predict.scenario.Device.speed` divided by it): the machine as the speed probe found it
    over the session. The executor's fixed costs and the links are left as calibrated. ``None``
    without a factor."""
    if not factor > 0:
        return None
    return replace(scenario, devices=tuple(replace(d, speed=d.speed / factor) for d in scenario.devices))


MIN_COMPUTE_SHARE = 0.95
"""A run's compute ratio is kept where the profile's compute is at least this share of the stages'
predicted busy time: the rest, the executor's fixed costs per action, falls partly outside the
action windows the executor times (its loop, posting messages), so where it is large the two
sides of the ratio measure different things (mlp at batch 128: half the busy time)."""


def compute_share(profile: Profile, split: Sequence[int], scenario: Scenario, micro_batches: int,
                  layout: Any) -> float:
    """Σ over stages of the busy time without the executor's overheads / with them (the costs the
    simulator runs on, :meth:`ddgsim.predict.costs.Costs.busy_ms`, both without contention: the
    slow-down of stages computing at once is compute too); 1 without overheads."""
    from ddgsim.predict.costs import costs_for_splits
    from ddgsim.predict.overheads import NONE

    def busy(sc: Scenario) -> float:
        return float(costs_for_splits(profile, [list(split)], sc, None, micro_batches, layout=layout).busy_ms()[0].sum())

    total = busy(scenario)
    return busy(replace(scenario, overheads=NONE)) / total if total > 0 else 1.0


def compute_ratio(measured_busy: Sequence[float], predicted_busy: Sequence[float]) -> float | None:
    """Σ measured / Σ predicted compute over the stages (:attr:`Row.compute_ratio_all`); ``None``
    without a measurement for every stage."""
    if not measured_busy or len(measured_busy) != len(predicted_busy) or not sum(predicted_busy) > 0:
        return None
    return float(sum(measured_busy) / sum(predicted_busy))


def _row(run: _Run, profile: Profile, scenario: Scenario, speed: SessionSpeed | None = None) -> Row:
    spec, split = run.spec, ",".join(map(str, run.spec.split))
    row = Row(model=profile.model, K=spec.stages, schedule=spec.schedule, split=split,
              predicted_ms=run.sim.iteration_ms, measured_ms=math.nan, error_pct=math.nan, label=spec.label,
              batch_size=profile.batch_size, steps=run.steps, scenario=scenario.name, attempts=run.attempts,
              micro_batches=spec.micro_batches, repeats=len(run.values), measured_all_ms=tuple(run.values),
              runtime=spec.runtime, steal_pct=max((x for x in run.steal if not math.isnan(x)), default=math.nan),
              redone=run.disturbed, replicas=spec.replicas,
              predicted_memory_mib=tuple(b / 2**20 for b in run.sim.peak_memory_bytes),
              measured_memory_mib=tuple(statistics.median(xs) for xs in zip(*run.memory, strict=True))
              if run.memory and len({len(m) for m in run.memory}) == 1 else (),
              compute_ratio_all=tuple(run.compute) if len(run.compute) == len(run.values) else (),
              measured_at_s=tuple(run.at), session_factor=speed.factor if speed is not None else math.nan,
              predicted_session_ms=run.session_ms)
    if not run.values:
        error = f"{run.reasons[0]}, twice" if len(set(run.reasons)) == 1 and len(run.reasons) == 2 else \
            "; then ".join(run.reasons)
        return replace(row, status=FAILED, error=error)
    measured = float(statistics.median(run.values))
    note = f"{len(run.reasons)} failed execution(s): {run.reasons[0]}" if run.reasons else ""
    return replace(row, measured_ms=measured, error_pct=100.0 * (run.sim.iteration_ms - measured) / measured,
                   error=note)


def run_all(profile: Profile, profile_ref: ProfileRef | None, scenario: Scenario, scenario_ref: str,
            opts: Options, out: Path, log: Callable[[str], None] | None = None,
            warn: Callable[[str], None] | None = None, speed: SessionSpeed | None = None) -> tuple[list[Row], list[Any]]:
    """Predict every run, then measure each ``opts.repeats`` times, interleaved; files go under ``out/runs``.

    Repeat r of every run happens before repeat r + 1 of any, so a machine that speeds up or
    slows down over the minutes moves all runs alike; a run's ``measured_ms`` is the median of
    its repeats. The one-process run opens every round, comes back after every
    ``opts.reference_every`` others (:func:`round_order`) and is measured once more after the last
    round, and every execution's moment is kept: each execution is compared with the one-process run
    of its own moment. With ``speed``, the speed probe is read before every one-process execution
    (before every round's first without one) and after the last execution: the machine's speed over
    the session, every row's :attr:`Row.session_factor`. ``out/validation.csv`` is rewritten after every execution, so an interrupted
    validation keeps what it measured. A failed execution is tried once more; failing again, it
    is noted (through ``warn``; by default :func:`note`, the log) and the next one starts. A run with no
    measurement at all becomes a ``failed`` row.
    """
    log = log or _print
    warn = warn or note
    runs_dir = out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    specs = plan_runs(profile, scenario, opts)
    runs = [_prepare(spec, profile, profile_ref, scenario, scenario_ref, runs_dir, opts) for spec in specs]
    longer = sorted({r.steps for r in runs if r.steps > opts.steps})
    ref = reference_index(runs)
    order = round_order(len(runs), ref, opts.reference_every)
    log(f"{len(specs)} runs × {opts.repeats} repeats (interleaved) of {opts.steps} steps each" + (
        f"; {sum(r.steps > opts.steps for r in runs)} of short steps run {longer[0]}–{longer[-1]} "
        f"(at least {opts.min_warmup_ms:g} ms of warm-up and {opts.min_window_ms:g} ms measured)" if longer else "")
        + (f"; the one-process run {_times(len(order) - len(runs) + 1)} a round and once more at the end, "
           "the others' reference" if ref is not None else ""))
    t_zero = time.perf_counter()
    for rep in range(opts.repeats):
        for slot, i in enumerate(order):
            if speed is not None and (i == ref or (ref is None and slot == 0)):
                _probe(speed, t_zero, log)
            _measure(runs[i], f"[{rep + 1}/{opts.repeats}] [{slot + 1}/{len(order)}]", runs_dir, opts, t_zero,
                     log, warn)
            write_csv([_row(r, profile, scenario, speed) for r in runs if r.executions], out / CSV_NAME)
    if ref is not None and runs[ref].values and any(r.values for j, r in enumerate(runs) if j != ref):
        if speed is not None:
            _probe(speed, t_zero, log)
        _measure(runs[ref], "[closing]", runs_dir, opts, t_zero, log, warn)
    if speed is not None:
        _probe(speed, t_zero, log)
        slower = at_session_speed(scenario, speed.factor)
        for r in runs:
            r.session_ms = _simulate(r.spec, profile, slower).iteration_ms if slower is not None else math.nan
    rows = [_row(r, profile, scenario, speed) for r in runs]
    write_csv(rows, out / CSV_NAME)
    timelines = []
    for run, row in zip(runs, rows, strict=True):
        spec = run.spec
        if row.ok and run.trace is not None and run.trace.is_file() and \
                (spec.label.startswith("planned") or spec.stages == 1):
            try:
                timelines.append(timeline_figure(
                    run.sim_trace, run.trace, f"{run_label(row)} ({spec.label}): two steady-state iterations",
                    run.sim.iterations))
            except Exception as exc:  # a figure is not worth the rest of the report
                warn(f"{run_label(row)}: no timeline figure ({one_line(f'{type(exc).__name__}: {exc}')})")
    return rows, timelines


def _probe(speed: SessionSpeed, t_zero: float, log: Callable[[str], None]) -> None:
    """Read the speed probe now and print its line."""
    ms = speed.take(time.perf_counter() - t_zero)
    log(f"[speed probe] whole-model step {ms:.1f} ms, {ms / speed.profile_ms:.3f}x the profile's "
        f"{speed.profile_ms:.1f} ms" if speed.profile_ms > 0 else f"[speed probe] whole-model step {ms:.1f} ms")


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


def reference_index(runs: Sequence[_Run]) -> int | None:
    """Which run the others are measured against: the one-process run (K = 1, one replica, the
    ddgsim executor), where there is exactly one and something else to compare with it."""
    base = [i for i, r in enumerate(runs)
            if r.spec.stages == 1 and r.spec.replicas == 1 and r.spec.runtime == "ddgsim"]
    return base[0] if len(base) == 1 and len(runs) > 1 else None


def round_order(n: int, ref: int | None, every: int) -> list[int]:
    """One round's executions, by run index: every run once, in order, and the reference ``ref``
    first and again after every ``every`` others (0: first only). With the one-process run
    measured once more after the last round, every execution lies between two of its
    measurements at most ``every`` executions apart, and
    :func:`ddgsim.compare.accuracy.reference_ms` interpolates between them."""
    if ref is None:
        return list(range(n))
    out = [ref]
    for j, i in enumerate(i for i in range(n) if i != ref):
        if every and j and j % every == 0:
            out.append(ref)
        out.append(i)
    return out


def _measure(run: _Run, where: str, runs_dir: Path, opts: Options, t_zero: float,
             log: Callable[[str], None], warn: Callable[[str], None]) -> None:
    """The next repeat of ``run`` (:attr:`_Run.executions`): execute it (a failed execution once more, one disturbed by the
    hypervisor up to :data:`STEAL_TRIES` times, keeping the least disturbed), record what it
    measured and when (seconds after ``t_zero``), and print its line."""
    spec = run.spec
    t0 = time.perf_counter()
    micro = f" M={spec.micro_batches}" if spec.micro_batches > 1 else ""
    micro += " under torch.distributed.pipelining" if spec.runtime == "torch" else ""
    reps = f"×D={spec.replicas}" if spec.replicas > 1 else ""
    what = (f"{where} K={spec.stages}{reps} {spec.schedule}{micro} "
            f"split [{','.join(map(str, spec.split)) or '-'}] ({spec.label})")
    run.executions += 1
    metrics_path = runs_dir / f"{spec.name}.r{run.executions}.metrics.json"
    got: float | str = ""
    failures = measured = 0
    kept: tuple[float, Measured, float] | None = None  # (stolen %, measured, when) of the least disturbed execution
    while failures < ATTEMPTS:
        began = time.perf_counter()
        result, stolen = attempt(run.plan, opts, metrics_path, run.trace, run.steps, run.warmup, spec.runtime)
        when = (began + time.perf_counter()) / 2 - t_zero
        run.attempts += 1
        if isinstance(result, str):
            got = result
            failures += 1
            run.reasons.append(got)
            warn(f"{what}: failed ({got}); " + ("retrying once" if failures < ATTEMPTS else "going on"))
            continue
        stolen = math.nan if stolen is None else stolen
        if kept is None or stolen < kept[0]:
            kept = (stolen, result, when)
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
        run.at.append(kept[2])
        got, memory, busy = kept[1]
        run.values.append(got)
        if memory:
            run.memory.append(memory)
        ratio = compute_ratio(busy, run.sim.busy_ms)
        if ratio is not None and run.timed_share >= MIN_COMPUTE_SHARE:
            run.compute.append(ratio)
    took = f"({time.perf_counter() - t0:.0f} s" + (
        f", {kept[0]:.1f}% stolen)" if kept is not None and not math.isnan(kept[0]) else ")")
    if isinstance(got, str):
        log(f"{what}: predicted {run.sim.iteration_ms:.1f} ms, FAILED ({got})  {took}")
    else:
        mem = (f"; peak memory per stage {'/'.join(f'{b / 2**20:.0f}' for b in run.sim.peak_memory_bytes)} "
               f"MiB predicted, {'/'.join(f'{x:.0f}' for x in memory)} measured" if memory else "")
        log(f"{what}: predicted {run.sim.iteration_ms:.1f} ms, measured {got:.1f} ms, "
            f"error {100 * (run.sim.iteration_ms - got) / got:+.1f}%{mem}  {took}")


def _print(msg: str) -> None:
    """``msg`` on stdout, at once (a run's line as soon as it is measured)."""
    print(msg, flush=True)


def note(msg: str) -> None:
    """One of validate's notes and warnings, logged: a ``warning: ...`` line as a warning (its text
    after the prefix), any other as a note (``INFO``); the command line shows each as it reads."""
    if msg.startswith("warning: "):
        log.warning("%s", msg.removeprefix("warning: "))
    else:
        log.info("%s", msg)
