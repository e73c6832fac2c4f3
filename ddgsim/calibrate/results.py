"""What one calibration measured (:class:`Calibration`), and the statistics that reduce its
repetitions: the link's fit (:func:`fit_link`), the all-reduce's trimmed mean, and the all-reduce
next to what the fitted link predicts (:func:`allreduce_check`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ddgsim.calibrate.overhead_probe import ProbeResult
from ddgsim.errors import UserError

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
    message_cpu_ms: tuple[float, ...] = ()
    """Per link size (``link.sizes``): the median CPU time one message of the ping-pong cost each of its
    two processes (half a process's CPU time per round trip), ms; empty: not measured (NCCL, where
    the GPU moves the bytes and the host's CPU time is its wait)."""

    @property
    def concurrent_speed(self) -> float:
        """compute_alone / compute_together: < 1 when processes slow each other down."""
        return self.compute_alone_ms / self.compute_together_ms


def message_cpu_curve(sizes: Sequence[int], cpu_ms: Sequence[float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The ``[overheads]`` curve of a message's CPU cost beyond the smallest (``message_sizes``,
    ``message_cpu_us``, :func:`ddgsim.predict.overheads.message_cpu_ms`) from the ping-pong's CPU time
    per size: each size's figure less the least figure (a small message's, whose fixed cost the
    probe's ``send_us`` and ``receive_us`` already hold; the least, as noise only adds CPU time),
    and never above a larger size's (a noisy small size does not raise the curve: the least of it
    and every larger size's figure)."""
    if len(sizes) != len(cpu_ms) or not sizes:
        raise ValueError(f"one CPU figure per size is needed, got {len(sizes)} sizes and {len(cpu_ms)} figures")
    order = np.argsort(sizes)
    x = np.asarray(sizes, dtype=np.float64)[order]
    y = np.asarray(cpu_ms, dtype=np.float64)[order]
    y = y - float(np.min(y))
    y = np.minimum.accumulate(y[::-1])[::-1]
    return tuple(float(v) for v in x), tuple(round(1e3 * float(v), 1) for v in y)


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
