"""The ``ddgsim-plan/1`` file format: a split, a schedule, devices per stage (one per replica), predictions."""

from __future__ import annotations

import copy
import itertools
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ddgsim.errors import FileError, UserError, malformed
from ddgsim.fileio import read_json, write_json_atomic
from ddgsim.plan.records import Prediction, ProfileRef
from ddgsim.replicas import ALLREDUCE, DEFAULT_ALLREDUCE, Layout, check_batch

FORMAT = "ddgsim-plan/1"


@dataclass(frozen=True, kw_only=True)
class StagePlacement:
    """One stage of a plan: which units, on which device(s)."""

    stage: int
    """0-based stage index."""
    device: str
    """Device name from the scenario (``cpu0``, ``gpu3`` ...) of replica 0."""
    units: tuple[int, int]
    """Half-open unit range ``[start, end)``."""
    first: str = ""
    """Name of the first unit (for people reading the file)."""
    last: str = ""
    """Name of the last unit."""
    replicas: tuple[str, ...] = ()
    """Devices of every replica of this stage, replica 0 first (``ddgsim.replicas``); empty means
    one replica, on ``device``."""

    @property
    def devices(self) -> tuple[str, ...]:
        """Devices of the stage's replicas (at least ``(device,)``)."""
        return self.replicas or (self.device,)


@dataclass(frozen=True, kw_only=True)
class Plan:
    """A plan the executor runs unchanged and ``simulate --plan`` reproduces."""

    model: str
    batch_size: int
    schedule: str
    split: list[int]
    """Unit indices where stages 1..K-1 begin (stage 0 starts at unit 0)."""
    stages: list[StagePlacement]
    scenario: str = ""
    """Scenario name or path the prediction was made for."""
    micro_batches: int = 1
    allreduce: str = DEFAULT_ALLREDUCE
    """How replicas of a stage sum their gradients in the prediction (``ring`` or ``tree``)."""
    profile_ref: ProfileRef | None = None
    """The profile the prediction used (the file's ``profile``); ``None``: the plan names none (``{}``)."""
    predicted: Prediction = field(default_factory=Prediction)
    """What the simulator predicted for this plan; empty: nothing (a plan written by hand or a test)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Anything else the planner records (baselines, search statistics)."""

    @classmethod
    def for_split(cls, *, model: str, split: Sequence[int], num_units: int, schedule: str, batch_size: int,
                  micro_batches: int = 1, devices: Sequence[str] = (), unit_names: Sequence[str] = (),
                  layout: Layout | None = None, **fields: Any) -> Plan:
        """The plan running ``split`` of a ``num_units``-unit model: stage k on ``devices[k]``
        (default ``cpu{k}``), or its replicas on ``layout.devices[k]``; first/last unit named from
        ``unit_names`` when given."""
        bounds = [0, *split, num_units]
        K = len(bounds) - 1
        if layout is None:
            layout = Layout.pipeline(devices if devices else [f"cpu{k}" for k in range(K)])
        if layout.stages != K:
            raise UserError(f"the layout has {layout.stages} stages but the split makes {K}")
        check_batch(batch_size, micro_batches, layout.replicas)
        stages = [
            StagePlacement(stage=k, device=layout.devices[k][0], units=(a, b),
                           first=unit_names[a] if unit_names else "", last=unit_names[b - 1] if unit_names else "",
                           replicas=layout.devices[k] if len(layout.devices[k]) > 1 else ())
            for k, (a, b) in enumerate(itertools.pairwise(bounds))
        ]
        return cls(model=model, batch_size=batch_size, schedule=schedule, split=list(split), stages=stages,
                   micro_batches=micro_batches, **fields)

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    @property
    def layout(self) -> Layout:
        """Devices of every replica of every stage."""
        return Layout(tuple(s.devices for s in self.stages))

    @property
    def replicas(self) -> tuple[int, ...]:
        """D_k of every stage."""
        return tuple(len(s.devices) for s in self.stages)

    @property
    def world_size(self) -> int:
        """Processes that run the plan: one per replica of every stage."""
        return sum(self.replicas)

    def to_json(self) -> dict[str, Any]:
        """The ``ddgsim-plan/1`` object (a new one each call: the caller may change it)."""
        stages = []
        for s in self.stages:
            row = {**asdict(s), "units": list(s.units)}
            if s.replicas:
                row["replicas"] = list(s.replicas)
            else:
                del row["replicas"]
            stages.append(row)
        data: dict[str, Any] = {
            "format": FORMAT, "model": self.model, "batch_size": self.batch_size, "schedule": self.schedule,
            "split": list(self.split), "stages": stages, "scenario": self.scenario,
            "micro_batches": self.micro_batches, "allreduce": self.allreduce,
            "profile": self.profile_ref.to_json() if self.profile_ref is not None else {},
            "predicted": self.predicted.to_json(), "extra": copy.deepcopy(self.extra),
        }
        if self.allreduce == DEFAULT_ALLREDUCE and self.world_size == self.num_stages:
            del data["allreduce"]
        return data

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically; the profile reference is stored relative to the plan file's folder."""
        data = self.to_json()
        ref = data.get("profile") or {}
        if isinstance(ref.get("path"), str) and ref["path"]:
            data["profile"] = {**ref, "path": _relative(ref["path"], Path(path).parent)}
        write_json_atomic(Path(path), data)


def _bad(where: str, key: str, why: str) -> FileError:
    return malformed("plan", where, f"field '{key}' {why}")


def from_json(data: Any, where: str = "<data>") -> Plan:
    """Validate a decoded plan and build a :class:`Plan`; the error names the bad field."""
    from ddgsim.schemas import check

    check(data, "plan", where)
    split = data["split"]
    mb = data.get("micro_batches", 1)
    if any(b <= a for a, b in zip([0, *split], split, strict=False)):
        raise _bad(where, "split", f"must be strictly increasing and > 0, got {split!r}")
    stages_raw = data["stages"]
    if len(stages_raw) != len(split) + 1:
        raise _bad(where, "stages", f"must list {len(split) + 1} stages (one more than split entries)")
    bounds = [0, *split]
    stages = []
    for i, st in enumerate(stages_raw):
        dev = st["device"]
        units = st["units"]
        if (
            units[0] != bounds[i]
            or (i + 1 < len(bounds) and units[1] != bounds[i + 1])
            or units[1] <= units[0]
        ):
            raise _bad(where, f"stages[{i}].units", f"must be [start, end) consistent with split, got {units!r}")
        reps = tuple(st.get("replicas", ()))
        if reps and reps[0] != dev:
            raise _bad(where, f"stages[{i}].replicas", f"must start with the stage's device '{dev}', got {list(reps)!r}")
        stages.append(
            StagePlacement(
                stage=i,
                device=dev,
                units=(units[0], units[1]),
                first=str(st.get("first", "")),
                last=str(st.get("last", "")),
                replicas=reps if len(reps) > 1 else (),
            )
        )
    allreduce = data.get("allreduce", DEFAULT_ALLREDUCE)
    if allreduce not in ALLREDUCE:
        raise _bad(where, "allreduce", f"must be one of {', '.join(ALLREDUCE)}, got {allreduce!r}")
    try:
        layout = Layout(tuple(s.devices for s in stages))
        check_batch(data["batch_size"], mb, layout.replicas)
    except UserError as exc:
        raise malformed("plan", where, str(exc)) from None
    return Plan(
        model=data["model"],
        batch_size=data["batch_size"],
        schedule=data["schedule"],
        split=list(split),
        stages=stages,
        scenario=str(data.get("scenario", "")),
        micro_batches=mb,
        allreduce=allreduce,
        profile_ref=ProfileRef.from_json(data["profile"]) if data.get("profile") else None,
        predicted=Prediction.from_json(data.get("predicted", {})),
        extra=dict(data.get("extra", {})),
    )


def _relative(target: str, folder: Path) -> str:
    """``target`` relative to ``folder`` when it lies in that folder or beside it (so the two move
    together); absolute otherwise (a cached profile elsewhere, another drive)."""
    absolute = Path(target).resolve()
    try:
        rel = os.path.relpath(absolute, folder.resolve())
    except ValueError:
        return str(absolute)
    return str(absolute) if rel.startswith(os.path.join(os.pardir, os.pardir)) else rel


def load(path: str | os.PathLike[str]) -> Plan:
    """Read and validate a plan file; unreadable or malformed files raise :class:`~ddgsim.errors.FileError`.
    A relative profile reference is resolved against the plan file's folder."""
    plan = from_json(read_json(path, "plan"), where=str(path))
    ref = plan.profile_ref
    if ref is not None and ref.path and not os.path.isabs(ref.path):
        plan = replace(plan, profile_ref=replace(ref, path=os.path.normpath(Path(path).parent / ref.path)))
    return plan
