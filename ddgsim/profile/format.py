"""The ``ddgsim-profile/1`` file format: per-unit costs measured from a real run.

This module is torch-free on purpose: the planner loads bundled profiles without
paying for ``import torch``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ddgsim.errors import FileError, UserError, malformed
from ddgsim.fileio import read_json, write_json_atomic

FORMAT = "ddgsim-profile/1"

ROWS_WHOLE_TOL = 0.05
"""How far the rows' sum may be from the whole step measured beside them before a profile is called off."""


def check_micro_batches(batch_size: int, micro_batches: Sequence[int]) -> tuple[int, ...]:
    """Sorted distinct M >= 2 that divide ``batch_size``; anything else is a :class:`UserError`."""
    for m in micro_batches:
        if m < 2 or batch_size % m:
            raise UserError(f"micro-batch count {m} must be >= 2 and divide the batch size {batch_size}")
    return tuple(sorted(set(micro_batches)))


@dataclass(frozen=True, kw_only=True)
class UnitProfile:
    """Measured costs of one unit (the layers between two legal cut points)."""

    name: str
    """Name of the unit, e.g. ``layer1.3`` or ``stem``."""
    forward_ms: float
    """Median forward time for the whole batch, in ms."""
    backward_ms: float
    """Median backward time for the whole batch, in ms."""
    output_bytes: int
    """Bytes of the output tensor (what crosses to the next stage; its gradient comes back)."""
    param_bytes: int
    """Bytes of the unit's parameters."""
    activation_bytes: int
    """Bytes autograd saves for backward (measured with saved-tensor hooks)."""
    output_shape: list[int] = field(default_factory=list)
    """Shape of the output tensor, batch dimension included (extra key)."""
    update_ms: float | None = None
    """Measured optimizer step for the unit's parameters (extra key); ``None``: not measured."""
    saved_input_bytes: int | None = None
    """Of ``activation_bytes``, the bytes of the unit's input (the tensor it receives), when it saves it;
    ``None``: not measured (profiles from before the field)."""
    saved_output_bytes: int | None = None
    """Of ``activation_bytes``, the bytes of the unit's output, when it saves it (a ReLU saves its result);
    ``None``: not measured."""

    @property
    def compute_ms(self) -> float:
        return self.forward_ms + self.backward_ms


