"""The ``validate`` use case: run several splits for real and compare them with the simulator's prediction.

    from ddgsim.compare.validate import ValidateConfig, run
    report = run(ValidateConfig(model="mlp", stages=(1, 2), schedules=("ddg",), out=Path("v")))
    print(report.summary.median_abs_error_pct)

For every K and schedule a few splits are chosen (:mod:`~ddgsim.compare.selection`: the
planner's optimum, the authors' even split, deliberately unbalanced ones); each is simulated
(:mod:`ddgsim.predict.event_sim`) and run for real (:mod:`~ddgsim.compare.execution`: one
process per stage), every run several times in interleaved rounds
(:mod:`~ddgsim.compare.rounds`), and the steady-state iteration times are compared
(:mod:`~ddgsim.compare.accuracy`). K = 1 is the one-process ``bp`` run.

*Predicted* is the simulator's steady-state period. *Measured* is, from the executor's
metrics, the median over iterations of the gap between the moments the slowest stage
finished consecutive iterations, after dropping the first ``warmup`` gaps (pipeline fill,
first-touch allocations); a run's figure is the median of its repeats.

A run whose execution fails is tried once more; if it fails again it is recorded as
``failed`` (``status`` and ``error`` columns, measured fields empty) and the other runs go
on. The statistics and figures use the runs that were measured. ``python -m ddgsim
validate`` is a thin adapter over :func:`run`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ddgsim.compare.accuracy import Summary, summarize
from ddgsim.compare.config import ConfigError, ValidateConfig
from ddgsim.compare.inputs import Inputs, gather
from ddgsim.compare.options import Options
from ddgsim.compare.report import export_figures, write_report
from ddgsim.compare.rounds import note, run_all
from ddgsim.compare.rows import Row, failure_line
from ddgsim.compare.selection import oversized, plan_runs
from ddgsim.compare.session import SessionSpeed
from ddgsim.compare.validation_csv import CSV_NAME, write_csv

__all__ = ["ConfigError", "ValidateConfig", "ValidationReport", "run"]


@dataclass(frozen=True, kw_only=True)
class ValidationReport:
    """What a validation measured and the files it wrote."""

    rows: tuple[Row, ...]
    """One per run, as in ``validation.csv`` (failed runs included)."""
    summary: Summary
    header: tuple[str, ...]
    """How the runs were made (command, profile, scenario, load): the report's first lines."""
    csv_path: Path
    summary_path: Path
    """``summary.json``: the header and the summary's figures."""
    report_path: Path
    """``report.html``: the figures (plotly)."""
    figure_paths: tuple[Path, ...] = ()
    """PNGs exported (``ValidateConfig.figures``); empty where none was asked for or Chromium is missing."""

    @property
    def failure(self) -> str | None:
        """``2 of 10 runs failed: ...`` (:func:`~ddgsim.compare.rows.failure_line`), or ``None``."""
        return failure_line(self.rows)


def run(config: ValidateConfig, *, log: Callable[[str], None] | None = None,
        warn: Callable[[str], None] | None = None) -> ValidationReport:
    """Predict, run and compare everything ``config`` asks for; write the files under ``config.out``.

    ``log`` gets a line per execution (stdout by default), ``warn`` the notes and warnings (by default
    :func:`~ddgsim.compare.rounds.note`: the ``ddgsim`` log, which the command line shows on stderr).
    Bad inputs raise :class:`~ddgsim.errors.UserError` (a :class:`ConfigError` naming the field)
    before anything runs; a run that fails twice is a ``failed`` row, not an exception.
    """
    from ddgsim.models.registry import get_spec

    warn = warn or note
    _check_devices(config)
    get_spec(config.model)
    inputs = gather(config, warn)
    opts = _options(config)
    pairs = len(opts.stages) * len(opts.replicas)
    if pairs > 1:  # several (K, D) pairs: run those that fit on the scenario
        skipped = oversized(inputs.scenario, opts)
        if len(skipped) < pairs:
            opts.skip_oversized = True
            for K, D in skipped:
                warn(f"note: K={K} x D={D} needs {K * D} devices and scenario '{inputs.scenario.name}' has "
                     f"{len(inputs.scenario.devices)}: not run")
    plan_runs(inputs.profile, inputs.scenario, opts)  # every UserError before anything runs
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    header = _header(config, inputs)
    load0 = os.getloadavg()
    speed = session_speed(config, inputs, warn)
    rows, timelines = run_all(inputs.profile, inputs.profile_ref, inputs.scenario, inputs.scenario_ref, opts, out,
                              log=log, warn=warn, speed=speed)
    header.append(f"load average before {tuple(round(x, 2) for x in load0)}, "
                  f"after {tuple(round(x, 2) for x in os.getloadavg())}")
    if speed is not None:
        header.append(speed.line())
    if inputs.warning:
        header.append(inputs.warning)
    write_csv(rows, out / CSV_NAME)
    summary = summarize(rows, config.tolerance_pct)
    write_summary(out / "summary.json", summary, header, speed)
    write_report(out / "report.html", rows, summary, timelines, header)
    figures: list[Path] = []
    if config.figures:
        if summary.runs:
            figures = export_figures(config.figures, rows, summary, timelines)
        else:
            warn("no figures exported: no run was measured")
    return ValidationReport(rows=tuple(rows), summary=summary, header=tuple(header), csv_path=out / CSV_NAME,
                            summary_path=out / "summary.json", report_path=out / "report.html",
                            figure_paths=tuple(figures))


