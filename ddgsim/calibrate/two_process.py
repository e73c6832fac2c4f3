"""The measurements in two processes on the executor's backend (gloo between CPU processes, NCCL
between two GPUs): the link's ping-pong, the all-reduce per size, a compute kernel alone and
together, the executor's step in-process (:func:`worker`); and calibrate's all-reduce alone
(:func:`measure_allreduce`)."""

from __future__ import annotations

import os
import socket
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from ddgsim.calibrate.results import WARMUP, allreduce_sizes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _timed(ops: Mapping[int, tuple[Callable[[], None], Callable[[], None] | None]], reps: int,
           dev: Any, cpu: dict[int, list[float]] | None = None) -> dict[int, list[float]]:
    """ms of each of ``reps`` runs of every ``op`` (per key: ``(op, after)``) after ``WARMUP``
    untimed ones, interleaved: each repetition runs every op once, so that a slow stretch of a
    shared machine hits every size alike instead of a few sizes' whole medians. Every run starts
    together on all ranks (a barrier) and is timed to the device's completion; ``after`` runs
    untimed after it. With ``cpu``, the process's CPU time of every run (all its threads, ms) is
    appended there too."""
    import torch.distributed as dist

    times: dict[int, list[float]] = {key: [] for key in ops}
    for i in range(reps + WARMUP):
        for key, (op, after) in ops.items():
            dist.barrier()
            _sync(dev)
            t0, c0 = time.perf_counter(), time.process_time()
            op()
            _sync(dev)
            if i >= WARMUP:
                times[key].append((time.perf_counter() - t0) * 1e3)
                if cpu is not None:
                    cpu.setdefault(key, []).append((time.process_time() - c0) * 1e3)
            if after is not None:
                after()
    return times


def _ping_pong(rank: int, sizes: Sequence[int], reps: int, dev: Any) -> tuple[dict[int, float], dict[int, float]]:
    """Per size: the median one-way ms, and the median CPU ms one message costs this process (half its
    CPU time per round trip: it posts one message and takes one). Ranks 0 and 1 bounce a tensor, the
    others wait."""
    import torch
    import torch.distributed as dist

    def bounce(buf: torch.Tensor) -> Callable[[], None]:
        def op() -> None:
            if rank == 0:
                dist.send(buf, 1)
                dist.recv(buf, 1)
            elif rank == 1:
                dist.recv(buf, 0)
                dist.send(buf, 0)
        return op

    ops = {n: (bounce(torch.zeros(max(1, n // 4), dtype=torch.float32, device=dev)), None) for n in sizes}
    cpu: dict[int, list[float]] = {}
    wall = _timed(ops, reps, dev, cpu)
    return ({n: statistics.median(t) / 2 for n, t in wall.items()},
            {n: statistics.median(t) / 2 for n, t in cpu.items()})


def _allreduce(sizes: Sequence[int], reps: int, dev: Any) -> dict[int, list[float]]:
    """ms of every timed ``dist.all_reduce`` per size (both processes take part)."""
    import torch
    import torch.distributed as dist

    def ops(buf: torch.Tensor) -> tuple[Callable[[], None], Callable[[], None]]:
        def reduce() -> None:
            dist.all_reduce(buf)

        def refill() -> None:
            buf.fill_(1.0)  # keep the values finite

        return reduce, refill

    return _timed({n: ops(torch.ones(max(1, n // 4), dtype=torch.float32, device=dev)) for n in sizes}, reps, dev)


def _sync(dev: Any) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _step_overhead(reps: int, dev: Any) -> float:
    """Median ms of F, B, U through the executor's StageWorker on a one-parameter stage."""
    import torch
    from torch import nn

    from ddgsim.execute.stage import OptimConfig, StageWorker

    module = nn.Linear(1, 1).to(dev)
    worker = StageWorker(module, index=0, num_stages=1, delay=0, loss_fn=lambda o, y: (o - y).pow(2).mean(),
                         optim=OptimConfig(lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4))
    x = torch.ones(1, 1, device=dev)
    times = []
    for t in range(reps + WARMUP):
        _sync(dev)
        t0 = time.perf_counter()
        worker.forward(t, x, x)
        worker.backward(t)
        worker.update(t)
        _sync(dev)
        if t >= WARMUP:
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def _kernel(reps: int, dev: Any) -> float:
    """Median ms of a conv forward+backward (ResNet-like block at batch 16)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, padding=1)).to(dev)
    x = torch.randn(16, 16, 32, 32, device=dev)
    times = []
    for i in range(reps + WARMUP):
        _sync(dev)
        t0 = time.perf_counter()
        conv(x).sum().backward()
        _sync(dev)
        if i >= WARMUP:
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


@contextmanager
def _pair(rank: int, port: int, backend: str, threads: int) -> Iterator[Any]:
    """One of the two measuring processes: its torch threads, its device (yielded) and the
    2-process group, destroyed on the way out."""
    import torch
    import torch.distributed as dist

    from ddgsim.execute.groups import import_before_group

    torch.set_num_threads(threads)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dev = torch.device(f"cuda:{rank}") if backend == "nccl" else torch.device("cpu")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    import_before_group()  # _step_overhead builds an optimizer with the group alive
    dist.init_process_group(backend, rank=rank, world_size=2)
    try:
        yield dev
    finally:
        dist.destroy_process_group()


def worker(rank: int, port: int, backend: str, sizes: Sequence[int], reps: int, threads: int,
            queue: Any) -> None:
    import torch.distributed as dist

    with _pair(rank, port, backend, threads) as dev:
        link, link_cpu = _ping_pong(rank, sizes, reps, dev)
        dist.barrier()
        reduce = _allreduce(allreduce_sizes(sizes), reps, dev)
        dist.barrier()
        alone = _kernel(reps, dev) if rank == 0 else 0.0  # rank 1 waits in the barrier below
        dist.barrier()
        together = _kernel(reps, dev)
        dist.barrier()
        overhead = _step_overhead(reps, dev)
        if rank == 0:
            queue.put({"link": link, "link_cpu": link_cpu, "alone": alone, "together": together, "overhead": overhead,
                       "allreduce": reduce})
        dist.barrier()


def _allreduce_worker(rank: int, port: int, sizes: Sequence[int], reps: int, rounds: int, threads: int,
                      queue: Any) -> None:
    import torch.distributed as dist

    with _pair(rank, port, "gloo", threads) as dev:
        out = [_allreduce(sizes, reps, dev) for _ in range(rounds)]
        if rank == 0:
            queue.put(out)
        dist.barrier()


def measure_allreduce(sizes: Sequence[int], reps: int, rounds: int, threads: int = 1) -> list[dict[int, list[float]]]:
    """Only the 2-process gloo all-reduce of calibrate, in ``rounds`` rounds (within a round the
    repetitions are interleaved over the sizes): per round, the ms of every timed repetition per size."""
    import torch.multiprocessing as mp

    queue = mp.get_context("spawn").SimpleQueue()
    mp.spawn(_allreduce_worker, args=(free_port(), list(sizes), reps, rounds, threads, queue),  # type: ignore[attr-defined,no-untyped-call]
             nprocs=2, join=True)
    result: list[dict[int, list[float]]] = queue.get()
    return result
