"""Test-set evaluation: a score of accuracy and cross-entropy, over stages run back to back in
one process or through the distributed pipeline (forward only, eval mode, final live weights)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ddgsim.execute.data import Dataset
from ddgsim.execute.nccl_replay import act_group
from ddgsim.models.io import ModelIO, bits

if TYPE_CHECKING:
    from ddgsim.execute.stage_loop import StageProcess


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


def evaluate_pipeline(proc: StageProcess) -> dict[str, float] | None:
    """Forward the test set through the pipeline in eval mode; the last stage scores it
    (accuracy and mean cross-entropy; per token for a language model) and returns the score,
    the other stages ``None``. With replicated stages only replica 0 of every stage takes part
    (its weights and buffers)."""
    if proc.replica != 0:
        return None
    r, mod = proc.stage, proc.worker.module
    rank_of = [proc.layout.rank(k, 0) for k in range(proc.K)]
    mod.eval()
    score = Score(proc.job.spec.io)
    base = proc.N * proc.M + 1
    slices = proc.ds.test_batches(proc.B)
    with torch.no_grad():
        for i, sl in enumerate(slices):
            n = sl.stop - sl.start
            tag = 2 * (base + i)
            if r == 0:
                x = proc.ds.test_x[sl].to(proc.device)
            else:
                x = torch.empty((n, *proc.job.feats[r - 1]), device=proc.device)
                _blocking(proc, "recv", x, rank_of[r - 1], tag, act_group(rank_of[r - 1], proc.rank), i)
            out = mod(x)
            if proc.is_last:
                score.add(out.cpu(), proc.ds.test_y[sl])
            else:
                _blocking(proc, "send", out.contiguous(), rank_of[r + 1], tag,
                          act_group(proc.rank, rank_of[r + 1]), i)
    mod.train()
    return score.result() if proc.is_last else None


def _blocking(proc: StageProcess, what: str, tensor: Tensor, peer: int, tag: int, group: str, key: int) -> None:
    """A send or receive on the activations' link group, waited for (the evaluation's forwards)."""
    link = proc.p2p[group]
    if proc.recorder is not None:
        proc.recorder.wait(proc.recorder.post(what, group, peer, ("test", key)))
    if what == "send":
        dist.send(tensor, dst=peer, tag=tag, group=link.group)
    else:
        dist.recv(tensor, src=peer, tag=tag, group=link.group)
