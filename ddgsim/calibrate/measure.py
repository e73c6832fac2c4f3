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
* the slowdown of a compute kernel when every process computes at once instead of one alone
  (shared memory bandwidth, caches, turbo): ``concurrent_speed``; and, as a comment, the
  fixed cost of one ``F, B, U`` step of :class:`ddgsim.execute.stage.StageWorker` on a
  one-parameter stage, timed in-process.

:func:`scenario_toml` turns the result into a file :func:`ddgsim.predict.scenario.load_scenario`
reads: ``N`` devices of speed 1.0 (the profile is measured on one such device,
alone) on one host, a full mesh of the fitted link, the measured all-reduce curve,
and comments saying how and when.
``benchmarks/measure_gloo.py`` prints the same measurement as a table.
"""

from __future__ import annotations

import math
import os
import platform
import socket
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ddgsim.calibrate.overhead_probe import ProbeResult
from ddgsim.errors import UserError
from ddgsim.profile.machine import loadavg

SIZES = (4, 1024, 16 * 1024, 256 * 1024, 1 << 20, 4 << 20, 8 << 20, 32 << 20)
"""Message sizes in bytes (float32 tensors: multiples of 4)."""


TRIM = 0.1
"""Share of the repetitions cut at each end for the all-reduce's mean."""


def trimmed_mean(times: Sequence[float]) -> float:
    """Mean of ``times`` without the ``TRIM`` share at each end (scipy's ``trim_mean``)."""
    from scipy.stats import trim_mean

    return float(trim_mean(np.asarray(times, dtype=np.float64), TRIM))


def allreduce_sizes(sizes: Sequence[int]) -> list[int]:
    """The all-reduce's sizes: every power of two between the smallest and the largest link size,
    and both ends (dense, so that the scenario's curve interpolates over short spans)."""
    lo, hi = min(sizes), max(sizes)
    return sorted({lo, hi} | {2**i for i in range(2, 64) if lo <= 2**i <= hi})

WARMUP = 3
"""Untimed repetitions per size before the timed ones."""


@dataclass(frozen=True, kw_only=True)
class LinkFit:
    """``time = latency + bytes / bandwidth``, fitted to one-way medians."""

    latency_us: float
    """Fitted per-message latency (≥ 0), µs."""
    bandwidth_gb_s: float
    """Fitted bandwidth (1e9 bytes/s); ``inf`` when the slope is 0."""
    sizes: tuple[int, ...]
    """Message sizes measured, bytes."""
    one_way_ms: tuple[float, ...]
    """Median one-way time of each size, ms."""
    max_rel_residual: float
    """Largest |fit − measured| / measured over the sizes."""

    def predict_ms(self, nbytes: float) -> float:
        return self.latency_us * 1e-3 + nbytes / (self.bandwidth_gb_s * 1e6)


def fit_link(sizes: Sequence[int], one_way_ms: Sequence[float]) -> LinkFit:
    """Non-negative least squares of ``t = a + n·b`` with weights 1/t (relative errors)."""
    from scipy.optimize import nnls

    if len(sizes) != len(one_way_ms) or len(sizes) < 2:
        raise UserError(f"the link fit needs at least 2 sizes with one time each, got {len(sizes)} sizes")
    if len(set(sizes)) < 2:
        raise UserError("the link fit needs at least 2 different message sizes")
    n = np.asarray(sizes, dtype=np.float64)
    t = np.asarray(one_way_ms, dtype=np.float64)
    if not np.all(np.isfinite(t)) or np.any(t <= 0):
        raise UserError(f"measured times must be finite and > 0, got {list(one_way_ms)}")
    w = 1.0 / t
    a_mat = np.stack([np.ones_like(n), n], axis=1) * w[:, None]
    (a, b), _ = nnls(a_mat, t * w)
    fit = a + b * n
    bandwidth = 1.0 / (b * 1e6) if b > 0 else math.inf
    return LinkFit(latency_us=float(a * 1e3), bandwidth_gb_s=float(bandwidth),
                   sizes=tuple(int(s) for s in sizes), one_way_ms=tuple(float(x) for x in t),
                   max_rel_residual=float(np.max(np.abs(fit - t) / t)))


