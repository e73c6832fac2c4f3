"""Gradient buckets (``ddgsim.execute.buckets``, ``ddgsim.replicas.plan_buckets``): the replicas'
all-reduce overlapped with the backward, the same sums as one flat all-reduce."""

from __future__ import annotations

import gc
import json
import os
import weakref
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hypothesis import given, settings
from hypothesis import strategies as st
from launch_helpers import assert_clean, assert_same, execute, final_weights, free_port, write_plan
from torch import nn

from ddgsim.execute.buckets import BUCKET_ENV, GradReducer
from ddgsim.execute.groups import import_before_group
from ddgsim.execute.stage import OptimConfig, StageWorker
from ddgsim.replicas import bucket_ready, plan_buckets


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 5000), st.sampled_from(["f32", "f16"])), min_size=0, max_size=30),
       st.integers(1, 6000), st.integers(1, 6000))
def test_plan_buckets_covers_every_tensor_once(tensors, cap: int, first: int) -> None:
    """Every tensor in exactly one bucket; one dtype per bucket; inside a bucket the backward's
    order (descending index); a bucket closed early holds at least its limit, and only the
    first closed bucket has the smaller limit."""
    sizes = [n for n, _ in tensors]
    dtypes = [d for _, d in tensors]
    buckets = plan_buckets(sizes, dtypes, cap, first)
    flat = sorted(i for b in buckets for i in b)
    assert flat == list(range(len(tensors)))
    for b in buckets:
        assert b and len({dtypes[i] for i in b}) == 1
        assert b == sorted(b, reverse=True)
        assert sum(sizes[i] for i in b[:-1]) < max(cap, first)  # it would have closed before its last tensor


def test_plan_buckets_like_ddp() -> None:
    """The last parameters (ready first) fill a 1 MiB bucket, then 25 MiB ones."""
    mib = 2**20
    assert plan_buckets([30 * mib, 20 * mib, 10 * mib, mib // 2, mib // 2], ["f"] * 5) == [[4, 3], [2, 1], [0]]


def test_bucket_ready_fractions() -> None:
    """Units backprop last-first: a bucket is ready when its earliest unit's backward is done."""
    got = bucket_ready([0, 2**20, 0, 2**22, 100], [1, 1, 1, 1, 1])
    assert got == [(0.4, 2**22 + 100), (0.8, 2**20)]
    assert bucket_ready([0, 0], [1, 1]) == []


def _worker(rank: int, port: int, out: str) -> None:
    torch.manual_seed(0)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    # The worker and its optimizer before the group, as the executor does (import_before_group): an
    # optimizer built once the group exists imports torch._dynamo, whose defaults then hold the group
    # past destroy_process_group() — its gloo threads racing the peer's teardown aborted this test
    # ("terminate called without an active exception", SIGABRT) in two CI runs.
    import_before_group()
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    w = StageWorker(net, index=0, num_stages=1, delay=0, optim=OptimConfig(lr=0.1), micro_batches=2,
                    loss_fn=nn.functional.cross_entropy)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    group = weakref.ref(dist.group.WORLD)
    try:
        result = _reduce(w, rank)  # its reducer (and the group it holds) gone when it returns
        Path(out, f"{rank}.json").write_text(json.dumps(result))
        dist.barrier()  # both ranks are done with every collective before either tears its group down
    finally:
        dist.destroy_process_group()
    gc.collect()
    assert group() is None, "the process group is still referenced after destroy_process_group()"


def _reduce(w: StageWorker, rank: int) -> dict[str, object]:
    """Two micro-batches through ``w``, the second's backward feeding the bucketed reducer; its sums
    against one all-reduce of the flat gradients."""
    issued_in_backward: list[int] = []
    red = GradReducer([w.params[i] for i in w.trainable], dist.group.WORLD, cap=40, first=40)
    gen = torch.Generator().manual_seed(rank)
    for m in range(2):
        w.forward(0, torch.randn(4, 6, generator=gen), torch.randint(0, 3, (4,), generator=gen), micro=m)
    assert not w.completes(0, 0)
    w.backward(0, micro=0)
    assert w.completes(0, 1)
    red.start(0)
    w.backward(0, micro=1, on_grad=lambda i, g: (red.ready(i, g), issued_in_backward.append(red.pending[0].next)))
    raw = [g.clone() for g in w.grads[0]]
    red.finish(0, w.grads[0])
    summed = red.wait(0)
    flat = torch.cat([g.reshape(-1) for g in raw])
    dist.all_reduce(flat)
    want = torch.split(flat, [g.numel() for g in raw])
    ok = all(torch.equal(a, b.view_as(a)) for a, b in zip(summed, want, strict=True))
    return {"ok": ok, "buckets": len(red.buckets), "started_during_backward": max(issued_in_backward)}


def test_reducer_sums_like_one_flat_allreduce_and_starts_during_the_backward(tmp_path: Path) -> None:
    """Two gloo processes, a 3-layer MLP, 2 micro-batches, buckets of 40 bytes: the reducer's sums
    equal one all-reduce of the flat gradients bit for bit, and buckets start before the
    backward returns (from the parameter hooks)."""
    mp.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=2)  # type: ignore[attr-defined,no-untyped-call]
    for r in range(2):
        got = json.loads((tmp_path / f"{r}.json").read_text())
        assert got["ok"] and got["buckets"] == 3
        assert got["started_during_backward"] >= got["buckets"] - 1


@pytest.mark.slow
def test_small_buckets_in_a_replicated_run_equal_the_engine(tmp_path: Path) -> None:
    """smallcnn as K = 1 × D = 2 with 2 KiB buckets (many all-reduces per step, recorded): the
    final weights are the one-replica engine's bit for bit, as with one bucket."""
    from launch_helpers import engine_weights

    plan = write_plan(tmp_path / "p.json", "smallcnn", [], "ddg", replicas=(2,))
    common = ["--steps", "4", "--data", "digits", "--seed", "4", "--no-eval"]
    r = execute(str(plan), *common, "--final-weights", str(tmp_path / "w"),
                env={BUCKET_ENV: "2048", "DDGSIM_COMM_LOG": str(tmp_path / "log")})
    assert r.returncode == 0, r.stderr
    assert_clean(r.stderr)
    assert_same(final_weights(tmp_path / "w", 1), engine_weights([str(plan), *common]))
    events = json.loads((tmp_path / "log" / "rank0.json").read_text())
    colls = [e for e in events if e[0] == "coll" and e[2] == "replicas:0"]
    assert len(colls) >= 4 * 3  # several buckets per step


@pytest.mark.parametrize("n", [1])
def test_bucket_env_is_read(n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from ddgsim.execute.buckets import bucket_sizes
    from ddgsim.replicas import BUCKET_BYTES, FIRST_BUCKET_BYTES

    monkeypatch.delenv(BUCKET_ENV, raising=False)
    assert bucket_sizes() == (BUCKET_BYTES, FIRST_BUCKET_BYTES)
    monkeypatch.setenv(BUCKET_ENV, "123")
    assert bucket_sizes() == (123, 123)
