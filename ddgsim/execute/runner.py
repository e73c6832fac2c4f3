"""One stage process of a distributed run: the plan's action list for this rank, over torch.distributed.

Rank k runs stage k (one process per stage; gloo on CPU, NCCL on CUDA) — or, with
replicated stages, replica r of stage k, ``plan.layout.place(rank)`` (stage-major
ranks, ``ddgsim.replicas``). It builds
the whole model from the registry with the run's seed (same weights on every
rank), cuts it with ``ddgsim.profile.units`` at the plan's split and keeps its own stage,
then executes exactly ``ddgsim.schedule.make_schedule(...).actions[k]`` with a
:class:`ddgsim.execute.stage.StageWorker` — the same math as the in-process engine, so
the final weights equal :func:`ddgsim.execute.engine.run_inprocess` bit for bit on CPU.

Data: stage 0 loads the inputs of the batch entering at iteration t; the last
stage loads the labels of the same deterministic indices (``ddgsim.execute.data``); only
activations (forward) and error gradients (backward) travel, point-to-point
between neighbours with ``isend``/``irecv`` posted ahead (``ddgsim.execute.comm``). The
last stage, which computes the losses, shows the progress bar.

Replicated stages (data parallel inside a stage): each replica loads only its shard of
every (micro-)batch's inputs (stage 0) or labels (last stage); activations and error
gradients travel as ``ddgsim.replicas.pieces`` (:class:`ddgsim.execute.comm.Pieces`);
the stage's weight gradients are summed over the stage's process group (one per stage
with D > 1, created by every rank in stage order) by bucketed all-reduces that start
during the batch's last backward (:mod:`ddgsim.execute.buckets`) and are waited for at
its ``U``, so every replica applies the same update. The last stage's replicas scale their shard's
loss by 1/D and all-reduce it, so the reported loss is the batch's mean loss. Only
replica 0 of each stage evaluates, shows the progress bar and writes final weights;
every process writes its own checkpoint file.

Test accuracy is measured at the end by pushing the test set through the
pipeline, forward only, in eval mode, with each stage's final live weights.

Failures: every wait is bounded by ``--timeout-s``; a dead or hung neighbour makes
the others fail with one line naming it; a non-finite loss stops the run on the last
stage (no checkpoint is written after it); the launcher stops the other stages.
SIGTERM (preemption) makes every stage stop at the same iteration boundary, write a
checkpoint there and exit 0 (:class:`Preemption`).

Exit (:func:`main`, the same path for success and every failure): the helper thread
is joined, the process group is destroyed and checked to be gone — no c10d thread may
outlive it into the interpreter's shutdown. Everything that imports lazily (above all
``torch._dynamo``, which the first ``torch.optim`` optimizer imports) is loaded
*before* ``init_process_group``: ``torch.distributed.nn.functional`` binds
``group=group.WORLD`` as default arguments when imported, so importing it after the
group exists keeps the group — its gloo threads and its sockets to the peers — alive
past ``destroy_process_group()`` until the interpreter tears it down at exit, while the
peers are closing their sockets: a ``std::terminate`` after the run had finished.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import importlib
import math
import os
import random
import re
import signal
import sys
import time
import traceback
import weakref
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from ddgsim.errors import UserError
from ddgsim.execute import checkpoint as ckpt
from ddgsim.execute.buckets import GradReducer
from ddgsim.execute.comm import Key, Link, Outbox, PeerError, Pieces, data_tag, group_timeout
from ddgsim.execute.config import RunConfig
from ddgsim.execute.data import Dataset, check_cifar_dir, check_digits, check_fits, load_data
from ddgsim.execute.devtime import ComputeTimer
from ddgsim.execute.engine import loss_share, micro_slices
from ddgsim.execute.memwatch import PeakMemory
from ddgsim.execute.nccl_replay import WORLD, Recorder, act_group, grad_group, links, replica_group
from ddgsim.execute.options import parse_run_args
from ddgsim.execute.stage import OptimConfig, StageWorker, StepDecay, flat
from ddgsim.fileio import atomic_open
from ddgsim.malloc import tune_malloc
from ddgsim.models.io import ModelIO, bits, loss_for
from ddgsim.models.registry import ModelSpec, build_model, get_spec
from ddgsim.plan import format as plan_file
from ddgsim.replicas import pieces, shard
from ddgsim.schedule import Action, Schedule, make_schedule

if TYPE_CHECKING:
    from torch._C._distributed_c10d import Store


class RunError(RuntimeError):
    """The run failed at run time (non-finite loss, lost neighbour): exit status 1."""


class Preempted(Exception):
    """Every stage stopped at iteration boundary ``step`` on SIGTERM (checkpointed there if it could)."""

    def __init__(self, step: int, checkpoint: Path | None) -> None:
        super().__init__(step)
        self.step, self.checkpoint = step, checkpoint


class Preemption:
    """Agree on one iteration boundary at which every stage stops after a SIGTERM.

    A signal reaches each stage at a different moment, and stages run up to K − 1
    iterations apart (a stage's iteration t waits on its successor's iteration t − 1),
    so none can just stop "now". A stage that got SIGTERM, or learns that another did,
    publishes its next boundary b_k in the job's store and from then on polls the store
    at every boundary; once all K have published, each computes the same stop
    S = max_k b_k + K + 1. No stage can have passed S when it learns it: when the last
    stage published, at its boundary b_last ≤ max b, every stage was at most K − 1
    iterations ahead of the slowest, hence of b_last, and it learns at its next boundary.
    Stages that know of no preemption check the store every ``check_s`` seconds only.
    With replicated stages every process takes part and ``stages`` is the number of
    processes: along any chain of waits (neighbour messages, the all-reduce among a stage's
    replicas) each process is at most one iteration ahead of the one it waits on, so no
    process is more than world size − 1 iterations ahead of another.
    """

    def __init__(self, store: Store, rank: int, stages: int, check_s: float = 0.5) -> None:
        self.store, self.rank, self.stages, self.check_s = store, rank, stages, check_s
        self.requested = False
        self.published = False
        self.stop: int | None = None
        self._next_check = 0.0

    def request(self, *_: object) -> None:
        """SIGTERM handler: only sets a flag (acted on at the next iteration boundary)."""
        self.requested = True

    def poll(self, boundary: int) -> int | None:
        """The agreed stop boundary once known (store round trips only as described above)."""
        if self.stop is not None:
            return self.stop
        now = time.monotonic()
        if not (self.requested or self.published) and now < self._next_check:
            return None
        self._next_check = now + self.check_s
        count = int(self.store.add("preempt/count", 0))
        if (self.requested or count > 0) and not self.published:
            self.store.set(f"preempt/{self.rank}", str(boundary))
            count = int(self.store.add("preempt/count", 1))
            self.published = True
        if count >= self.stages:
            marks = [int(self.store.get(f"preempt/{k}")) for k in range(self.stages)]
            self.stop = max(marks) + self.stages + 1
        return self.stop


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
        raise UserError("--backend nccl needs CUDA, but torch.cuda.is_available() is False (use gloo)")
    return name


def prepare(config: RunConfig) -> Job:
    """Check the plan against the configuration (UserError naming the problem) and build the stages."""
    plan = plan_file.load(config.plan)
    if config.model is not None and config.model != plan.model:
        raise UserError(f"plan {config.plan} is for model '{plan.model}', not --model '{config.model}'")
    spec = get_spec(plan.model)
    schedule = make_schedule(plan.schedule, plan.num_stages, config.steps, plan.micro_batches)
    backend = resolve_backend(config.backend)
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


@dataclass
class _Timing:
    """Per action: (iteration, kind, start, end, wait, comm) in seconds since the run's t0."""

    rows: list[tuple[int, str, str, float, float, float, float]] = field(default_factory=list)
    iter_end: dict[int, float] = field(default_factory=dict)