@dataclass(frozen=True, kw_only=True)
class AllreduceSample:
    """A measured 2-process all-reduce of one size."""

    nbytes: int
    median_ms: float
    """Median over the repetitions, ms."""
    mean_ms: float
    """Mean of the middle 80 % of the repetitions (``TRIM`` cut at each end), ms: what the
    scenario's curve holds. On a shared VM the time can be bimodal (here about half the
    all-reduces once took 2-3 ms instead of 0.4), and a median then flips between the modes
    from one measurement to the next while a run's throughput follows the mean."""
    low_ms: float
    """Fastest repetition, ms."""
    high_ms: float
    """Slowest repetition, ms."""


@dataclass(frozen=True, kw_only=True)
class Calibration:
    """Everything one calibration measured on this machine."""

    device: str
    """``cpu`` or ``cuda``."""
    backend: str
    """``gloo`` or ``nccl``."""
    devices: int
    """Devices written to the scenario (CPU: cores; CUDA: GPUs)."""
    memory_gib: float
    """Memory per device written to the scenario, GiB."""
    link: LinkFit
    step_overhead_ms: float
    """Median fixed cost of one executor ``F, B, U`` step on a one-parameter stage, ms."""
    compute_alone_ms: float
    """Median time of the reference kernel with one process computing, ms."""
    compute_together_ms: float
    """The same kernel while both processes compute at once, ms."""
    reps: int
    """Timed repetitions per measurement (medians over these)."""
    threads: int
    """torch threads per process."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Host, versions, date, load average, wall time."""
    allreduce: tuple[AllreduceSample, ...] = ()
    """The 2-process all-reduce per size (empty when not measured)."""
    overheads: ProbeResult | None = None
    """The executor's fixed costs per action, measured on the probe model
    (:mod:`ddgsim.calibrate.overhead_probe`); ``None``: not measured."""

    @property
    def concurrent_speed(self) -> float:
        """compute_alone / compute_together: < 1 when processes slow each other down."""
        return self.compute_alone_ms / self.compute_together_ms


# ---------------------------------------------------------------- measuring (two processes)

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _timed(ops: Mapping[int, tuple[Callable[[], None], Callable[[], None] | None]], reps: int,
           dev: Any) -> dict[int, list[float]]:
    """ms of each of ``reps`` runs of every ``op`` (per key: ``(op, after)``) after ``WARMUP``
    untimed ones, interleaved: each repetition runs every op once, so that a slow stretch of a
    shared machine hits every size alike instead of a few sizes' whole medians. Every run starts
    together on all ranks (a barrier) and is timed to the device's completion; ``after`` runs
    untimed after it."""
    import torch.distributed as dist

    times: dict[int, list[float]] = {key: [] for key in ops}
    for i in range(reps + WARMUP):
        for key, (op, after) in ops.items():
            dist.barrier()
            _sync(dev)
            t0 = time.perf_counter()
            op()
            _sync(dev)
            if i >= WARMUP:
                times[key].append((time.perf_counter() - t0) * 1e3)
            if after is not None:
                after()
    return times