@dataclass(frozen=True, kw_only=True)
class Profile:
    """A model's per-unit profile at one batch size on one device."""

    model: str
    batch_size: int
    input_shape: list[int]
    device: str
    threads: int | None
    dtype: str
    units: list[UnitProfile]
    whole_model_ms: float
    """Measured whole-model forward+backward, a check on the sum of the rows."""
    micro_batch_ms: dict[str, list[list[float]]] = field(default_factory=dict)
    """Per micro-batch count M (as a string key): ``[forward_ms, backward_ms]`` of every unit for ONE
    micro-batch of ``batch_size / M`` samples, timed inside GPipe-order steps of M micro-batches."""
    input_dtype: str = "float32"
    """``float32`` samples, or ``int64`` token ids in ``[0, vocab)``."""
    vocab: int | None = None
    machine: dict[str, Any] | None = None
    """Fingerprint of the machine measured (:mod:`ddgsim.profile.machine`); ``None``: not recorded."""
    measurement: dict[str, Any] | None = None
    """How it was measured: ``method`` (``in-situ``/``isolated``), ``clock``, ``reps``, ``warmup``,
    ``micro_batches``; ``None``: not recorded (profiles older than the fingerprint)."""
    meta: dict[str, Any] = field(default_factory=dict)
    """How the profile was produced: command, torch version, host... (extra key ``meta``)."""

    @property
    def num_units(self) -> int:
        return len(self.units)

    @property
    def sum_ms(self) -> float:
        return sum(u.compute_ms for u in self.units)

    def rows_disagree(self) -> str | None:
        """One line when the rows' sum is more than :data:`ROWS_WHOLE_TOL` off the whole step measured
        beside them (the rows then misdescribe the model: re-profile), else None."""
        whole = self.whole_model_ms
        if not whole > 0:
            return None
        off = self.sum_ms / whole - 1.0
        if abs(off) <= ROWS_WHOLE_TOL:
            return None
        reps = (self.measurement or {}).get("reps")
        return (f"its rows add up to {self.sum_ms:.1f} ms, {100 * off:+.0f}% off the whole step measured beside "
                f"them ({whole:.1f} ms; tolerance ±{100 * ROWS_WHOLE_TOL:.0f}%)"
                + (f", from {reps} round(s)" if reps else ""))

    @property
    def machine_key(self) -> str | None:
        """The measured machine's key (:func:`ddgsim.profile.machine.machine_key`), ``None`` if unrecorded."""
        from ddgsim.profile.machine import machine_key

        return machine_key(self.machine) if self.machine else None

    def micro_costs(self, micro_batches: int) -> list[tuple[float, float]] | None:
        """Per-unit (forward, backward) ms of one of ``micro_batches`` micro-batches, when measured."""
        table = self.micro_batch_ms.get(str(micro_batches))
        return None if table is None else [(float(f), float(b)) for f, b in table]

    def shard_costs(self, micro_batches: int = 1, replicas: int = 1) -> tuple[list[tuple[float, float]], bool]:
        """Per-unit (forward, backward) ms of one replica's largest shard of one micro-batch:
        ``⌈B/M / D⌉`` samples (:func:`ddgsim.replicas.largest_shard`; B/(M·D) where D divides).

        Measured when the profile has ``micro_batch_ms`` for that many samples (timed inside
        pipelined steps) or it is the whole batch; else interpolated per unit, linearly in the
        samples, between the nearest measured sample counts below and above (the batch is one;
        below the smallest, proportional to it). The flag says which (False: not measured, so a
        caller can say so)."""
        from ddgsim.replicas import largest_shard

        B = self.batch_size
        whole = [(u.forward_ms, u.backward_ms) for u in self.units]
        if B % micro_batches:  # micro-batches of unequal size (a plan refuses them; a simulation may ask):
            pieces = micro_batches * replicas  # 1/(M·D) of the batch each, as before shards were sized
            measured = self.micro_costs(pieces) if pieces > 1 else None
            return measured or [(f / pieces, b / pieces) for f, b in whole], measured is not None or pieces == 1
        size = largest_shard(B // micro_batches, replicas)
        if size == B:
            return whole, True
        points = {B: whole}
        for key in self.micro_batch_ms:
            pieces = int(key)
            if pieces > 1 and B % pieces == 0:
                table = self.micro_costs(pieces)
                assert table is not None
                points[B // pieces] = table
        if size in points:
            return points[size], True
        above = min(n for n in points if n > size)
        below = max((n for n in points if n < size), default=0)
        hi = points[above]
        if below == 0:
            return [(f * size / above, b * size / above) for f, b in hi], False
        lo, w = points[below], (size - below) / (above - below)
        return [(fl + w * (fh - fl), bl + w * (bh - bl)) for (fl, bl), (fh, bh) in zip(lo, hi, strict=True)], False

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"format": FORMAT}
        data.update(asdict(self))
        return data

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically: a crash never leaves a half-written profile."""
        write_json_atomic(Path(path), self.to_json())


def _bad(where: str, key: str, why: str) -> FileError:
    return malformed("profile", where, f"field '{key}' {why}")


def from_json(data: Any, where: str = "<data>") -> Profile:
    """Validate a decoded JSON object and build a :class:`Profile`; name the bad field."""
    from ddgsim.schemas import check

    check(data, "profile", where)
    units = [
        UnitProfile(
            name=row["name"],
            forward_ms=float(row["forward_ms"]),
            backward_ms=float(row["backward_ms"]),
            output_bytes=int(row["output_bytes"]),
            param_bytes=int(row["param_bytes"]),
            activation_bytes=int(row["activation_bytes"]),
            output_shape=list(row.get("output_shape", [])),
            update_ms=None if row.get("update_ms") is None else float(row["update_ms"]),
            saved_input_bytes=None if row.get("saved_input_bytes") is None else int(row["saved_input_bytes"]),
            saved_output_bytes=None if row.get("saved_output_bytes") is None else int(row["saved_output_bytes"]),
        )
        for row in data["units"]
    ]
    threads = data.get("threads")
    micro = data.get("micro_batch_ms", {})
    for m, table in micro.items():
        if int(m) < 2 or len(table) != len(units):
            raise _bad(where, "micro_batch_ms", f"entry '{m}' must be for M >= 2 and hold [forward_ms, backward_ms] "
                       f"for each of the {len(units)} units")
    input_dtype = data.get("input_dtype", "float32")
    vocab = data.get("vocab")
    meta = data.get("meta", {})
    return Profile(
        model=data["model"],
        batch_size=int(data["batch_size"]),
        input_shape=list(data["input_shape"]),
        device=data["device"],
        threads=threads,
        dtype=data["dtype"],
        units=units,
        whole_model_ms=float(data["whole_model_ms"]),
        micro_batch_ms={str(m): [[float(f), float(b)] for f, b in t] for m, t in micro.items()},
        input_dtype=input_dtype,
        vocab=vocab,
        machine=data.get("machine"),
        measurement=data.get("measurement"),
        meta=meta if isinstance(meta, dict) else {},
    )


def load(path: str | os.PathLike[str]) -> Profile:
    """Read and validate a profile file; unreadable or malformed files raise :class:`~ddgsim.errors.FileError`."""
    return from_json(read_json(path, "profile"), where=str(path))
