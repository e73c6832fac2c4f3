"""How much two processes training one model at once slow each other, on this machine.

A profile times a model alone. On a CPU host two stage processes that compute at the same
moment share caches and memory bandwidth, and what that costs depends on the model's working
set: on the 2-vCPU development VM two processes each training smallcnn or resnet20 at batch 128
ran at 0.90–0.94 of their speed alone (median rounds), mlp and smallcnn at batch 32 at 1.0 —
while ``calibrate``'s reference kernel (a conv block at batch 16) measured 0.99–1.02. The
simulator slows each device's compute for the share that overlaps another's on the same host
(``Scenario.concurrent_speed``, :func:`ddgsim.predict.event_sim.contention_factors`);
``validate`` measures the factor on the model itself here and predicts with it.

Two processes (spawned, one torch thread each unless told otherwise) build the model, warm
up, then take turns: in each round one trains alone (the other waits at a barrier, as a
stage waiting for its message does), and both train at once. A round's speed is the alone
step's median over the median step of both together; the result is the median round.

The development VM switches between speed levels about 25 % apart within minutes, and a
round whose two phases straddle a switch reads 0.87 or 1.14 where the others read 0.92: with
three rounds of alone-then-together, one validate read 1.120, 0.870, 1.138 (predicting with
1.0, no contention at all) and then measured its K = 2 runs 3–16 % slower than the one-process
run of the same moment. So there are :data:`ROUNDS` short rounds, and every other pair of them
trains together first, then alone: a speed that drifts one way across a round biases the two
orders oppositely, and the median rejects the rounds a switch fell into.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROUNDS = 9
WARMUP_S = 0.3
"""Untimed training before the first round, at least."""
PHASE_S = 0.5
"""Each phase (alone, together) lasts at least this long, and at least :data:`PHASE_STEPS` steps."""
PHASE_STEPS = 3


@dataclass(frozen=True)
class Corun:
    """One model's step with one process computing and with two at once (medians, ms)."""

    model: str
    batch_size: int
    threads: int
    alone_ms: float
    together_ms: float
    speeds: tuple[float, ...]
    """alone / together of every round."""

    @property
    def speed(self) -> float:
        """The median round's alone / together: below 1 when two processes slow each other."""
        return float(statistics.median(self.speeds))

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "speeds": list(self.speeds), "speed": self.speed}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Corun:
        return cls(model=str(data["model"]), batch_size=int(data["batch_size"]), threads=int(data["threads"]),
                   alone_ms=float(data["alone_ms"]), together_ms=float(data["together_ms"]),
                   speeds=tuple(float(x) for x in data["speeds"]))


def _train_for(step: Any, seconds: float, steps: int) -> list[float]:
    times: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < steps:
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def phase_order(r: int) -> tuple[str, str]:
    """Round ``r``'s two phases: alone first in rounds 0, 1, 4, 5, …; together first in 2, 3, 6, 7, …
    (so that each rank is alone first as often as last)."""
    return ("alone", "together") if (r // 2) % 2 == 0 else ("together", "alone")


TIMEOUT_S = 300.0
"""A worker that waits this long at a barrier, or a parent that hears nothing for this long, gives up."""


def _worker(rank: int, model: str, batch_size: int, threads: int, rounds: int, barrier: Any, queue: Any) -> None:
    import torch

    from ddgsim.models.registry import build_model, get_spec
    from ddgsim.profile.measure import UPDATE_OPTIMIZER

    torch.set_num_threads(threads)
    spec = get_spec(model)
    net = build_model(spec).train()
    x = spec.io.example_input(batch_size, torch.Generator().manual_seed(rank))
    opt = torch.optim.SGD(net.parameters(), **UPDATE_OPTIMIZER)  # type: ignore[arg-type]

    def step() -> None:
        net(x).float().sum().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    warm = _train_for(step, WARMUP_S, 2)
    phase = max(PHASE_S, PHASE_STEPS * statistics.median(warm))
    alone: list[float] = []
    together: list[float] = []
    for r in range(rounds):
        for kind in phase_order(r):
            barrier.wait(TIMEOUT_S)
            if kind == "together":
                together.append(statistics.median(_train_for(step, phase, PHASE_STEPS)))
            elif r % 2 == rank:  # the ranks take turns at being alone
                alone.append(statistics.median(_train_for(step, phase, PHASE_STEPS)))
        barrier.wait(TIMEOUT_S)
    queue.put((rank, alone, together))


def measure_corun(model: str, batch_size: int, threads: int = 1, rounds: int = ROUNDS) -> Corun:
    """Train ``model`` at ``batch_size`` in two processes, alone and at once (module docstring)."""
    import queue as queue_errors

    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(rank, model, batch_size, threads, rounds, barrier, results))
             for rank in range(2)]
    for p in procs:
        p.start()
    got: dict[int, tuple[list[float], list[float]]] = {}
    quiet_since = time.monotonic()
    try:
        while len(got) < 2 and time.monotonic() - quiet_since < TIMEOUT_S:
            try:
                rank, alone, together = results.get(timeout=1.0)
            except queue_errors.Empty:
                if any(p.exitcode not in (None, 0) for p in procs):
                    break  # a worker died: the other waits at the barrier until it times out or is killed
                continue
            got[rank] = (alone, together)
            quiet_since = time.monotonic()
    finally:
        for p in procs:
            p.join(timeout=60 if len(got) == 2 else 0)
            if p.is_alive():
                p.kill()
                p.join()
    if any(p.exitcode for p in procs) or len(got) != 2:
        raise RuntimeError(f"co-run measurement of {model} failed (exit codes {[p.exitcode for p in procs]})")
    speeds = []
    for r in range(rounds):
        lone = got[r % 2][0][r // 2]
        both = statistics.median([got[0][1][r], got[1][1][r]])
        speeds.append(lone / both)
    alone_ms = 1e3 * statistics.median(a for g in got.values() for a in g[0])
    together_ms = 1e3 * statistics.median(t for g in got.values() for t in g[1])
    return Corun(model=model, batch_size=batch_size, threads=threads, alone_ms=alone_ms, together_ms=together_ms,
                 speeds=tuple(round(s, 4) for s in speeds))


def cached_corun(model: str, batch_size: int, threads: int, path: Path | None,
                 remeasure: bool = False) -> tuple[Corun, bool]:
    """(the co-run of ``model``, whether it was measured now): read from ``path`` when it holds
    one of the same model, batch and threads (and not ``remeasure``), else measured and written
    there atomically."""
    if path is not None and path.is_file() and not remeasure:
        try:
            c = Corun.from_json(json.loads(path.read_text()))
            if (c.model, c.batch_size, c.threads) == (model, batch_size, threads):
                return c, False
        except (ValueError, KeyError, TypeError):
            pass
    c = measure_corun(model, batch_size, threads)
    if path is not None:
        from ddgsim.fileio import write_json_atomic

        write_json_atomic(path, c.to_json())
    return c, True
