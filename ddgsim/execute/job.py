"""The job: what every rank derives identically from a :class:`~ddgsim.execute.config.RunConfig`.

:func:`prepare` loads the plan, checks it against the configuration and the model (a
:class:`~ddgsim.errors.UserError` naming the problem), builds the whole model from the registry
with the run's seed (the same weights on every rank) and cuts it with ``ddgsim.profile.units`` at
the plan's split. The launcher calls it before anything starts; every stage process calls it
again and keeps its own stage. Also here: where a rank runs (:func:`stage_device`), its optimizer
and data, and the same job in one process (:func:`run_inprocess_job`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ddgsim.errors import ParameterError, UserError
from ddgsim.execute import checkpoint as ckpt
from ddgsim.execute.config import RunConfig
from ddgsim.execute.data import Dataset, check_cifar_dir, check_digits, check_fits, load_data
from ddgsim.execute.stage import OptimConfig, StepDecay
from ddgsim.models.io import loss_for
from ddgsim.models.registry import ModelSpec, build_model, get_spec
from ddgsim.plan import format as plan_file
from ddgsim.schedule import Schedule, make_schedule


@dataclass(kw_only=True)
class Job:
    """Everything a run needs that every rank derives identically from the options."""

    config: RunConfig
    plan: plan_file.Plan
    spec: ModelSpec
    schedule: Schedule
    backend: str
    stages: list[nn.Module]
    feats: list[tuple[int, ...]]
    """Output shape of each stage without the batch dimension."""

    @property
    def num_stages(self) -> int:
        return self.plan.num_stages

    @property
    def world_size(self) -> int:
        """Processes of the run: one per replica of every stage."""
        return self.plan.world_size

    @property
    def replicated(self) -> bool:
        return self.world_size > self.num_stages

    def key(self) -> dict[str, Any]:
        """What a checkpoint must agree on to be resumed by this job."""
        a, p = self.config, self.plan
        extra = {"replicas": list(p.replicas)} if self.replicated else {}
        return {**extra, "model": p.model, "split": list(p.split), "schedule": p.schedule,
                "micro_batches": p.micro_batches, "batch_size": p.batch_size, "seed": a.seed,
                "data": a.data, "lr": a.lr, "momentum": a.momentum, "nesterov": a.nesterov,
                "weight_decay": a.weight_decay, "lr_decay_epochs": list(a.lr_decay_epochs),
                "lr_decay_factor": a.lr_decay_factor, "augment": a.augment,
                **({"warmup_steps": a.warmup_steps} if a.warmup_steps else {}),
                **({"lr_delay_scale": True} if a.lr_delay_scale else {}),
                **({"weight_prediction": True} if a.weight_prediction else {})}


def resolve_backend(name: str) -> str:
    if name == "auto":
        return "nccl" if torch.cuda.is_available() else "gloo"
    if name == "nccl" and not torch.cuda.is_available():
        raise ParameterError("backend", " nccl needs CUDA, but torch.cuda.is_available() is False (use gloo)")
    return name


def prepare(config: RunConfig) -> Job:
    """Check the plan against the configuration (UserError naming the problem) and build the stages."""
    plan = plan_file.load(config.plan)
    if config.model is not None and config.model != plan.model:
        raise ParameterError("model", f" '{config.model}' is not the model of plan {config.plan}: it is for "
                                      f"model '{plan.model}'")
    spec = get_spec(plan.model)
    schedule = make_schedule(plan.schedule, plan.num_stages, config.steps, plan.micro_batches)
    backend = resolve_backend(config.backend)
    if config.tensorboard is not None:
        from ddgsim.execute.tensorboard import check_available

        check_available()
    if config.data == "cifar10":
        check_cifar_dir(config.data_dir)
    if config.data == "digits":
        check_digits()
    check_fits(config.data, spec.io)
    from ddgsim.profile.units import build_stages, split_units

    model = build_model(spec, seed=config.seed)
    units = split_units(model, spec.io, batch_size=2)
    if plan.stages[-1].units[1] != len(units):
        raise UserError(
            f"plan {config.plan} splits {plan.stages[-1].units[1]} units but model '{plan.model}' has "
            f"{len(units)} units; re-plan for this model"
        )
    for st in plan.stages:
        first = units[st.units[0]].name
        if st.first and st.first != first:
            raise UserError(
                f"plan {config.plan}: stage {st.stage} starts at unit '{st.first}' but unit {st.units[0]} "
                f"of '{plan.model}' is '{first}'; re-plan for this model"
            )
    stages: list[nn.Module] = list(build_stages(units, plan.split))
    feats = [tuple(units[st.units[1] - 1].output_shape[1:]) for st in plan.stages]
    job = Job(config=config, plan=plan, spec=spec, schedule=schedule, backend=backend, stages=stages, feats=feats)
    if config.resume:
        ckpt.check_resumable(Path(config.resume), job.key(), config.steps, plan.replicas,
                             load_all=os.environ.get("RANK") is None)
    return job


_CUDA_NAME = re.compile(r"cuda:(\d+)")


def stage_device(job: Job, rank: int, local_rank: int) -> torch.device:
    """The device of ``rank``: the CPU under gloo; under NCCL the plan's device when it names one of this
    machine's (``cuda:N``), else ``cuda:LOCAL_RANK`` (a scenario's names, ``dev0`` or ``gpu3``, describe
    the modelled cluster, not this machine's numbering)."""
    if job.backend != "nccl":
        return torch.device("cpu")
    named = _CUDA_NAME.fullmatch(job.plan.layout.flat[rank])
    return torch.device("cuda", int(named.group(1)) if named else local_rank)


