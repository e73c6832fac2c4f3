"""Calibrate this machine: measure the link between two local processes and write a scenario.

Two processes talk through the backend the executor uses (gloo between CPU
processes, NCCL between two GPUs) and measure:

* **the link**: a blocking ping-pong of float32 tensors of several sizes; the
  one-way time of a size is half the median round trip. ``time = latency +
  bytes / bandwidth`` is fitted by non-negative least squares, each size weighted
  by 1/time so that 4-byte and 32-MiB messages count alike (an unweighted fit is
  decided by the largest messages and leaves the latency to noise).
* **an all-reduce** (``dist.all_reduce`` of float32 tensors between the two processes,
  the backend's own algorithm) at every power of two between the smallest and largest
  size (:func:`allreduce_sizes`), repetitions interleaved over the sizes: per size the mean
  of the middle 80 % (:func:`trimmed_mean`), the median and the spread. The means are written
  as the scenario's ``[[allreduce]]`` curve, which the timing models use for all-reduces among
  two of its devices (measured curves, as Alpa's profiler does, because the link model
  misses what two processes of one machine do when both send at once: they share the
  cores and memory that copy the bytes). The comments compare them with what the fitted
  link would predict (:func:`allreduce_check`, ring of 2 = 2·latency + bytes/bandwidth).
* **the executor's fixed cost per action** (``[overheads]``, :mod:`ddgsim.predict.overheads`):
  the executor itself runs a probe model whose units cost almost nothing
  (:mod:`ddgsim.calibrate.overhead_probe`), and what its actions cost beyond the probe's
  profile is fitted per F, B, U, per message and per action of its loop;
* **the CPU a message's bytes cost** (gloo only): the ping-pong's process CPU time per size, half
  a round trip's per message and end; beyond the least figure (a small message's) it becomes ``[overheads]``'s
  ``message_sizes`` / ``message_cpu_us`` (:func:`~ddgsim.calibrate.results.message_cpu_curve`);
* the slowdown of a compute kernel when every process computes at once instead of one alone
  (shared memory bandwidth, caches, turbo): ``concurrent_speed``; and, as a comment, the
  fixed cost of one ``F, B, U`` step of :class:`ddgsim.execute.stage.StageWorker` on a
  one-parameter stage, timed in-process.

:func:`scenario_toml` turns the result into a file :func:`ddgsim.predict.scenario.load_scenario`
reads: ``N`` devices of speed 1.0 (the profile is measured on one such device,
alone) on one host, a full mesh of the fitted link, the measured all-reduce curve,
and comments saying how and when.
``benchmarks/measure_gloo.py`` prints the same measurement as a table.

The measuring is split by idea: :mod:`~ddgsim.calibrate.results` (what a calibration holds, the
link fit and the all-reduce's statistics), :mod:`~ddgsim.calibrate.two_process` (the two
measuring processes), :mod:`~ddgsim.calibrate.scenario_file` (the scenario it writes); this
module runs them, and every name is importable from here too.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from ddgsim.calibrate.results import (
    SIZES,
    TRIM,
    WARMUP,
    AllreduceSample,
    Calibration,
    LinkFit,
    allreduce_check,
    allreduce_sizes,
    fit_link,
    message_cpu_curve,
    trimmed_mean,
)
from ddgsim.calibrate.scenario_file import HOST, scenario_toml, write_scenario
from ddgsim.calibrate.two_process import free_port, measure_allreduce, worker
from ddgsim.errors import UserError
from ddgsim.profile.machine import loadavg

__all__ = [
    "HOST", "SIZES", "TRIM", "WARMUP", "AllreduceSample", "Calibration", "LinkFit", "allreduce_check",
    "allreduce_sizes", "fit_link", "measure", "measure_allreduce", "message_cpu_curve", "scenario_toml", "trimmed_mean",
    "write_scenario",
]


def _memory_gib(device: str, devices: int) -> float:
    if device == "cuda":
        import torch

        return min(torch.cuda.get_device_properties(i).total_memory for i in range(devices)) / 2**30
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return math.inf
    return total / devices / 2**30


def measure(device: str = "cpu", sizes: Sequence[int] = SIZES, reps: int = 20, threads: int = 1,
            devices: int | None = None, overheads: bool = True) -> Calibration:
    """Spawn two processes on ``device`` and measure; see the module docstring. With ``overheads``,
    then run the executor on the probe model to measure its fixed costs per action
    (:mod:`ddgsim.calibrate.overhead_probe`, about 45 s more on CPU)."""
    import torch
    import torch.multiprocessing as mp

    if device not in ("cpu", "cuda"):
        raise UserError(f"--device must be cpu or cuda, got '{device}'")
    if reps < 1:
        raise UserError(f"--reps must be >= 1, got {reps}")
    if threads < 1:
        raise UserError(f"--threads must be >= 1, got {threads}")
    sizes = sorted(set(int(s) for s in sizes))
    if len(sizes) < 2 or sizes[0] < 4:
        raise UserError(f"--sizes needs at least 2 different sizes >= 4 bytes, got {sizes}")
    if device == "cuda":
        if not torch.cuda.is_available() or torch.cuda.device_count() < 2:
            n = torch.cuda.device_count() if torch.cuda.is_available() else 0
            raise UserError(f"--device cuda measures NCCL between two GPUs, but this machine has {n}")
        backend = "nccl"
        count = devices or torch.cuda.device_count()
        if count > torch.cuda.device_count():
            raise UserError(f"--devices {count}: this machine has {torch.cuda.device_count()} CUDA devices, "
                            "and the scenario describes the GPUs measured here")
    else:
        backend = "gloo"
        count = devices or max(2, os.cpu_count() or 2)
    if count < 2:
        raise UserError(f"--devices must be >= 2 (a link needs two ends), got {count}")
    load0 = loadavg()
    t0 = time.perf_counter()
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.spawn(worker, args=(free_port(), backend, sizes, reps, threads, queue), nprocs=2,  # type: ignore[attr-defined,no-untyped-call]
             join=True)
    res = queue.get()
    link = fit_link(sizes, [res["link"][n] for n in sizes])
    meta = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(), "cpu": _cpu_name(), "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
        "torch_version": torch.__version__, "python_version": platform.python_version(),
        "loadavg_before": load0, "loadavg_after": loadavg(),
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    cal = Calibration(device=device, backend=backend, devices=count, memory_gib=_memory_gib(device, count),
                      link=link, step_overhead_ms=res["overhead"], compute_alone_ms=res["alone"],
                      compute_together_ms=res["together"], reps=reps, threads=threads, meta=meta,
                      message_cpu_ms=tuple(res["link_cpu"][n] for n in sizes) if backend == "gloo" else (),
                      allreduce=tuple(AllreduceSample(nbytes=n, median_ms=statistics.median(t), mean_ms=trimmed_mean(t),
                                                      low_ms=min(t), high_ms=max(t)) for n, t in res["allreduce"].items()))
    if not overheads:
        return cal
    import tomllib

    from ddgsim.calibrate import overhead_probe
    from ddgsim.predict.scenario import from_dict

    here = from_dict(tomllib.loads(scenario_toml(cal)), "local")  # this machine, as measured so far
    probe = overhead_probe.measure(here, device, threads, reps=reps)
    if cal.message_cpu_ms:  # what a message's bytes cost each end, beyond the probe's small ones
        curve_sizes, curve_us = message_cpu_curve(link.sizes, cal.message_cpu_ms)
        probe = replace(probe, overheads=replace(probe.overheads, message_sizes=curve_sizes, message_cpu_us=curve_us))
    meta = {**meta, "loadavg_after": loadavg(), "wall_s": round(time.perf_counter() - t0, 1)}
    return replace(cal, overheads=probe, meta=meta)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:  # pragma: no cover
        pass
    return platform.processor() or "unknown"
