"""The stage loop: one rank runs the plan's action list for its stage, with its messages, timing and checkpoints.

Rank k runs stage k (one process per stage) — or, with replicated stages, replica r of
stage k, ``plan.layout.place(rank)`` (stage-major ranks, ``ddgsim.replicas``). It keeps its
own stage of the job's model (:mod:`ddgsim.execute.job`) and executes exactly
``ddgsim.schedule.make_schedule(...).actions[k]`` with a :class:`ddgsim.execute.stage.StageWorker`
— the same math as the in-process engine, so the final weights equal
:func:`ddgsim.execute.engine.run_inprocess` bit for bit on CPU.

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

A non-finite loss stops the run on the last stage (:class:`~ddgsim.execute.faults.RunError`;
no checkpoint is written after it); at a preemption's agreed boundary every stage
checkpoints and raises :class:`~ddgsim.execute.preempt.Preempted`.
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from ddgsim.execute import checkpoint as ckpt
from ddgsim.execute.buckets import GradReducer
from ddgsim.execute.comm import Key, Link, Outbox, Pieces, data_tag
from ddgsim.execute.devtime import ComputeTimer
from ddgsim.execute.engine import loss_share, micro_slices
from ddgsim.execute.evaluate import evaluate_pipeline
from ddgsim.execute.faults import RunError, fault_hook
from ddgsim.execute.job import Job, dataset_for, make_optim
from ddgsim.execute.memwatch import PeakMemory
from ddgsim.execute.nccl_replay import WORLD, Recorder, act_group, grad_group, replica_group
from ddgsim.execute.preempt import Preempted, Preemption
from ddgsim.execute.progress import Progress
from ddgsim.execute.report import COMM_LOG, Timing, stage_report
from ddgsim.execute.stage import StageWorker
from ddgsim.models.io import loss_for
from ddgsim.replicas import pieces, shard
from ddgsim.schedule import Action


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
        self.timing = Timing()
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
        progress = Progress(self, enabled=(self.is_last and self.replica == 0 and a.progress
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
        test = evaluate_pipeline(self) if a.evaluate else None
        wall = time.time() - wall0
        return stage_report(self, test, wall)

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

    def _end_iteration(self, it: int, progress: Progress) -> None:
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



def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj
