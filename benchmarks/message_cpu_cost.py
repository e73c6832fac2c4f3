"""CPU time a gloo message costs the two processes it joins, by size, on this host.

    python benchmarks/message_cpu_cost.py [--sizes 4096,65536,262144,524288,1048576,4194304] [--reps 200]

On a CPU host gloo moves a message through the kernel's loopback socket: the sender's
process copies it in and the receiver's copies it out, on the same cores the stages
compute on. The scenario's link (``calibrate``: latency + bytes / bandwidth, from a
ping-pong) gives the message's wall time; the executor's overheads (the probe, a 64-16-8-10
MLP at batch 8) give the fixed cost of posting and taking a message, measured on messages of
a few hundred bytes. Neither says how much *CPU* a large message takes from the stages at
its two ends. This script measures it: two processes ping-pong float32 tensors with
blocking ``dist.send``/``dist.recv`` (``--reps`` round trips after 10 untimed ones, per
size); per size it prints the one-way wall time and the process CPU time (all threads,
``time.process_time``) per message and end — each process sends one message and takes one
per round trip, so that is half of a process's CPU time per round trip. Waiting in a
blocking receive that sleeps costs no CPU. Results on the development VM: docs/validation.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PORT = 29617


def _worker(rank: int, sizes: list[int], reps: int, port: int) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    peer = 1 - rank

    def round_trip(t: torch.Tensor) -> None:
        if rank == 0:
            dist.send(t, peer)
            dist.recv(t, peer)
        else:
            dist.recv(t, peer)
            dist.send(t, peer)

    rows = []
    for size in sizes:
        t = torch.zeros(max(1, size // 4))
        for _ in range(10):
            round_trip(t)
        dist.barrier()
        c0, w0 = time.process_time(), time.perf_counter()
        for _ in range(reps):
            round_trip(t)
        c1, w1 = time.process_time(), time.perf_counter()
        rows.append((size, 1e3 * (w1 - w0) / reps / 2, 1e3 * (c1 - c0) / reps / 2))
    if rank == 0:
        print(f"{'bytes':>9}  {'one-way ms':>10}  {'CPU ms per message and end':>26}")
        for size, wall, cpu in rows:
            print(f"{size:>9}  {wall:>10.3f}  {cpu:>26.3f}")
    dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--sizes", default="4096,65536,262144,524288,1048576,4194304", metavar="BYTES,..")
    ap.add_argument("--reps", type=int, default=200, metavar="N", help="timed round trips per size (default 200)")
    ap.add_argument("--port", type=int, default=PORT)
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    if not sizes or min(sizes) < 4 or args.reps < 1:
        sys.stderr.write("error: --sizes must be byte counts >= 4 and --reps >= 1\n")
        return 2
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(sizes, args.reps, args.port), nprocs=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
