"""Pilot trainings: how many steps each K needs to reach a target loss (statistical efficiency).

DDG trades staleness for speed: stage k of K applies gradients K−1−k iterations old. Whether
K stages reach a loss sooner than one depends on the model, the data, the learning rate and
the split, so it is measured, cheaply: short trainings with the exact in-process engine
(:func:`ddgsim.execute.runner.run_inprocess_job`, bit-identical to the distributed executor
on CPU) on each K's planned split.

* **Learning rate per K.** Stage k's stability limit on a quadratic shrinks with its delay
  τ: ``2cos(τπ/(2τ+1))/L`` (:func:`ddgsim.theory.bounds.stage_step_limits`), 1/2 of BP's at
  τ = 1, 0.31 at τ = 2. Each K > 1 tries the base rate, the base times that ratio for its
  most delayed stage, and their geometric mean (:func:`lr_grid`) on the first seed, keeps the
  one that reaches the target in the fewest steps (else the lowest final loss), and runs the
  other seeds with it. K = 1 runs the base rate (chosen for BP).
* **Steps to target.** The training loss of each step is the loss of that step's batch; it is
  smoothed by a trailing mean over ``window`` steps (:func:`smooth`), and a run reaches the
  target at the first step whose smoothed loss is at or below it (:func:`steps_to`).
* **Cache.** Every pilot run is stored under :func:`pilot_dir` by the hash of everything that
  sets its losses (model, data, split, schedule, batch, steps, learning rate, optimizer,
  seed, torch version), so planning with pilots already run takes no training.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FORMAT = "ddgsim-pilot/1"
DEFAULT_STEPS = 300
DEFAULT_WINDOW = 20


@dataclass(frozen=True, kw_only=True)
class PilotSpec:
    """One pilot training: everything that sets its per-step losses."""

    model: str
    data: str
    split: tuple[int, ...]
    schedule: str
    batch_size: int
    steps: int
    lr: float
    seed: int
    momentum: float = 0.9
    weight_decay: float = 5e-4
    data_dir: str | None = None
    warmup_steps: int = 0
    lr_delay_scale: bool = False
    weight_prediction: bool = False
    """Staleness compensation (``execute --warmup-steps/--lr-delay-scale/--weight-prediction``)."""

    @property
    def stages(self) -> int:
        return len(self.split) + 1

    def key(self) -> str:
        import torch

        fields = {k: v for k, v in asdict(self).items()  # compensation off: the same key as before the options
                  if k not in ("warmup_steps", "lr_delay_scale", "weight_prediction") or v}
        blob = json.dumps({**fields, "torch": torch.__version__, "format": FORMAT}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def pilot_dir() -> Path:
    """``$DDGSIM_CACHE_DIR/../pilots`` (beside the profile cache), else ``~/.cache/ddgsim/pilots``."""
    env = os.environ.get("DDGSIM_CACHE_DIR")
    return (Path(env).parent if env else Path.home() / ".cache" / "ddgsim") / "pilots"


def run_pilot(spec: PilotSpec, cache: bool = True) -> list[float]:
    """The training loss of every step of ``spec`` (cached by :meth:`PilotSpec.key`)."""
    path = pilot_dir() / f"{spec.model}-{spec.data}-k{spec.stages}-{spec.key()}.json"
    if cache and path.is_file():
        try:
            data = json.loads(path.read_text())
            if data.get("format") == FORMAT and data.get("spec") == _jsonable(spec):
                return [float(x) for x in data["losses"]]
        except (OSError, ValueError, KeyError, TypeError):
            pass  # a damaged entry is measured again
    losses = _train(spec)
    if cache:
        from ddgsim.fileio import atomic_open

        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path) as fh:
            json.dump({"format": FORMAT, "spec": _jsonable(spec), "losses": losses}, fh)
    return losses


def _jsonable(spec: PilotSpec) -> dict[str, Any]:
    d = asdict(spec)
    d["split"] = list(spec.split)
    return d


def _train(spec: PilotSpec) -> list[float]:
    import tempfile

    import torch

    from ddgsim.execute.config import RunConfig
    from ddgsim.execute.runner import run_inprocess_job
    from ddgsim.models.registry import build_model, get_spec
    from ddgsim.plan.format import Plan
    from ddgsim.profile.units import split_units

    old = torch.get_num_threads()
    torch.set_num_threads(1)  # as the executor's stage processes: the same kernels, the same bits
    try:
        mspec = get_spec(spec.model)
        n = len(split_units(build_model(mspec), mspec.io))
        with tempfile.TemporaryDirectory() as tmp:
            plan = Path(tmp) / "pilot.json"
            Plan.for_split(model=spec.model, split=list(spec.split), num_units=n, schedule=spec.schedule,
                           batch_size=spec.batch_size).save(plan)
            cfg = RunConfig(plan=plan, steps=spec.steps, data=spec.data, seed=spec.seed, lr=spec.lr,
                            momentum=spec.momentum, weight_decay=spec.weight_decay,
                            data_dir=Path(spec.data_dir) if spec.data_dir else None, warmup_steps=spec.warmup_steps,
                            lr_delay_scale=spec.lr_delay_scale, weight_prediction=spec.weight_prediction)
            res, _job, _ds = run_inprocess_job(cfg, every_iteration=False)  # no copy of the model per step
    finally:
        torch.set_num_threads(old)
    return [float(x) for x in res.losses]


def smooth(losses: Sequence[float], window: int) -> list[float]:
    """Trailing mean over the last ``window`` steps (fewer at the start); NaN stays NaN."""
    out, acc = [], 0.0
    for t, x in enumerate(losses):
        acc += x
        if t >= window:
            acc -= losses[t - window]
        out.append(acc / min(t + 1, window))
    return out


def steps_to(losses: Sequence[float], target: float, window: int) -> int | None:
    """Steps until the smoothed loss is at or below ``target`` (1-based), or ``None`` if never."""
    for t, x in enumerate(smooth(losses, window)):
        if x <= target:
            return t + 1
    return None


def stability_ratio(stages: int) -> float:
    """The most delayed stage's (τ = K − 1) stability limit over BP's (:func:`ddgsim.theory.bounds.stability_ratio`)."""
    from ddgsim.theory import bounds

    return bounds.stability_ratio(stages - 1)


def lr_grid(base: float, stages: int) -> list[float]:
    """Learning rates a pilot tries for K stages: the base, its geometric mean with the
    stability-scaled rate, and the stability-scaled rate (K = 1: the base only)."""
    if stages == 1:
        return [base]
    r = stability_ratio(stages)
    return [base, base * math.sqrt(r), base * r]


@dataclass
class KResult:
    """Pilots of one K: the rate chosen, each seed's losses and steps to the target."""

    stages: int
    split: tuple[int, ...]
    lr: float
    tried: dict[float, int | None] = field(default_factory=dict)
    """Steps to target of each rate tried on the first seed (``None``: not reached)."""
    losses: list[list[float]] = field(default_factory=list)
    steps: list[int | None] = field(default_factory=list)

    @property
    def reached(self) -> list[int]:
        return [s for s in self.steps if s is not None]

    @property
    def median_steps(self) -> float | None:
        """Median steps over the seeds; ``None`` unless every seed reached the target."""
        return float(statistics.median(self.reached)) if self.steps and len(self.reached) == len(self.steps) else None

    def final(self, window: int) -> float:
        """Mean over seeds of the smoothed loss at the last step."""
        return statistics.fmean(smooth(x, window)[-1] for x in self.losses)

    def summary(self, window: int, bp_steps: float | None) -> dict[str, Any]:
        med = self.median_steps
        return {
            "stages": self.stages, "split": list(self.split), "lr": self.lr,
            "lr_tried": {f"{k:.6g}": v for k, v in self.tried.items()},
            "steps_to_target": self.steps, "median_steps": med,
            "min_steps": min(self.reached) if self.reached else None,
            "max_steps": max(self.reached) if self.reached else None,
            "ratio_to_bp": (med / bp_steps) if med is not None and bp_steps else None,
            "final_loss": round(self.final(window), 5),
            "curve": self.curve(window),
        }

    def curve(self, window: int, points: int = 50) -> list[list[float]]:
        """The loss curve: ``[step, median over seeds of the smoothed loss]`` at about ``points`` steps."""
        if not self.losses:
            return []
        per_seed = [smooth(x, window) for x in self.losses]
        n = min(len(x) for x in per_seed)
        every = max(1, n // points)
        return [[t + 1, round(statistics.median(x[t] for x in per_seed), 5)]
                for t in range(every - 1, n, every)]


def default_target(bp_losses: Sequence[Sequence[float]], window: int, at: float = 0.75) -> float:
    """A loss every BP seed reached within the budget: the largest over seeds of the smoothed
    loss at ``at`` of the steps (so BP reaches it at or before that point on every seed)."""
    return max(smooth(x, window)[max(0, int(at * len(x)) - 1)] for x in bp_losses)


def run_pilots(base: PilotSpec, splits: dict[int, tuple[int, ...]], seeds: int, target: float | None,
               window: int = DEFAULT_WINDOW, cache: bool = True,
               advance: Callable[[str], None] | None = None) -> tuple[float, list[KResult]]:
    """Pilots for every K of ``splits`` (K → split): ``(target, results)``, in K order.

    K = 1 runs ``seeds`` seeds at the base rate and, without a ``target``, sets it
    (:func:`default_target`). Each K > 1 runs :func:`lr_grid` on seed 0, keeps the rate that
    reaches the target in the fewest steps (none does: the lowest final loss), then runs the
    other seeds at it."""
    from ddgsim.errors import ParameterError

    tell = advance or (lambda _what: None)
    if target is None and 1 not in splits:
        raise ParameterError("target_loss", " is not given: the pilots need K = 1 (BP) to set it")

    def run(K: int, lr: float, seed: int) -> list[float]:
        losses = run_pilot(PilotSpec(**{**asdict(base), "split": splits[K], "lr": lr, "seed": seed}), cache)
        tell(f"K={K} lr {lr:.4g} seed {seed}")
        return losses

    results: list[KResult] = []
    for K in sorted(splits):
        grid = lr_grid(base.lr, K)
        if K == 1:
            res = KResult(stages=1, split=splits[1], lr=base.lr)
            res.losses = [run(1, base.lr, s) for s in range(seeds)]
            if target is None:
                target = default_target(res.losses, window)
            res.tried = {base.lr: steps_to(res.losses[0], target, window)}
        else:
            assert target is not None
            first = {lr: run(K, lr, 0) for lr in grid}
            tried = {lr: steps_to(x, target, window) for lr, x in first.items()}
            reached = [lr for lr in grid if tried[lr] is not None]
            lr = (min(reached, key=lambda r: (tried[r], grid.index(r))) if reached
                  else min(grid, key=lambda r: smooth(first[r], window)[-1]))
            res = KResult(stages=K, split=splits[K], lr=lr, tried=tried)
            res.losses = [first[lr]] + [run(K, lr, s) for s in range(1, seeds)]
        res.steps = [steps_to(x, target, window) for x in res.losses]
        results.append(res)
    assert target is not None
    return target, results


def runs_needed(stages: Sequence[int], seeds: int) -> int:
    """Pilot runs :func:`run_pilots` makes (cached ones included): for a progress bar."""
    return sum(seeds if K == 1 else len(lr_grid(1.0, K)) + seeds - 1 for K in stages)


def planned_splits(profile: Any, stages: Sequence[int], schedule: str) -> dict[int, tuple[int, ...]]:
    """The planner's split for each K on K ideal copies of the profile's device (one replica each):
    the splits ``plan MODEL --gpus K --stages K --replicas 1`` chooses."""
    from ddgsim.errors import ParameterError, UserError
    from ddgsim.plan.build import plan_for_k
    from ddgsim.predict.scenario import load_scenario

    out: dict[int, tuple[int, ...]] = {}
    for K in stages:
        if profile.num_units < K:
            raise ParameterError("stages", f" {K} is more stages than the {profile.num_units} units of "
                                           f"'{profile.model}'")
        res = plan_for_k(profile, load_scenario(f"ideal-{K}"), schedule, K, baselines=False)
        if res.planned is None:
            raise UserError(f"no split of '{profile.model}' into {K} stages fits in memory")
        out[K] = tuple(res.planned.split)
    return out


def measured_stages(model: str) -> int | None:
    """The most stages any cached pilot of ``model`` ran (any data), or ``None`` without pilots."""
    folder = pilot_dir()
    best: int | None = None
    for path in folder.glob(f"{model}-*.json") if folder.is_dir() else ():
        try:
            spec = json.loads(path.read_text())["spec"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if isinstance(spec, dict) and spec.get("model") == model and isinstance(spec.get("split"), list):
            best = max(best or 0, len(spec["split"]) + 1)
    return best
