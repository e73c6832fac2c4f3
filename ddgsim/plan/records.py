"""The records a plan carries besides its split: the profile it was predicted with
(:class:`ProfileRef`) and what was predicted (:class:`Prediction`).

Both are the plan file's ``profile`` and ``predicted`` objects (``ddgsim-plan/1``;
``ddgsim/schemas/plan.schema.json``), typed. Every key is optional in the file, so every field is
too: ``None`` leaves the key out. ``to_json(from_json(d)) == d``, key order included, for every
object ddgsim writes; keys this version does not know are kept (``other``) and written last.
The metrics the executor writes for a run copy the plan's prediction.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ddgsim.predict.event_sim import SimResult
    from ddgsim.profile.format import Profile


def _known(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls) if f.name != "other")


def _others(data: Mapping[str, Any], known: Sequence[str]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in known}


@dataclass(frozen=True, kw_only=True)
class ProfileRef:
    """How a plan (or a validation's plans) names the profile its prediction used.

    Build it from the profile with :meth:`of` (the one constructor of a full reference).
    """

    path: str | None = None
    """The profile's file; ``""``: none was written (measured now, not cached). A plan file stores it
    relative to its own folder when the profile lies in or beside it (:meth:`ddgsim.plan.format.Plan.save`)."""
    model: str | None = None
    batch_size: int | None = None
    device: str | None = None
    threads: int | None = None
    """The profile's threads; written whenever ``device`` is (``null``: the profile did not record them)."""
    source: str | None = None
    """Where the profile came from: ``bundled``, ``cache`` or ``measured``."""
    other: Mapping[str, Any] = field(default_factory=dict, hash=False)
    """Keys this version does not know, as read."""

    @classmethod
    def of(cls, profile: Profile, path: str | os.PathLike[str] | None, *, source: str | None = None) -> ProfileRef:
        """The reference to ``profile``, read from ``path`` (``None``: none was written)."""
        return cls(path=str(path) if path else "", model=profile.model, batch_size=profile.batch_size,
                   device=profile.device, threads=profile.threads, source=source)

    def to_json(self) -> dict[str, Any]:
        """The plan file's ``profile`` object."""
        data: dict[str, Any] = {}
        for key in ("path", "model", "batch_size", "device"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        if self.device is not None or self.threads is not None:
            data["threads"] = self.threads
        if self.source is not None:
            data["source"] = self.source
        return {**data, **self.other}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProfileRef:
        """A plan file's ``profile`` object (checked against the schema by the plan's reader)."""
        known = _known(cls)
        return cls(**{k: data[k] for k in known if k in data}, other=_others(data, known))


@dataclass(frozen=True, kw_only=True)
class Prediction:
    """The simulator's prediction for a plan: the plan file's ``predicted`` object.

    Build it from a simulation with :meth:`of`; ``Prediction()`` is a plan without one (``{}``).
    """

    iteration_ms: float | None = None
    """Steady-state time per iteration, ms."""
    analytic_iteration_ms: float | None = None
    """The closed form's time per iteration, ms (the search's figure)."""
    samples_per_s: float | None = None
    speedup_vs_1_device: float | None = None
    speedup_vs_bp: float | None = None
    busy_ms: tuple[float, ...] | None = None
    """Per stage: compute per iteration, ms."""
    bubble_fraction: tuple[float, ...] | None = None
    """Per stage: idle time over the iteration time."""
    staleness: tuple[int, ...] | None = None
    """Per stage: how many iterations old its gradients are."""
    peak_memory_bytes: tuple[float, ...] | None = None
    """Per stage: predicted peak memory."""
    iterations_simulated: int | None = None
    other: Mapping[str, Any] = field(default_factory=dict, hash=False)
    """Keys this version does not know, as read."""

    @classmethod
    def of(cls, sim: SimResult, analytic_ms: float | None = None) -> Prediction:
        """What ``sim`` predicted (and the closed form's ``analytic_ms``, when there is one)."""
        return cls(iteration_ms=sim.iteration_ms, analytic_iteration_ms=analytic_ms, samples_per_s=sim.samples_per_s,
                   speedup_vs_1_device=sim.speedup_vs_1_device, speedup_vs_bp=sim.speedup_vs_bp,
                   busy_ms=tuple(sim.busy_ms), bubble_fraction=tuple(sim.bubble_fraction),
                   staleness=tuple(sim.staleness), peak_memory_bytes=tuple(sim.peak_memory_bytes),
                   iterations_simulated=sim.iterations)

    def __bool__(self) -> bool:
        """Whether the plan carries a prediction at all."""
        return any(getattr(self, k) is not None for k in _known(Prediction)) or bool(self.other)

    def to_json(self) -> dict[str, Any]:
        """The plan file's ``predicted`` object (also copied into a run's metrics)."""
        data: dict[str, Any] = {}
        for key in _known(Prediction):
            value = getattr(self, key)
            if value is not None:
                data[key] = list(value) if isinstance(value, tuple) else value
        return {**data, **self.other}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Prediction:
        """A plan file's (or a metrics file's) ``predicted`` object."""
        known = _known(cls)
        values: dict[str, Any] = {k: tuple(data[k]) if isinstance(data[k], list) else data[k]
                                  for k in known if k in data}
        return cls(**values, other=_others(data, known))
