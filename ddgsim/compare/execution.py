"""One execution of a plan, measured: launch it (the executor or torch.distributed.pipelining) and
read its step time and peak memory from its metrics."""

from __future__ import annotations

import shutil
import statistics
import sys
from pathlib import Path
from typing import Any, NamedTuple

from ddgsim.compare.options import Options
from ddgsim.errors import UserError, one_line
from ddgsim.execute.launch import ExecutionFailed, run_plan
from ddgsim.execute.measure import load_metrics, measured_step_ms


class Measured(NamedTuple):
    """What one execution measured."""

    step_ms: float
    """:func:`ddgsim.execute.measure.measured_step_ms`."""
    memory_mib: tuple[float, ...]
    """:func:`measured_memory`."""
    busy_ms: tuple[float, ...] = ()
    """:func:`measured_busy`."""


def measured_memory(metrics: dict[str, Any]) -> tuple[float, ...]:
    """Peak memory per stage (its largest replica), MiB, from a run's metrics; empty if not measured."""
    most: dict[int, float] = {}
    for st in metrics["per_stage"]:
        b = st.get("peak_memory_bytes")
        if b is None:
            return ()
        most[st["stage"]] = max(most.get(st["stage"], 0.0), b / 2**20)
    return tuple(most[k] for k in sorted(most))


def measured_busy(metrics: dict[str, Any], warmup: int) -> tuple[float, ...]:
    """Per stage, the time inside its F, B and U actions per iteration (median over the iterations
    after the first ``warmup``; the mean over a stage's replicas), ms; empty where the runtime does
    not time its actions (``torch.distributed.pipelining``)."""
    per: dict[int, list[float]] = {}
    for st in metrics["per_stage"]:
        if not all(key in st for key in ("forward_ms", "backward_ms", "update_ms")):
            return ()
        busy = [f + b + u for f, b, u in zip(st["forward_ms"], st["backward_ms"], st["update_ms"], strict=True)]
        if not busy:
            return ()
        per.setdefault(st["stage"], []).append(float(statistics.median(busy[min(warmup, len(busy) - 1):])))
    return tuple(statistics.fmean(per[k]) for k in sorted(per))


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


def attempt(plan: Path, opts: Options, metrics_path: Path, trace_path: Path | None, steps: int, warmup: int,
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
            run_plan(plan, steps, opts.threads, metrics_path, trace_path, opts.device, log_dir=logs)
        shutil.rmtree(logs, ignore_errors=True)  # kept only where a process failed
        if not metrics_path.is_file():
            return f"the executor exited 0 but wrote no {metrics_path.name}"
        data = load_metrics(metrics_path)
        return Measured(measured_step_ms(data, warmup), measured_memory(data), measured_busy(data, warmup))
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