def _check_devices(config: ValidateConfig) -> None:
    """On CUDA, the largest run needs K·D GPUs of this machine."""
    if config.device != "cuda":
        return
    import torch

    need, have = config.processes, torch.cuda.device_count()
    if need > have:
        raise ConfigError("device", f" cuda: the largest run (K={max(config.stages)} x D={max(config.replicas)}) "
                                    f"needs {need} GPUs, this machine has {have}")


def _options(config: ValidateConfig) -> Options:
    """What :func:`~ddgsim.compare.rounds.run_all` takes: K, D and M sorted and distinct."""
    micro = tuple(sorted(set(config.micro_batches))) if config.micro_schedules else ()
    return Options(stages=sorted(set(config.stages)), schedules=list(config.schedules), splits=config.splits,
                   steps=config.steps, warmup=config.warmup, threads=config.threads, device=config.device,
                   trace=config.trace, tol_pct=config.tolerance_pct, repeats=config.repeats,
                   reference_every=config.reference_every,
                   micro_batches=micro or (2,), runtimes=config.runtimes, max_steal_pct=config.max_steal_pct,
                   replicas=tuple(sorted(set(config.replicas))), min_warmup_ms=config.warmup_ms, min_window_ms=config.window_ms)


def _header(config: ValidateConfig, inputs: Inputs) -> list[str]:
    """The lines saying how the runs are made."""
    scenario = inputs.scenario
    return [
        *([f"command: {config.command}"] if config.command else []),
        f"profile: {inputs.profile_path or '(measured, not cached)'} ({inputs.source}); "
        f"scenario: {inputs.scenario_ref} ({scenario.description})",
        f"{config.steps} steps per run (more where steps are short: at least {config.warmup_ms:g} ms dropped"
        f"{'' if config.warmup is None else ' unless --warmup'}, {config.window_ms:g} ms measured), median over the "
        f"iteration gaps after the first {'K' if config.warmup is None else config.warmup}; "
        f"{config.threads} thread(s) per stage process",
        *([inputs.contention] if inputs.contention else []),
    ]


def write_summary(path: Path, summary: Summary, header: Sequence[str], speed: SessionSpeed | None = None) -> None:
    """``summary.json``: the header, then the summary's figures (and the speed probe's readings)."""
    extra = {"session_speed": speed.to_json()} if speed is not None else {}
    path.write_text(json.dumps({"header": list(header), **summary.to_json(), **extra}, indent=1) + "\n")


def session_speed(config: ValidateConfig, inputs: Inputs, warn: Callable[[str], None]) -> SessionSpeed | None:
    """The speed probe of this validation (:mod:`ddgsim.compare.session`), or ``None``: not asked for, a
    profile without a measured whole step, or a model this process cannot build or run at the profile's
    input (a note says so)."""
    from ddgsim.models.registry import buildable

    prof = inputs.profile
    if not config.speed_probe:
        return None
    if not prof.whole_model_ms > 0 or not buildable(prof.model) or prof.device.split(":")[0] != config.device:
        warn(f"note: no speed probe: the profile of {prof.model} has no whole-model step measured on {config.device} "
             "to compare with")
        return None
    from ddgsim.errors import one_line
    from ddgsim.profile.probe import SpeedProbe

    try:
        probe = SpeedProbe(prof)
    except Exception as exc:  # a side measurement: the validation goes on without it
        warn(f"note: no speed probe: {prof.model} does not run at the profile's input "
             f"({one_line(f'{type(exc).__name__}: {exc}')})")
        return None
    return SessionSpeed(read=probe.read, profile_ms=prof.whole_model_ms)

