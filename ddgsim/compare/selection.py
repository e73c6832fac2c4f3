"""Which runs to make: for every K, D and schedule, the planned, the even and unbalanced splits."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

from ddgsim.compare.options import Options
from ddgsim.plan.split import even_split, imbalance_weights, weighted_split
from ddgsim.predict.scenario import Scenario
from ddgsim.profile.format import Profile
from ddgsim.replicas import Layout
from ddgsim.schedule import MICRO_SCHEDULES, ScheduleKind

MICRO_BATCHED = MICRO_SCHEDULES
"""The schedules that take micro-batches (the registry's)."""


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    """One run to predict and measure."""

    stages: int
    """K (1: the one-process bp run)."""
    schedule: str
    split: tuple[int, ...]
    label: str
    """Why this split: ``planned``, ``even``, ``front x2`` (stage 0 gets twice the share) ..."""
    micro_batches: int = 1
    """M (gpipe, 1f1b); 1 for the others."""
    runtime: str = "ddgsim"
    """Who runs it: ``ddgsim`` (the executor) or ``torch`` (``torch.distributed.pipelining``)."""
    replicas: int = 1
    """D: replicas of every stage (K·D processes; D = 1 a pure pipeline)."""

    @property
    def name(self) -> str:
        cuts = "-".join(map(str, self.split)) or "all"
        micro = f"-m{self.micro_batches}" if self.micro_batches > 1 else ""
        runtime = "" if self.runtime == "ddgsim" else f"-{self.runtime}"
        reps = f"-d{self.replicas}" if self.replicas > 1 else ""
        return f"k{self.stages}{reps}-{self.schedule}{micro}{runtime}-{cuts}"

    def layout(self, scenario: Scenario) -> Layout | None:
        return replica_layout(scenario, self.stages, self.replicas)


def replica_layout(scenario: Scenario, stages: int, replicas: int) -> Layout | None:
    """The first K·D devices of ``scenario``, a stage's replicas side by side; ``None`` for D = 1."""
    if replicas == 1:
        return None
    return Layout.packed([d.name for d in scenario.devices], [replicas] * stages)


def choose_splits(profile: Profile, scenario: Scenario, schedule: str, stages: int, count: int,
                  micro_batches: int = 1, replicas: int = 1) -> list[RunSpec]:
    """``count`` distinct splits: planned, even, then unbalanced ones (labels joined on ties)."""
    from ddgsim.plan.build import plan_for_k

    if stages == 1:
        label = "one process" if replicas == 1 else f"data parallel, {replicas} processes"
        return [RunSpec(stages=1, schedule=ScheduleKind.BP, split=(), label=label, replicas=replicas)]
    found: dict[tuple[int, ...], list[str]] = {}
    layout = replica_layout(scenario, stages, replicas)
    res = plan_for_k(profile, scenario, schedule, stages, micro_batches=micro_batches, layout=layout,
                     baselines=False)
    if res.planned is not None:
        found.setdefault(tuple(res.planned.split), []).append("planned")
    found.setdefault(tuple(even_split(profile.num_units, stages)), []).append("even")
    for label, w in imbalance_weights(stages):
        if len(found) >= count:
            break
        found.setdefault(tuple(weighted_split(profile, stages, w)), []).append(label)
    return [RunSpec(stages=stages, schedule=schedule, split=s, label="=".join(labels), micro_batches=micro_batches,
                    replicas=replicas) for s, labels in list(found.items())[:count]]


def plan_runs(profile: Profile, scenario: Scenario, opts: Options) -> list[RunSpec]:
    """Every run ``opts`` asks for, by K, D, schedule and M; a :class:`~ddgsim.errors.UserError` (a
    :class:`~ddgsim.compare.config.ConfigError` naming the field) for one that cannot run."""
    from ddgsim.compare.config import ConfigError  # here: config imports this module
    from ddgsim.replicas import check_batch

    runs: list[RunSpec] = []
    skipped = oversized(scenario, opts) if opts.skip_oversized else []
    for K, D in itertools.product(opts.stages, opts.replicas):
        if profile.num_units < K:
            raise ConfigError("stages", f" {K} is more stages than the {profile.num_units} units of '{profile.model}'")
        if (K, D) in skipped:
            continue
        if len(scenario.devices) < K * D:
            what = f" {K}" + (f" with {{replicas}} {D}" if D > 1 else "")
            raise ConfigError("stages", f"{what} needs {K * D} devices but scenario '{scenario.name}' has "
                                        f"{len(scenario.devices)}", others=("replicas",))
        if K == 1:
            check_batch(profile.batch_size, 1, [D])
            runs += choose_splits(profile, scenario, ScheduleKind.BP, 1, 1, replicas=D)
            continue
        for sched in opts.schedules:
            for m in opts.micro_batches if sched in MICRO_BATCHED else (1,):
                check_batch(profile.batch_size, m, [D] * K)
                chosen = choose_splits(profile, scenario, sched, K, opts.splits, m, replicas=D)
                runs += chosen
                if sched in MICRO_BATCHED and "torch" in opts.runtimes and D == 1:
                    runs += [replace(spec, runtime="torch") for spec in chosen]
    return runs


def oversized(scenario: Scenario, opts: Options) -> list[tuple[int, int]]:
    """The (K, D) pairs asked for that need more devices than ``scenario`` has."""
    return [(K, D) for K, D in itertools.product(opts.stages, opts.replicas) if len(scenario.devices) < K * D]