def check_devices(job: Job, per_node: int) -> None:
    """UserError unless this node can give ``per_node`` processes a device each (NCCL: one GPU each), and
    every ``cuda:N`` the plan names exists here (a plan names each device once: its reader checks)."""
    have = torch.cuda.device_count()
    if job.backend == "nccl":
        names = job.plan.layout.flat
        named = [n for n in names if _CUDA_NAME.fullmatch(n)]
        missing = [n for n in named if int(n.split(":")[1]) >= have]
        if missing:
            raise UserError(f"plan {job.config.plan} puts a stage on {missing[0]}, but this node has {have} CUDA "
                            f"device(s) (cuda:0..cuda:{have - 1}); edit the plan's devices or use names "
                            "that are not cuda:N to place rank r on cuda:LOCAL_RANK")
    if job.backend == "nccl" and per_node > have:
        what = (f"{job.world_size} processes (replicas {'+'.join(map(str, job.plan.replicas))})"
                if job.replicated else f"{job.num_stages} stages")
        here = f", {per_node} on this node," if per_node != job.world_size else ""
        raise UserError(f"plan has {what}{here} but this node has {have} CUDA devices "
                        f"(NCCL needs one per process)")


def make_optim(config: RunConfig, batches_per_epoch: int) -> OptimConfig:
    epochs = config.lr_decay_epochs
    lr: float | StepDecay = config.lr
    if epochs:
        lr = StepDecay(config.lr, tuple(e * batches_per_epoch for e in epochs), config.lr_decay_factor)
    try:
        return OptimConfig(lr=lr, momentum=config.momentum, nesterov=config.nesterov and config.momentum > 0,
                           weight_decay=config.weight_decay, warmup=config.warmup_steps,
                           delay_scaled_lr=config.lr_delay_scale, predict_weights=config.weight_prediction)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def dataset_for(job: Job) -> Dataset:
    a = job.config
    return load_data(a.data, io=job.spec.io, batch_size=job.plan.batch_size, seed=a.seed,
                     data_dir=a.data_dir, augment=a.augment)


def replicas_note(job: Job) -> str:
    """`` D=(2,2)`` for a replicated run (progress bar, summary), empty for a pure pipeline."""
    return f" D=({','.join(map(str, job.plan.replicas))})" if job.replicated else ""


def run_inprocess_job(config: RunConfig, record: bool = False,
                      every_iteration: bool = True) -> tuple[Any, Job, Dataset]:
    """The same job in one process with :func:`ddgsim.execute.engine.run_inprocess` (tests, benchmarks;
    ``every_iteration=False``: weights kept only at the start and the end, for long runs)."""
    from ddgsim.execute.engine import run_inprocess

    job = prepare(config)
    ds = dataset_for(job)
    optim = make_optim(config, ds.batches_per_epoch(job.plan.batch_size))
    res = run_inprocess(job.stages, job.schedule, lambda t: ds.batch(t, job.plan.batch_size),
                        loss_for(job.spec.io.target),
                        optim, record=record, seed=config.seed, replicas=job.plan.replicas,
                        every_iteration=every_iteration)
    return res, job, ds


