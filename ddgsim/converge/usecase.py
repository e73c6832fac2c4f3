"""The ``converge`` use case: how many steps each K needs to reach a target loss (pilot trainings).

    from ddgsim.converge.usecase import ConvergeRequest, Pilots, converge
    outcome = converge(ConvergeRequest(model="mlp", pilots=Pilots(data="digits"), stages=(1, 2, 3)))
    outcome.target, outcome.rows

:class:`Pilots` says how to train (data, steps, seeds, rates, the target); the plan use case ranks
Ks with the same pilots (``objective="time-to-loss"``, :mod:`ddgsim.planner`). For every K the
planner's split for K stages, a learning rate per K and short trainings over several seeds
(:mod:`ddgsim.converge.pilot`, cached). ``python -m ddgsim converge`` is a thin adapter over
:func:`converge`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from ddgsim.converge.objective import STALE_SCHEDULES
from ddgsim.converge.pilot import DEFAULT_STEPS, DEFAULT_WINDOW
from ddgsim.errors import ParameterError, choices
from ddgsim.execute.config import DATASETS
from ddgsim.plan.inputs import InputError
from ddgsim.schedule import DEFAULT_SCHEDULE

PilotProgress = Callable[[int, str], AbstractContextManager[Callable[[str], None]]]
"""``progress(total_runs, label)``: a context yielding ``advance(what)``, called after each pilot run."""


@dataclass(frozen=True, kw_only=True)
class Pilots:
    """Pilot trainings: how each K is trained to a training loss; checked once, here."""

    data: str
    """Training data of the pilots: digits, cifar10, text or synthetic."""
    data_dir: str | None = None
    """CIFAR-10 python batches (``data="cifar10"``)."""
    target_loss: float | None = None
    """The training loss to reach; ``None``: one every BP seed reaches at 3/4 of the steps."""
    steps: int = DEFAULT_STEPS
    """Steps per pilot."""
    seeds: int = 3
    """Seeds per K."""
    lr: float = 0.05
    """Base learning rate, BP's."""
    window: int = DEFAULT_WINDOW
    """Steps the training loss is averaged over."""
    cache: bool = True
    """Reuse cached pilots and cache new ones; ``False`` trains every pilot again."""
    warmup_steps: int = 0
    lr_delay_scale: bool = False
    weight_prediction: bool = False
    """Staleness compensation in the pilots (as ``execute`` applies it)."""

    def __post_init__(self) -> None:
        if not self.data:
            raise ParameterError("data", f" is required for pilot trainings (choose from {choices(DATASETS)})")
        if self.data not in DATASETS:
            raise InputError(f"unknown {{data}} '{self.data}' (choose from {choices(DATASETS)})")
        for name in ("steps", "seeds", "window"):
            if getattr(self, name) < 1:
                raise ParameterError(name, f" must be >= 1, got {getattr(self, name)}")
        if self.warmup_steps < 0:
            raise ParameterError("warmup_steps", f" must be >= 0, got {self.warmup_steps}")
        if not self.lr > 0:
            raise ParameterError("lr", f" must be > 0, got {self.lr}")
        if self.target_loss is not None and not self.target_loss > 0:
            raise ParameterError("target_loss", f" must be > 0, got {self.target_loss}")


def run_pilots(pilots: Pilots, model: str, splits: dict[int, tuple[int, ...]], schedule: str, batch_size: int,
               progress: PilotProgress | None = None, *, label: str | None = None) -> tuple[float, list[Any]]:
    """Run (or read from the cache) the pilots of ``splits`` (K → split): ``(target, results)``.
    ``progress`` gets the runs' count and ``label`` (default: the model and its data)."""
    from ddgsim.converge import pilot

    base = pilot.PilotSpec(model=model, data=pilots.data, split=(), schedule=schedule, batch_size=batch_size,
                           steps=pilots.steps, lr=pilots.lr, seed=0, data_dir=pilots.data_dir,
                           warmup_steps=pilots.warmup_steps, lr_delay_scale=pilots.lr_delay_scale,
                           weight_prediction=pilots.weight_prediction)
    bar = (progress(pilot.runs_needed(list(splits), pilots.seeds), label or f"{model} ({pilots.data})") if progress
           else nullcontext(lambda _what: None))
    with bar as advance:
        return pilot.run_pilots(base, splits, pilots.seeds, pilots.target_loss, pilots.window, cache=pilots.cache,
                                advance=advance)


@dataclass(frozen=True, kw_only=True)
class ConvergeRequest:
    """The Ks to pilot, and how; checked once, here."""

    model: str
    """Model name (``ddgsim models``)."""
    pilots: Pilots
    stages: tuple[int, ...] = (1, 2, 3, 4)
    """The stage counts K to pilot."""
    schedule: str = DEFAULT_SCHEDULE
    """ddg or ddg-pipelined (the same weights)."""
    batch_size: int = 128
    """Batch size of the pilots and of the profile their splits are planned on."""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ParameterError("batch_size", f" must be >= 1, got {self.batch_size}")
        if self.schedule not in STALE_SCHEDULES:
            raise ParameterError("schedule", f" must be {' or '.join(STALE_SCHEDULES)} for pilots, "
                                             f"got '{self.schedule}'")
        if not self.stages or any(k < 1 for k in self.stages):
            raise ParameterError("stages", f" must be one or more numbers >= 1, got {list(self.stages)}")


@dataclass(frozen=True, kw_only=True)
class ConvergeOutcome:
    """The steps each K took to the target."""

    request: ConvergeRequest
    model: str
    """The model's registry name."""
    target: float
    """The training loss the pilots had to reach (the request's, or BP's at 3/4 of the steps)."""
    rows: list[dict[str, Any]]
    """One per K (:meth:`ddgsim.converge.pilot.KResult.summary`): split, rate, steps to the target, ratio to BP."""

    def to_json(self) -> dict[str, Any]:
        """What ``converge --json`` prints."""
        r, p = self.request, self.request.pilots
        return {"model": self.model, "data": p.data, "target_loss": self.target, "window": p.window,
                "pilot_steps": p.steps, "batch_size": r.batch_size, "seeds": p.seeds, "base_lr": p.lr,
                "schedule": r.schedule, "warmup_steps": p.warmup_steps, "lr_delay_scale": p.lr_delay_scale,
                "weight_prediction": p.weight_prediction, "per_k": self.rows}


def converge(request: ConvergeRequest, *, progress: PilotProgress | None = None,
             profile_progress: bool = False) -> ConvergeOutcome:
    """Pilot every K of ``request`` on the planner's split for K stages (the model's profile at the
    batch size: bundled, cached, or measured now with a progress bar when ``profile_progress``)."""
    from ddgsim.converge.pilot import planned_splits
    from ddgsim.models.registry import get_spec
    from ddgsim.profile.store import get_profile

    r = request
    spec = get_spec(r.model)
    profile, _path, _source = get_profile(spec.name, r.batch_size, "cpu", 1, this_machine=False,
                                          progress=profile_progress)
    splits = planned_splits(profile, list(r.stages), r.schedule)
    target, results = run_pilots(r.pilots, spec.name, splits, r.schedule, r.batch_size, progress, label=spec.name)
    bp = next((x.median_steps for x in results if x.stages == 1), None)
    return ConvergeOutcome(request=r, model=spec.name, target=target,
                           rows=[x.summary(r.pilots.window, bp) for x in results])
