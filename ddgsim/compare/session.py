"""The machine's speed over a validation: the speed probe's readings between executions
(:class:`~ddgsim.profile.probe.SpeedProbe`) against the profile's whole-model step."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SessionSpeed:
    """Reads the probe when asked (:meth:`take`) and keeps every reading with its moment."""

    read: Callable[[], float]
    """One reading: the whole-model step now, ms, on the profile's clock."""
    profile_ms: float
    """The profile's own whole-model step (``Profile.whole_model_ms``), what the readings are against."""
    readings: list[tuple[float, float]] = field(default_factory=list)
    """(seconds after the validation's first execution began, ms) of every reading."""

    def take(self, at_s: float) -> float:
        """Read the probe now (``at_s``: this moment on the validation's clock); the reading in ms."""
        t0 = time.perf_counter()
        ms = self.read()
        self.readings.append((at_s + (time.perf_counter() - t0) / 2, ms))
        return ms

    @property
    def factor(self) -> float:
        """Median reading / the profile's whole step: > 1 where the machine ran slower over the session
        than when the profile was measured; NaN without a reading or a measured whole step."""
        return session_factor([ms for _, ms in self.readings], self.profile_ms)

    def line(self) -> str:
        """``the machine's speed over the session (speed probe, 9 readings): 1.052x the profile's ...``."""
        f = [ms / self.profile_ms for _, ms in self.readings] if self.profile_ms > 0 else []
        if not f:
            return "the machine's speed over the session: not probed"
        return (f"the machine's speed over the session (the whole-model step between executions, {len(f)} readings): "
                f"median {self.factor:.3f}x the profile's {self.profile_ms:.1f} ms, {min(f):.3f}-{max(f):.3f}x "
                f"(first {f[0]:.3f}x)")

    def to_json(self) -> dict[str, Any]:
        """``summary.json``'s ``session_speed``."""
        return {"profile_whole_ms": self.profile_ms, "factor": None if math.isnan(self.factor) else self.factor,
                "readings": [[round(t, 1), round(ms, 3)] for t, ms in self.readings]}


def session_factor(readings: list[float], profile_ms: float) -> float:
    """The median reading over the profile's whole step (NaN without readings or a measured step)."""
    if not readings or not profile_ms > 0:
        return math.nan
    return float(statistics.median(readings)) / profile_ms
