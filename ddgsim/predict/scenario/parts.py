"""The parts of a scenario, each checked as it is built: a :class:`Device`, a :class:`Link` and
a measured all-reduce curve (:class:`AllreduceCurve`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ddgsim.errors import UserError


def check_number(what: str, value: Any, *, minimum: float, strict: bool, allow_inf: bool) -> None:
    """:class:`UserError` unless ``value`` is a number above (``strict``) or at least ``minimum``,
    finite unless ``allow_inf``; ``what`` names the field."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
    if ok:
        ok = (value > minimum if strict else value >= minimum) and (allow_inf or math.isfinite(value))
    if not ok:
        rel = ">" if strict else ">="
        inf = " (inf allowed)" if allow_inf else ""
        raise UserError(f"{what} must be a number {rel} {minimum:g}{inf}, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class Device:
    """One compute device (a GPU, or a single-thread CPU process)."""

    name: str
    """Unique name, e.g. ``gpu0``; plans refer to devices by this name."""
    speed: float = 1.0
    """Relative to the profiled device: unit time = profiled time / speed."""
    memory_gib: float = math.inf
    """Memory available to one stage, in GiB (2**30 bytes); ``inf`` = unlimited."""
    host: str = ""
    """Devices with the same non-empty host are on one machine: they share its memory system
    (while two of them compute at once each runs at the scenario's ``concurrent_speed``), and
    the scenario's ``[[allreduce]]`` curve for that host times their all-reduces."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise UserError(f"field 'name' of a device must be a non-empty string, got {self.name!r}")
        if not isinstance(self.host, str):
            raise UserError(f"field 'host' of device '{self.name}' must be a string, got {self.host!r}")
        check_number(f"field 'speed' of device '{self.name}'", self.speed, minimum=0, strict=True, allow_inf=False)
        check_number(f"field 'memory_gib' of device '{self.name}'", self.memory_gib, minimum=0, strict=True, allow_inf=True)

    @property
    def memory_bytes(self) -> float:
        return self.memory_gib * 2**30


@dataclass(frozen=True, kw_only=True)
class Link:
    """A point-to-point link between two devices."""

    src: str
    """Name of the sending device."""
    dst: str
    """Name of the receiving device."""
    bandwidth_gb_s: float
    """Effective bandwidth in GB/s (1e9 bytes per second); ``inf`` allowed."""
    latency_us: float = 0.0
    """Per-message latency in µs (occupies the link like the payload does)."""
    bidirectional: bool = True
    """True: one independent link per direction, same figures."""

    def __post_init__(self) -> None:
        for key in ("src", "dst"):
            value = getattr(self, key)
            if not isinstance(value, str) or not value:
                raise UserError(f"field '{key}' of a link must be a device name, got {value!r}")
        what = f"of link {self.src}->{self.dst}"
        if self.src == self.dst:
            raise UserError(f"field 'dst' {what} must differ from 'src'")
        check_number(f"field 'bandwidth_gb_s' {what}", self.bandwidth_gb_s, minimum=0, strict=True, allow_inf=True)
        check_number(f"field 'latency_us' {what}", self.latency_us, minimum=0, strict=False, allow_inf=False)
        if not isinstance(self.bidirectional, bool):
            raise UserError(f"field 'bidirectional' {what} must be true or false, got {self.bidirectional!r}")

    def hop_ms(self, nbytes: float) -> float:
        """Time to move ``nbytes`` over this link, in ms."""
        return self.latency_us * 1e-3 + nbytes / (self.bandwidth_gb_s * 1e6)


@dataclass(frozen=True, kw_only=True)
class AllreduceCurve:
    """A measured all-reduce among ``replicas`` devices of one ``host`` (``ddgsim calibrate``), by size.

    Used instead of the link model for any ``replicas`` distinct devices of that host (all pairs
    of a host's devices are taken to be alike, as calibrate assumes). Between two measured sizes
    the time is interpolated linearly in bytes; below the smallest it is the smallest's time;
    beyond the largest the last segment's slope goes on. This is the backend's own algorithm as
    measured (gloo's or NCCL's), so the ``ring``/``tree`` choice does not apply to it.
    """

    host: str
    """The ``host`` of the devices it was measured on."""
    replicas: int
    """Number of processes that took part."""
    sizes: tuple[float, ...]
    """Message sizes in bytes, increasing."""
    ms: tuple[float, ...]
    """Measured time per size (calibrate writes the mean of the middle 80 %), in ms."""

    def __post_init__(self) -> None:
        what = f"[[allreduce]] of host '{self.host}'"
        if not isinstance(self.host, str) or not self.host:
            raise UserError(f"field 'host' of an [[allreduce]] must be a non-empty string, got {self.host!r}")
        r = self.replicas
        if isinstance(r, bool) or not isinstance(r, int) or r < 2:
            raise UserError(f"field 'replicas' of {what} must be an integer >= 2, got {r!r}")
        for key in ("sizes", "ms"):
            values = getattr(self, key)
            if not isinstance(values, (list, tuple)) or len(values) < 2:
                raise UserError(f"field '{key}' of {what} must list at least 2 numbers, got {values!r}")
            for v in values:
                check_number(f"field '{key}' of {what}", v, minimum=0, strict=True, allow_inf=False)
            object.__setattr__(self, key, tuple(float(v) for v in values))
        if len(self.sizes) != len(self.ms):
            raise UserError(f"fields 'sizes' and 'ms' of {what} must have the same length, "
                            f"got {len(self.sizes)} and {len(self.ms)}")
        if any(b <= a for a, b in zip(self.sizes, self.sizes[1:], strict=False)):
            raise UserError(f"field 'sizes' of {what} must increase, got {list(self.sizes)}")

    def time_ms(self, nbytes: float | np.ndarray) -> np.ndarray:
        """Interpolated time (ms) of ``nbytes`` (a number or a numpy array)."""
        n = np.asarray(nbytes, dtype=np.float64)
        x, y = np.array(self.sizes), np.array(self.ms)
        slope = (y[-1] - y[-2]) / (x[-1] - x[-2])
        out: np.ndarray = np.where(n > x[-1], y[-1] + (n - x[-1]) * max(slope, 0.0), np.interp(n, x, y))
        return out