def _ping_pong(rank: int, sizes: Sequence[int], reps: int, dev: Any) -> dict[int, float]:
    """Median one-way ms per size; ranks 0 and 1 bounce a tensor, the others wait."""
    import torch
    import torch.distributed as dist

    def bounce(buf: torch.Tensor) -> Callable[[], None]:
        def op() -> None:
            if rank == 0:
                dist.send(buf, 1)
                dist.recv(buf, 1)
            elif rank == 1:
                dist.recv(buf, 0)
                dist.send(buf, 0)
        return op

    ops = {n: (bounce(torch.zeros(max(1, n // 4), dtype=torch.float32, device=dev)), None) for n in sizes}
    return {n: statistics.median(t) / 2 for n, t in _timed(ops, reps, dev).items()}


def _allreduce(sizes: Sequence[int], reps: int, dev: Any) -> dict[int, list[float]]:
    """ms of every timed ``dist.all_reduce`` per size (both processes take part)."""
    import torch
    import torch.distributed as dist

    def ops(buf: torch.Tensor) -> tuple[Callable[[], None], Callable[[], None]]:
        def reduce() -> None:
            dist.all_reduce(buf)

        def refill() -> None:
            buf.fill_(1.0)  # keep the values finite

        return reduce, refill

    return _timed({n: ops(torch.ones(max(1, n // 4), dtype=torch.float32, device=dev)) for n in sizes}, reps, dev)


def allreduce_check(cal: Calibration) -> list[dict[str, float]]:
    """Per measured size: measured median and spread next to the prediction of
    ``collective.allreduce_ms`` (ring) over the calibrated link between two devices."""
    from ddgsim.predict.collective import allreduce_ms
    from ddgsim.predict.scenario import Device, Link, Scenario

    sc = Scenario(name="calibrated", devices=(Device(name="a"), Device(name="b")),
                  links=(Link(src="a", dst="b", bandwidth_gb_s=cal.link.bandwidth_gb_s,
                              latency_us=cal.link.latency_us),))
    rows = []
    for x in cal.allreduce:
        pred = float(allreduce_ms(sc, ["a", "b"], x.nbytes, "ring"))
        rows.append({"bytes": x.nbytes, "measured_ms": x.mean_ms, "median_ms": x.median_ms, "low_ms": x.low_ms,
                     "high_ms": x.high_ms, "predicted_ms": pred,
                     "error_pct": 100 * (pred - x.mean_ms) / x.mean_ms if x.mean_ms > 0 else math.nan})
    return rows


def _sync(dev: Any) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _step_overhead(reps: int, dev: Any) -> float:
    """Median ms of F, B, U through the executor's StageWorker on a one-parameter stage."""
    import torch
    from torch import nn

    from ddgsim.execute.stage import OptimConfig, StageWorker

    module = nn.Linear(1, 1).to(dev)
    worker = StageWorker(module, index=0, num_stages=1, delay=0, loss_fn=lambda o, y: (o - y).pow(2).mean(),
                         optim=OptimConfig(lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4))
    x = torch.ones(1, 1, device=dev)
    times = []
    for t in range(reps + WARMUP):
        _sync(dev)
        t0 = time.perf_counter()
        worker.forward(t, x, x)
        worker.backward(t)
        worker.update(t)
        _sync(dev)
        if t >= WARMUP:
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def _kernel(reps: int, dev: Any) -> float:
    """Median ms of a conv forward+backward (ResNet-like block at batch 16)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, padding=1)).to(dev)
    x = torch.randn(16, 16, 32, 32, device=dev)
    times = []
    for i in range(reps + WARMUP):
        _sync(dev)
        t0 = time.perf_counter()
        conv(x).sum().backward()
        _sync(dev)
        if i >= WARMUP:
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


@contextmanager
def _pair(rank: int, port: int, backend: str, threads: int) -> Iterator[Any]:
    """One of the two measuring processes: its torch threads, its device (yielded) and the
    2-process group, destroyed on the way out."""
    import torch
    import torch.distributed as dist

    torch.set_num_threads(threads)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dev = torch.device(f"cuda:{rank}") if backend == "nccl" else torch.device("cpu")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group(backend, rank=rank, world_size=2)
    try:
        yield dev
    finally:
        dist.destroy_process_group()


def _worker(rank: int, port: int, backend: str, sizes: Sequence[int], reps: int, threads: int,
            queue: Any) -> None:
    import torch.distributed as dist

    with _pair(rank, port, backend, threads) as dev:
        link = _ping_pong(rank, sizes, reps, dev)
        dist.barrier()
        reduce = _allreduce(allreduce_sizes(sizes), reps, dev)
        dist.barrier()
        alone = _kernel(reps, dev) if rank == 0 else 0.0  # rank 1 waits in the barrier below
        dist.barrier()
        together = _kernel(reps, dev)
        dist.barrier()
        overhead = _step_overhead(reps, dev)
        if rank == 0:
            queue.put({"link": link, "alone": alone, "together": together, "overhead": overhead,
                       "allreduce": reduce})
        dist.barrier()


def _allreduce_worker(rank: int, port: int, sizes: Sequence[int], reps: int, rounds: int, threads: int,
                      queue: Any) -> None:
    import torch.distributed as dist

    with _pair(rank, port, "gloo", threads) as dev:
        out = [_allreduce(sizes, reps, dev) for _ in range(rounds)]
        if rank == 0:
            queue.put(out)
        dist.barrier()


def measure_allreduce(sizes: Sequence[int], reps: int, rounds: int, threads: int = 1) -> list[dict[int, list[float]]]:
    """Only the 2-process gloo all-reduce of calibrate, in ``rounds`` rounds (within a round the
    repetitions are interleaved over the sizes): per round, the ms of every timed repetition per size."""
    import torch.multiprocessing as mp

    queue = mp.get_context("spawn").SimpleQueue()
    mp.spawn(_allreduce_worker, args=(_free_port(), list(sizes), reps, rounds, threads, queue),  # type: ignore[attr-defined,no-untyped-call]
             nprocs=2, join=True)
    result: list[dict[int, list[float]]] = queue.get()
    return result


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
    mp.spawn(_worker, args=(_free_port(), backend, sizes, reps, threads, queue), nprocs=2,  # type: ignore[attr-defined,no-untyped-call]
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
                      allreduce=tuple(AllreduceSample(nbytes=n, median_ms=statistics.median(t), mean_ms=trimmed_mean(t),
                                                      low_ms=min(t), high_ms=max(t)) for n, t in res["allreduce"].items()))
    if not overheads:
        return cal
    import tomllib

    from ddgsim.calibrate import overhead_probe
    from ddgsim.predict.scenario import from_dict

    here = from_dict(tomllib.loads(scenario_toml(cal)), "local")  # this machine, as measured so far
    probe = overhead_probe.measure(here, device, threads, reps=reps)
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


# ---------------------------------------------------------------- writing the scenario

HOST = "local"
"""The ``host`` of the calibrated devices (one machine), which its ``[[allreduce]]`` names."""


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _num(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:.6g}"


def scenario_toml(cal: Calibration, name: str = "local", command: str = "") -> str:
    """The scenario file text: devices, a full mesh of the fitted link, comments on how and when."""
    link, m = cal.link, cal.meta
    prefix = "gpu" if cal.device == "cuda" else "cpu"
    lines = [
        f"# Calibrated by `{command or 'python -m ddgsim calibrate'}`",
        f"# on {m.get('date')} ({m.get('host')}: {m.get('gpu') or m.get('cpu')}, {m.get('cpu_count')} CPUs,",
        f"# torch {m.get('torch_version')}, python {m.get('python_version')}), {cal.threads} thread(s) per process,",
        f"# load average before {m.get('loadavg_before')} and after {m.get('loadavg_after')} (a busy machine skews",
        "# every figure below; calibrate on a quiet one).",
        "#",
        f"# Link: two processes, {cal.backend}, blocking send/recv ping-pong of float32 tensors; one-way time",
        f"# = half the median round trip over {cal.reps} repetitions ({WARMUP} untimed first). Fit of",
        "# time = latency + bytes / bandwidth by non-negative least squares, weights 1/time:",
        "#        bytes   one-way ms     fit ms",
    ]
    for n, t in zip(link.sizes, link.one_way_ms, strict=True):
        lines.append(f"# {n:>12} {t:>12.4f} {link.predict_ms(n):>10.4f}")
    lines += [
        f"# latency {link.latency_us:.2f} us, bandwidth {link.bandwidth_gb_s:.3f} GB/s, largest relative "
        f"residual {100 * link.max_rel_residual:.1f}%.",
        "# Measured between the first two devices only; every pair is assumed to be the same.",
        "#",
        *_allreduce_comment(cal),
        "# For reference (the [overheads] table below is what the timing models use):",
        "#   StageWorker F+B+U in-process on a one-parameter stage (SGD momentum 0.9,",
        f"#   Nesterov, weight decay 5e-4): {cal.step_overhead_ms:.4f} ms",
        f"#   reference kernel (conv block fwd+bwd, batch 16): {cal.compute_alone_ms:.3f} ms with one process",
        f"#   computing, {cal.compute_together_ms:.3f} ms with two at once -> speed {cal.concurrent_speed:.3f} when",
        "#   stages compute concurrently. Device speeds below stay 1.0 (relative to a profile measured on",
        "#   one device alone); on CPU the devices share one host, and the simulator slows each by",
        "#   concurrent_speed (at most 1) for the share of its compute that overlaps the other's.",
        f"name = {_toml_str(name)}",
        "description = " + _toml_str(
            f"calibrated {m.get('date')}: {cal.devices} x {cal.device}, {cal.backend}, "
            f"{link.latency_us:.1f} us + bytes / {link.bandwidth_gb_s:.2f} GB/s; step overhead "
            f"{cal.step_overhead_ms:.3f} ms; concurrent compute speed {cal.concurrent_speed:.3f}"),
    ]
    if cal.device == "cpu":
        lines.append(f"concurrent_speed = {min(1.0, round(cal.concurrent_speed, 3))}")
    lines.append("")
    if cal.overheads is not None:
        lines += _overheads_toml(cal.overheads)
    names = [f"{prefix}{i}" for i in range(cal.devices)]
    for d in names:
        lines += ["[[devices]]", f"name = {_toml_str(d)}", "speed = 1.0", f"memory_gib = {_num(cal.memory_gib)}",
                  f"host = {_toml_str(HOST)}", ""]
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            lines += ["[[links]]", f"src = {_toml_str(a)}", f"dst = {_toml_str(b)}",
                      f"bandwidth_gb_s = {_num(link.bandwidth_gb_s)}", f"latency_us = {link.latency_us:.3f}",
                      "bidirectional = true", ""]
    if len(cal.allreduce) >= 2:  # a curve (calibrate itself always measures several sizes)
        lines += ["[[allreduce]]", f"host = {_toml_str(HOST)}", "replicas = 2",
                  "sizes = [" + ", ".join(str(x.nbytes) for x in cal.allreduce) + "]",
                  "ms = [" + ", ".join(f"{x.mean_ms:.6g}" for x in cal.allreduce) + "]", ""]
    return "\n".join(lines)


def _overheads_toml(probe: ProbeResult) -> list[str]:
    """The ``[overheads]`` table and how it was measured (:mod:`ddgsim.calibrate.overhead_probe`)."""
    from ddgsim.calibrate.overhead_probe import PROBE_BATCH

    lines = [
        "# The executor's fixed cost per action beyond the profile's compute (ddgsim.predict.overheads),",
        f"# measured by running the executor on a probe model (a 64-16-8-10 MLP, batch {PROBE_BATCH}) whose",
        "# units cost almost nothing, in situ profile subtracted (ddgsim.calibrate.overhead_probe):",
        f"#   the loop's cost per action {probe.per_action_us:.1f} us, per message posted or taken "
        f"{probe.per_message_us:.1f} us",
        f"#   (largest residual of the fit {probe.residual_us:.1f} us); {100 * probe.tail_share:.0f}% of the loop's "
        "cost comes after",
        "#   the action's message (tail_us): the share whose predictions of the probe runs were closest:",
    ]
    for name, measured, predicted in probe.runs:
        lines.append(f"#   {name:<14} measured {measured:.3f} ms, predicted {predicted:.3f} ms "
                     f"({100 * (predicted - measured) / measured:+.1f}%)")
    over = probe.overheads
    lines.append("[overheads]")
    lines += [f"{k} = {v:g}" for k, v in over.as_dict().items() if k != "alone"]
    if over.alone is not None:
        lines += ["", "# a job of one process (alone on the host; its optimizer step is the profile's whole step)",
                  "[overheads.alone]"]
        lines += [f"{k} = {v:g}" for k, v in over.alone.as_dict().items()]
    return [*lines, ""]


def _allreduce_comment(cal: Calibration) -> list[str]:
    if not cal.allreduce:
        return []
    lines = [f"# All-reduce of 2 processes ({cal.backend} dist.all_reduce, float32) over {cal.reps} repetitions",
             f"# interleaved over the sizes: mean of the middle {100 - 200 * TRIM:g}%, median (fastest-slowest),",
             "# and what the link above would predict (a ring of 2). The means are the [[allreduce]] table",
             "# at the end: an all-reduce among 2 of these devices takes them (interpolated), not the link model.",
             "#        bytes    mean ms  median ms (spread)          link model ms   error"]
    for r in allreduce_check(cal):
        lines.append(f"# {int(r['bytes']):>12} {r['measured_ms']:>10.4f} {r['median_ms']:>10.4f} "
                     f"({r['low_ms']:.4f}-{r['high_ms']:.4f}) {r['predicted_ms']:>12.4f} {r['error_pct']:>+7.1f}%")
    return [*lines, "#"]


def write_scenario(cal: Calibration, path: Path, name: str | None = None, command: str = "") -> None:
    """Write atomically, then load it back with the simulator's loader (a bad file never stays)."""
    from ddgsim.predict.scenario import load_file

    text = scenario_toml(cal, name or path.stem, command)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    try:
        load_file(tmp)
    except UserError:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