def _rng_state() -> dict[str, Any]:
    np_state: Any = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy_key": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "numpy_pos": int(np_state[2]), "numpy_gauss": [int(np_state[3]), float(np_state[4])],
            "python": random.getstate()}


def _set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    np.random.set_state(("MT19937", s["numpy_key"].numpy().astype(np.uint32), s["numpy_pos"],
                         int(s["numpy_gauss"][0]), float(s["numpy_gauss"][1])))
    py = s["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


class StageProcess:
    """Runs one rank's action list with communication, timing, checkpoints."""

    def __init__(self, job: Job, rank: int, device: torch.device) -> None:
        self.job, self.rank, self.device = job, rank, device
        a = job.config
        self.K = job.num_stages
        self.M = job.plan.micro_batches
        self.B = job.plan.batch_size
        self.N = a.steps
        self.layout = job.plan.layout
        self.stage, self.replica = self.layout.place(rank)
        self.D = self.layout.replicas[self.stage]
        self.is_last = self.stage == self.K - 1
        self.ds = dataset_for(job)
        self.optim = make_optim(a, self.ds.batches_per_epoch(self.B))
        k = self.stage
        module = job.stages[k].to(device)
        module.train()
        sched = job.schedule
        self.worker = StageWorker(module, index=k, num_stages=self.K, delay=sched.delay(k),
                                  optim=self.optim,
                                  loss_fn=loss_for(job.spec.io.target) if self.is_last else None,
                                  micro_batches=self.M, seed=a.seed)
        self.d = sched.delay(k)
        self.slices = micro_slices(self.B, self.M)
        # every micro-batch has n = B/M samples (check_batch); this replica holds [lo, hi) of each
        self.n = self.B // self.M
        self.lo, self.hi = shard(self.n, self.D, self.replica)
        self.group: Any = None
        """The process group of this stage's replicas (None with one replica)."""
        self.reducer: GradReducer | None = None
        """Sums the weight gradients over the replicas, overlapped with the backward (with ``group``)."""
        self.allreduce_s = 0.0
        self.timing = _Timing()
        self.last_good = -1
        self.losses: dict[int, float] = {}
        self.ckpt_root = Path(a.checkpoint_dir) if a.checkpoint_dir else None
        self.preemption: Preemption | None = None
        self.compute_timer = ComputeTimer(device)
        """CUDA events around each action's compute (:mod:`ddgsim.execute.devtime`)."""
        self.memory = PeakMemory(device, base_bytes=sum(p.numel() * p.element_size() for p in module.parameters()))
        """This process's peak memory (:mod:`ddgsim.execute.memwatch`)."""
        self.p2p: dict[str, Link] = {}
        """This rank's link groups by name (:func:`make_groups`): one per direction and peer."""
        self.recorder = Recorder() if os.environ.get(COMM_LOG) else None
        """What this rank issues and waits for, for :mod:`ddgsim.execute.nccl_replay` (``DDGSIM_COMM_LOG``)."""

    # -- what crosses the boundaries (all derived from the schedule's needs/delivered) --------
    def _received(self, peer: int, start: int) -> list[Key]:
        """Keys of the messages this rank consumes from stage ``peer`` in iterations >= ``start``, in order."""
        sched = self.job.schedule
        return [(m.batch, m.micro) for m in sched.received(self.stage)
                if m.src == peer and sched.iteration(m.consumer) >= start]

    def _peer(self, stage: int, replica: int) -> tuple[int, str]:
        """Rank of a replica of a neighbour stage, and how messages name it."""
        rank = self.layout.rank(stage, replica)
        return rank, (f"stage {stage}" if self.layout.replicas[stage] == 1 and rank == stage
                      else f"stage {stage} replica {replica} (rank {rank})")

    def _links(self, other: int) -> list[tuple[int, int, int, str]]:
        """The pieces this replica exchanges with neighbour stage ``other``: (peer rank, lo, hi, name),
        rows ``[lo, hi)`` of this replica's shard of each micro-batch."""
        k = self.stage
        out = []
        if other < k:
            for p in pieces(self.n, self.layout.replicas[other], self.D):
                if p.dst == self.replica:
                    out.append((*self._peer(other, p.src), p.lo, p.hi))
        else:
            for p in pieces(self.n, self.D, self.layout.replicas[other]):
                if p.src == self.replica:
                    out.append((*self._peer(other, p.dst), p.lo, p.hi))
        return [(rank, lo - self.lo, hi - self.lo, name) for rank, name, lo, hi in out]

    def _pending_at(self, c: int) -> tuple[list[Key], list[Key]]:
        """Messages sent by neighbours before boundary c that this rank consumes after it."""
        sched = self.job.schedule
        crossing = [m for m in sched.received(self.stage)
                    if sched.iteration(m.producer) < c <= sched.iteration(m.consumer)]
        return ([(m.batch, m.micro) for m in crossing if m.kind == "act"],
                [(m.batch, m.micro) for m in crossing if m.kind == "grad"])

    # -- run ----------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        a = self.job.config
        self.memory.start()  # before the receive buffers, the gradients and everything else the run allocates
        start = 0
        ready_acts: dict[Key, Tensor] = {}
        ready_grads: dict[Key, Tensor] = {}
        resume_dir = a.resume
        restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
        if not resume_dir and restarts > 0 and self.ckpt_root and ckpt.read_manifest(self.ckpt_root):
            resume_dir = self.ckpt_root
        if resume_dir:
            man = ckpt.check_resumable(Path(resume_dir), self.job.key(), self.N, self.layout.replicas)
            start = int(man["step"])
            state = ckpt.load_stage(Path(resume_dir), start, self.stage, self.replica, self.D)
            self.worker.load_state_dict(state["worker"], device=self.device)
            ready_acts = {(int(k[0]), int(k[1])): v.to(self.device) for k, v in state["acts"]}
            ready_grads = {(int(k[0]), int(k[1])): v.to(self.device) for k, v in state["grads"]}
            self.losses = {int(t): float(v) for t, v in state["losses"].items()}
            _set_rng_state(state["rng"])
            self.last_good = start
        self.start = start
        k, r = self.stage, self.rank

        def tag(key: Key) -> int:
            return data_tag(key[0], key[1], self.M)

        self.links = {other: self._links(other) for other in (k - 1, k + 1) if 0 <= other < self.K}
        self.inbox = (Pieces.open(self.links[k - 1], self._received(k - 1, start), self.job.feats[k - 1], tag,
                                  device=self.device, timeout_s=a.timeout_s, ready=ready_acts,
                                  groups=lambda peer: self.p2p.get(act_group(peer, r)), recorder=self.recorder)
                      if k > 0 else None)
        self.gradbox = (Pieces.open(self.links[k + 1], self._received(k + 1, start), self.job.feats[k], tag,
                                    device=self.device, timeout_s=a.timeout_s, ready=ready_grads,
                                    groups=lambda peer: self.p2p.get(grad_group(peer, r)), recorder=self.recorder)
                        if not self.is_last else None)
        self.outbox = Outbox(a.timeout_s, device=self.device, recorder=self.recorder)
        sched = self.job.schedule
        actions = [x for x in sched.actions[k] if sched.iteration(x) >= start]
        self.barrier()
        self.t0 = time.perf_counter()
        wall0 = time.time()
        progress = _Progress(self, enabled=(self.is_last and self.replica == 0 and a.progress
                                            and sys.stderr.isatty()))
        try:
            cur = start
            for act in actions:
                it = sched.iteration(act)
                while it > cur:
                    self._end_iteration(cur, progress)
                    cur += 1
                    fault_hook(r, cur, "step")
                self._run_action(act, it)
            while cur < self.N:
                self._end_iteration(cur, progress)
                cur += 1
        finally:
            progress.close()
        self.outbox.flush()
        unconsumed = [pk for b in (self.inbox, self.gradbox) if b is not None for pk in b.pending()]
        if unconsumed:  # the schedule and the mailboxes disagree: a bug, never a peer's fault
            raise RuntimeError(f"stage {r}: receives still expected at the end of the run: {unconsumed[:4]}")
        test = self._evaluate() if a.evaluate else None
        wall = time.time() - wall0
        return self._report(test, wall)

    def _take(self, act: Action) -> Tensor | None:
        """The message ``act`` consumes (an activation for F, an error gradient for B), if any."""
        got = None
        for msg in self.job.schedule.needs(act):
            box = self.inbox if msg.kind == "act" else self.gradbox
            assert box is not None
            if act.kind == "W":
                box.wait((msg.batch, msg.micro))
            else:
                got = box.get((msg.batch, msg.micro))
        return got

    def _run_action(self, act: Action, it: int) -> None:
        w, k = self.worker, self.stage
        t, m = act.batch, act.micro
        wait0 = self._waited()
        comm0 = self._comm()
        received = self._take(act)
        mine = slice(self.lo, self.hi)  # this replica's shard of the micro-batch
        if act.kind == "F" and k == 0:
            received = self.ds.inputs(t, self.B)[self.slices[m]][mine].to(self.device)
        y = (self.ds.labels(t, self.B)[self.slices[m]][mine].to(self.device)
             if act.kind == "F" and self.is_last else None)
        if act.kind == "U" and self.group is not None:
            self._allreduce(t)
        out: Tensor | None = None
        c0 = time.perf_counter()
        ev0 = self.compute_timer.start() if act.kind != "W" else None
        if act.kind == "F":
            assert received is not None
            x = received
            weight = loss_share(self.hi - self.lo, self.B) if self.is_last else 1.0
            out = w.forward(t, x, y, micro=m, weight=weight)
        elif act.kind == "B" and self.reducer is not None and w.completes(t, m):
            # the batch's last backward: its gradient buckets start their all-reduces as they fill
            self.reducer.start(t)
            out = w.backward(t, received, micro=m, on_grad=self.reducer.ready)
            self.reducer.finish(t, w.grads[t])
        elif act.kind == "B":
            out = w.backward(t, received, micro=m)
        elif act.kind == "U":
            w.update(t)
        self.compute_timer.stop(it, act.kind, ev0)
        if act.kind != "W":
            self._sync()
        c1 = time.perf_counter()
        sent = self.job.schedule.delivered(act)
        if sent is not None:
            assert out is not None
            links = self.links[sent.dst]
            for peer, lo, hi, _name in links:
                part = out if len(links) == 1 and hi - lo == len(out) else out[lo:hi]
                group = act_group(self.rank, peer) if sent.kind == "act" else grad_group(self.rank, peer)
                self.outbox.send(part, peer, data_tag(t, m, self.M), f"{sent.kind} {act!r}",
                                 group=self.p2p.get(group), key=(t, m))
        if act.kind == "F" and self.is_last and m == self.M - 1:
            loss = w.losses[t]
            if self.D == 1:
                self.losses[t] = loss  # with replicas: the batch's loss is summed at U (_allreduce)
            if not math.isfinite(loss):
                good = f"step {self.last_good}" if self.last_good >= 0 else "none"
                raise RunError(f"non-finite loss {loss} at batch {t}; stopping (last good checkpoint: {good})")
        self.memory.sample()
        self.timing.rows.append((it, act.kind, repr(act), c0 - self.t0, c1 - self.t0,
                                 self._waited() - wait0, self._comm() - comm0))

    def _allreduce(self, t: int) -> None:
        """Wait for batch t's weight gradients summed over this stage's replicas (the buckets'
        all-reduces started during its last backward, :class:`GradReducer`), and on the last stage
        sum the replicas' shares of the batch's loss."""
        t0 = time.perf_counter()
        assert self.reducer is not None
        self.worker.grads[t] = self.reducer.wait(t)
        if self.is_last:
            members = [self.layout.rank(self.stage, j) for j in range(self.D)]
            loss = torch.tensor([self.worker.losses[t]], dtype=torch.float64, device=self.device)
            c = self.recorder.coll(replica_group(self.stage), members) if self.recorder is not None else None
            dist.all_reduce(loss, op=dist.ReduceOp.SUM, group=self.group)
            self.losses[t] = float(loss.item())
            if c is not None:
                assert self.recorder is not None
                self.recorder.wait(c)
        self._sync()  # the all-reduces are on the current stream's path: this waits for them, nothing else
        self.allreduce_s += time.perf_counter() - t0

    def _sync(self) -> None:
        """Wait for this thread's current stream (the compute, and what it was ordered after: the
        receives and all-reduces already waited for) — not for the whole device, where receives
        posted early wait for peers that may be waiting for us (``torch.cuda.synchronize``)."""
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()

    def barrier(self) -> None:
        """``dist.barrier()`` on the world (a collective: recorded as one, with the wait for it)."""
        if self.recorder is not None:
            self.recorder.wait(self.recorder.coll(WORLD, range(self.layout.world_size)))
        dist.barrier()

    def _waited(self) -> float:
        return sum(b.wait_s for b in (self.inbox, self.gradbox) if b is not None)

    def _comm(self) -> float:
        return self.allreduce_s + self.outbox.post_s + self.outbox.wait_s + sum(
            b.post_s for b in (self.inbox, self.gradbox) if b is not None)

    def _end_iteration(self, it: int, progress: _Progress) -> None:
        self.timing.iter_end[it] = time.perf_counter() - self.t0
        progress.update(it)
        every = self.job.config.checkpoint_every
        done = it + 1
        stop = self.preemption.poll(done) if self.preemption is not None else None
        if stop is not None and done > stop:  # Preemption's bound says this cannot happen
            raise RuntimeError(f"stage {self.rank} learnt the preemption stop {stop} only at step {done}")
        if stop == done and done < self.N:
            if self.ckpt_root is not None:
                self._checkpoint(done, preempted=True)
            else:
                self._quiesce(done)
            raise Preempted(done, self.ckpt_root)
        if every > 0 and done % every == 0:
            self._checkpoint(done)

    def _quiesce(self, c: int) -> tuple[list[Key], list[Key]]:
        """At boundary c: receive what the neighbours sent before c for after c, finish our sends.

        Then nothing crosses boundary c in flight; returns the received (activation, gradient) keys.
        """
        acts, grads = self._pending_at(c)
        for key in acts:
            assert self.inbox is not None
            self.inbox.wait(key)
        for key in grads:
            assert self.gradbox is not None
            self.gradbox.wait(key)
        self.outbox.flush()
        return acts, grads

    def _checkpoint(self, c: int, preempted: bool = False) -> None:
        assert self.ckpt_root is not None
        acts, grads = self._quiesce(c)
        state = {
            "format": ckpt.FORMAT, "stage": self.stage, "replica": self.replica, "step": c,
            "worker": _to_cpu(self.worker.state_dict()),
            "acts": [([k[0], k[1]], self.inbox.held(k).cpu()) for k in acts] if self.inbox else [],
            "grads": [([k[0], k[1]], self.gradbox.held(k).cpu()) for k in grads] if self.gradbox else [],
            "losses": dict(self.losses), "rng": _rng_state(),
        }
        ckpt.save_stage(self.ckpt_root, c, self.stage, state, fault=lambda: fault_hook(self.rank, c, "checkpoint"),
                        replica=self.replica, replicas=self.D)
        self.barrier()
        if self.rank == 0:
            ckpt.write_manifest(self.ckpt_root, c, self.K, self.job.key(), preempted=preempted)
        self.last_good = c

    def _evaluate(self) -> dict[str, float] | None:
        """Forward the test set through the pipeline in eval mode; the last stage scores it
        (accuracy and mean cross-entropy; per token for a language model). With replicated
        stages only replica 0 of every stage takes part (its weights and buffers)."""
        if self.replica != 0:
            return None
        r, mod = self.stage, self.worker.module
        rank_of = [self.layout.rank(k, 0) for k in range(self.K)]
        mod.eval()
        score = Score(self.job.spec.io)
        base = self.N * self.M + 1
        slices = self.ds.test_batches(self.B)
        with torch.no_grad():
            for i, sl in enumerate(slices):
                n = sl.stop - sl.start
                tag = 2 * (base + i)
                if r == 0:
                    x = self.ds.test_x[sl].to(self.device)
                else:
                    x = torch.empty((n, *self.job.feats[r - 1]), device=self.device)
                    self._blocking("recv", x, rank_of[r - 1], tag, act_group(rank_of[r - 1], self.rank), i)
                out = mod(x)
                if self.is_last:
                    score.add(out.cpu(), self.ds.test_y[sl])
                else:
                    self._blocking("send", out.contiguous(), rank_of[r + 1], tag,
                                   act_group(self.rank, rank_of[r + 1]), i)
        mod.train()
        return score.result() if self.is_last else None

    def _blocking(self, what: str, tensor: Tensor, peer: int, tag: int, group: str, key: int) -> None:
        """A send or receive on the activations' link group, waited for (the evaluation's forwards)."""
        link = self.p2p[group]
        if self.recorder is not None:
            self.recorder.wait(self.recorder.post(what, group, peer, ("test", key)))
        if what == "send":
            dist.send(tensor, dst=peer, tag=tag, group=link.group)
        else:
            dist.recv(tensor, src=peer, tag=tag, group=link.group)

    def _report(self, test: dict[str, float] | None, wall: float) -> dict[str, Any]:
        rows = self.timing.rows
        per_it: dict[int, dict[str, float]] = {}
        for it, kind, _name, c0, c1, wt, cm in rows:
            d = per_it.setdefault(it, {"F": 0.0, "B": 0.0, "U": 0.0, "W": 0.0, "wait": 0.0, "comm": 0.0})
            d[kind] += c1 - c0
            d["wait"] += wt
            d["comm"] += cm
        its = sorted(self.timing.iter_end)
        ends = [self.timing.iter_end[i] for i in its]
        step = [1e3 * (e - p) for p, e in zip([0.0, *ends], ends, strict=False)]
        devices = self.layout.flat
        weights = self.worker.flat_weights()
        return {
            "stage": self.stage, "replica": self.replica, "device": devices[self.rank], "iterations": its,
            "step_ms": step,
            "forward_ms": [1e3 * per_it.get(i, {}).get("F", 0.0) for i in its],
            "backward_ms": [1e3 * per_it.get(i, {}).get("B", 0.0) for i in its],
            "update_ms": [1e3 * per_it.get(i, {}).get("U", 0.0) for i in its],
            "wait_ms": [1e3 * (per_it.get(i, {}).get("wait", 0.0) + per_it.get(i, {}).get("W", 0.0)) for i in its],
            "comm_ms": [1e3 * per_it.get(i, {}).get("comm", 0.0) for i in its],
            "iter_end_ms": [1e3 * e for e in ends],
            **(self.compute_timer.per_iteration(its) or {}),
            "events": [(name, 1e3 * c0, 1e3 * c1, kind) for _it, kind, name, c0, c1, _w, _c in rows],
            "sends": [(1e3 * (p - self.t0), 1e3 * (q - self.t0), n, b, devices[dst])
                      for p, q, n, b, dst in self.outbox.done],
            "losses": {int(t): v for t, v in self.losses.items()},
            "test": test, "wall_s": wall, "data_source": self.ds.source,
            "peak_memory_bytes": self.memory.peak_bytes, "memory_method": self.memory.method,
            "weights": weights,
            "weights_sha256": hashlib.sha256(weights.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest(),
        }


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj


class _Progress:
    """rich progress bar on stage 0: loss, samples/s, ETA."""

    def __init__(self, proc: StageProcess, enabled: bool) -> None:
        self.proc = proc
        self.bar: Any = None
        if not enabled:
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                            TextColumn("{task.completed}/{task.total}"), TextColumn("{task.fields[info]}"),
                            TimeRemainingColumn(), transient=False)
        self.bar.start()
        self.task = self.bar.add_task(f"{proc.job.plan.schedule} K={proc.K}{replicas_note(proc.job)}", total=proc.N,
                                      completed=proc.start, info="")
        self.t_start = time.perf_counter()

    def update(self, it: int) -> None:
        if self.bar is None:
            return
        p = self.proc
        done = it + 1 - p.start
        rate = done * p.B / max(1e-9, time.perf_counter() - self.t_start)
        loss = p.losses[max(p.losses)] if p.losses else float("nan")
        self.bar.update(self.task, completed=it + 1, info=f"loss {loss:.4f}  {rate:.1f} samples/s")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


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


def replicas_note(job: Job) -> str:
    """`` D=(2,2)`` for a replicated run (progress bar, summary), empty for a pure pipeline."""
    return f" D=({','.join(map(str, job.plan.replicas))})" if job.replicated else ""


class Score:
    """Accumulates a test pass: accuracy and mean cross-entropy (nats; per token for token targets)."""

    def __init__(self, io: ModelIO) -> None:
        self.io = io
        self.hits, self.nats, self.count = 0, 0.0, 0

    def add(self, out: Tensor, y: Tensor) -> None:
        hits, nats, count = self.io.score(out, y)
        self.hits += hits
        self.nats += nats
        self.count += count

    def result(self) -> dict[str, float]:
        loss = self.nats / max(1, self.count)
        res = {"accuracy": self.hits / max(1, self.count), "loss": loss}
        if self.io.target == "token":
            res["bits_per_token"] = bits(loss)
        return res


def evaluate_stages(stages: list[nn.Module], ds: Dataset, batch_size: int, io: ModelIO) -> dict[str, float]:
    """Test accuracy and loss of the stages run back to back (eval mode, forward only)."""
    score = Score(io)
    with torch.no_grad():
        for m in stages:
            m.eval()
        for sl in ds.test_batches(batch_size):
            x = ds.test_x[sl]
            for m in stages:
                x = m(x)
            score.add(x, ds.test_y[sl])
        for m in stages:
            m.train()
    return score.result()


COMM_LOG = "DDGSIM_COMM_LOG"
"""A folder: each rank writes what it issued and waited for to ``rank<R>.json`` (:mod:`ddgsim.execute.nccl_replay`)."""


class InjectedFault(Exception):
    """What ``DDGSIM_FAULT=STAGE:STEP:raise`` raises (:func:`fault_hook`)."""


def fault_hook(rank: int, step: int, where: str) -> None:
    """Testing hook ``DDGSIM_FAULT=STAGE:STEP[:WHAT]`` (first attempt only, i.e. before any elastic
    restart): at iteration boundary STEP that stage is SIGKILLed (``kill``, default), SIGKILLed
    half-way through writing its checkpoint of STEP (``kill-in-checkpoint``), freezes (``hang``:
    SIGSTOP), sends SIGTERM to its launcher (``term-launcher``: preemption of the job), or raises
    :class:`InjectedFault` (``raise``: a bug in the stage's code)."""
    spec = os.environ.get("DDGSIM_FAULT")
    if not spec or os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") not in ("", "0"):
        return
    stage, at, *rest = spec.split(":")
    what = rest[0] if rest else "kill"
    if int(stage) != rank or int(at) != step or where != ("checkpoint" if what == "kill-in-checkpoint" else "step"):
        return
    if what == "hang":  # frozen, as a process stuck in a driver or a dead NFS mount is
        os.kill(os.getpid(), signal.SIGSTOP)
    elif what == "term-launcher":  # the job is preempted: SIGTERM to the launcher (the agent)
        os.kill(os.getppid(), signal.SIGTERM)
    elif what == "raise":
        raise InjectedFault(f"DDGSIM_FAULT={spec}: rank {rank} raised at step {step}")
    else:
        os.kill(os.getpid(), signal.SIGKILL)


class _Session:
    """What :func:`run_worker` set up, so that :func:`main` can take it down on every exit path."""

    def __init__(self) -> None:
        self.proc: StageProcess | None = None
        self.group: weakref.ref[Any] | None = None


def run_worker(config: RunConfig, session: _Session) -> int:
    """One stage process (rank from the launcher's environment); :func:`teardown` ends it."""
    tune_malloc()  # same allocator behaviour as the profiler measured
    torch.set_num_threads(max(1, config.threads))
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    job = prepare(config)
    if world != job.world_size:
        what = (f"{job.world_size} processes (replicas {'+'.join(map(str, job.plan.replicas))})"
                if job.replicated else f"{job.num_stages} stages")
        raise UserError(f"plan {config.plan} has {what} but {world} processes were started "
                        f"(use --nproc-per-node {job.world_size})")
    check_devices(job, int(os.environ.get("LOCAL_WORLD_SIZE", str(world))))
    device = stage_device(job, rank, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # Everything that imports lazily happens before the group exists (see the module doc):
    # the stage's optimizer imports torch._dynamo, which binds group.WORLD into defaults.
    importlib.import_module("torch._dynamo")

    proc = session.proc = StageProcess(job, rank, device)
    timeout = group_timeout(config.timeout_s, job.backend, job.plan.micro_batches)
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    # The elastic agent keeps one TCPStore across restarts and its workers connect to it
    # without a per-attempt prefix, so a restarted group would read the dead group's gloo
    # addresses; prefix the keys with the attempt number ourselves.
    base = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,  # type: ignore[attr-defined]
                         is_master=rank == 0 and not agent_store, timeout=timeout)
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    prefix = f"ddgsim/{os.environ.get('TORCHELASTIC_RUN_ID', 'run')}/attempt_{attempt}"
    store = dist.PrefixStore(prefix, base)  # type: ignore[attr-defined]
    # Every rank takes part (the stop's margin is the number of participants: see Preemption).
    proc.preemption = Preemption(store, rank, world)
    signal.signal(signal.SIGTERM, proc.preemption.request)
    # NCCL: device_id creates every communicator now, at each new_group, instead of at its first
    # operation (a collective step that the two sides of a link reach in different orders).
    dist.init_process_group(job.backend, store=store, timeout=timeout, rank=rank, world_size=world,
                            device_id=device if device.type == "cuda" else None)
    session.group = weakref.ref(dist.group.WORLD)
    make_groups(proc, timeout)
    report = proc.run()
    if config.final_weights and proc.replica == 0:
        ckpt_state = {"weights": report["weights"], "losses": report["losses"], "stage": proc.stage,
                      "test": report["test"]}
        with atomic_open(Path(config.final_weights) / f"stage-{proc.stage}.pt", "wb") as fh:
            torch.save(ckpt_state, fh)
    report.pop("weights")
    gathered: list[Any] = [None] * world if rank == 0 else []
    if proc.recorder is not None:
        proc.recorder.wait(proc.recorder.coll(WORLD, range(world)))
        proc.recorder.save(Path(os.environ[COMM_LOG]) / f"rank{rank}.json")
    dist.gather_object(report, gathered if rank == 0 else None, dst=0)
    if rank == 0:
        from ddgsim.execute.measure import summarize, write_outputs

        write_outputs(job, [g for g in gathered if g is not None], config.metrics, config.trace)
        print(summarize(job, [g for g in gathered if g is not None]), flush=True)
        for what, path in (("metrics", config.metrics), ("trace", config.trace),
                           ("final weights", config.final_weights)):
            if path:
                print(f"wrote {what} {path}", flush=True)
    return 0


def make_groups(proc: StageProcess, timeout: timedelta) -> None:
    """Every rank creates every group, in one order (new_group's contract): one per replicated stage
    (its all-reduce), then two per pair of replicas of neighbouring stages that exchange samples —
    activations one way, error gradients the other (:mod:`ddgsim.execute.comm`)."""
    job, rank = proc.job, proc.rank
    for k, d in enumerate(job.plan.replicas):
        if d > 1:
            first = proc.layout.rank(k, 0)
            group = dist.new_group(list(range(first, first + d)), timeout=timeout, backend=job.backend)
            if k == proc.stage:
                proc.group = group
                rec, members = proc.recorder, list(range(first, first + d))
                proc.reducer = GradReducer(
                    [proc.worker.params[i] for i in proc.worker.trainable], group,
                    on_issue=None if rec is None else functools.partial(rec.coll, replica_group(k), members),
                    on_wait=None if rec is None else rec.wait)
    for a, b in links(proc.layout, samples=proc.n):
        for name in (act_group(a, b), grad_group(b, a)):
            group = dist.new_group([a, b], timeout=timeout, backend=job.backend)
            if rank in (a, b):
                proc.p2p[name] = Link(name, group)


def teardown(session: _Session) -> list[str]:
    """Join the helper thread, destroy the process group, check that it is gone.

    Returns what could not be taken down (empty when clean); then the caller must not
    let the interpreter run its shutdown with c10d still active.
    """
    problems: list[str] = []
    proc, session.proc = session.proc, None
    if proc is not None and getattr(proc, "outbox", None) is not None and not proc.outbox.close():
        problems.append("the send thread is still waiting on a peer")
    if problems or session.group is None:
        return problems
    # Receives still posted (only after a failure or a preemption: a successful run consumed
    # them all) go with their buffers before the group does.
    del proc
    gc.collect()
    if dist.is_initialized():
        dist.destroy_process_group()
    gc.collect()
    if session.group() is not None:
        problems.append("the process group is still referenced after destroy_process_group()")
    left = c10d_threads()
    if left:
        problems.append(f"c10d threads still running after destroy_process_group(): {', '.join(left)}")
    return problems


def c10d_threads() -> list[str]:
    """Names of this process's gloo/NCCL threads (Linux; empty where /proc is missing)."""
    names = []
    for task in Path("/proc/self/task").glob("*"):
        try:
            name = (task / "comm").read_text().strip()
        except OSError:
            continue
        if "gloo" in name or "nccl" in name.lower():
            names.append(name)
    return sorted(names)


def _is_comm_failure(exc: BaseException) -> bool:
    if isinstance(exc, dist.DistError | PeerError):
        return True
    text = str(exc)
    return any(s in text for s in ("Connection closed", "Connection reset", "timed out", "Timed out",
                                   "Broken pipe", "ECONNREFUSED", "Socket", "gloo"))


def main(argv: list[str] | None = None) -> int:
    """``python -m ddgsim.execute PLAN --steps N ...``: one stage process (launched by torchrun)."""
    rank = os.environ.get("RANK", "0")
    session = _Session()
    code = 1
    try:
        code = run_worker(parse_run_args(sys.argv[1:] if argv is None else argv), session)
    except Preempted as stop:
        code = 0 if stop.checkpoint is not None else 1
        if rank == "0":
            where = (f"checkpoint in {stop.checkpoint}; continue with --resume {stop.checkpoint}"
                     if stop.checkpoint is not None else "nothing saved (no --checkpoint-dir)")
            sys.stderr.write(f"note: stopped on SIGTERM at step {stop.step}; {where}\n")
    except UserError as exc:
        sys.stderr.write(f"error: stage {rank}: {exc}\n")
        code = UserError.exit_code
    except RunError as exc:
        sys.stderr.write(f"error: stage {rank}: {exc}\n")
    except BaseException as exc:
        if isinstance(exc, RuntimeError) and _is_comm_failure(exc):
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            what = (first if isinstance(exc, PeerError)
                    else f"lost contact with another stage ({type(exc).__name__}: {first})")
            sys.stderr.write(f"error: stage {rank}: {what}\n")
        else:  # a bug: the whole traceback, then the same way out
            traceback.print_exc()
            code = 130 if isinstance(exc, KeyboardInterrupt) else 1
    # Out of the except clauses: the traceback (and the frames holding the stage's
    # messages) is released before the teardown checks that nothing holds the group.
    problems = teardown(session)
    if problems:
        # Letting the interpreter shut down now would tear c10d down under a running
        # thread (std::terminate): leave without the interpreter's shutdown instead.
        sys.stderr.write(f"warning: stage {rank}: {'; '.join(problems)}; exiting without interpreter shutdown\n")
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(code)
    return code


__all__ = ["Job", "RunError", "StageProcess", "flat", "main", "prepare", "run_worker"]
