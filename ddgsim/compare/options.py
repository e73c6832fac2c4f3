"""The options of one validation, and how many iterations they make each execution run."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(kw_only=True)
class Options:
    """The runs to make and how to measure them: what :func:`~ddgsim.compare.rounds.run_all` takes."""

    stages: list[int]
    schedules: list[str]
    splits: int = 3
    steps: int = 10
    warmup: int | None = None
    """Gaps dropped before the median; None: K (the pipeline fill)."""
    threads: int = 1
    device: str = "cpu"
    trace: bool = True
    tol_pct: float = 5.0
    repeats: int = 3
    """Executions per run, interleaved: repeat r of every run before repeat r + 1 of any."""
    reference_every: int = 4
    """Within a round, the one-process run is measured again after every this many others (0: only
    at the start of each round): the reference each execution's speedup is taken against
    (:func:`~ddgsim.compare.rounds.round_order`)."""
    micro_batches: tuple[int, ...] = (2,)
    """M for the micro-batched schedules (gpipe, 1f1b): one set of runs per M."""
    runtimes: tuple[str, ...] = ("ddgsim",)
    """``torch`` also runs every gpipe/1f1b split under ``torch.distributed.pipelining``."""
    replicas: tuple[int, ...] = (1,)
    """D for every K: each K is run with every stage on D replicas (K·D processes), for each D."""
    skip_oversized: bool = False
    """Leave out the (K, D) pairs with more processes than the scenario has devices (listed by
    :func:`~ddgsim.compare.selection.oversized`) instead of refusing them."""
    min_warmup_ms: float = 300.0
    """With ``warmup`` None, the gaps dropped cover at least this long (steps of a millisecond
    take hundreds of iterations to settle: caches, the allocator, the CPU's clock)."""
    min_window_ms: float = 500.0
    """The gaps the median is taken over cover at least this long: a run of short steps runs
    more than ``steps`` iterations (:func:`run_length`)."""
    max_steal_pct: float = 3.0
    """An execution during which the hypervisor stole more than this share of the machine's CPU
    time is measured again (up to :data:`~ddgsim.compare.rounds.STEAL_TRIES` times; the least disturbed one is kept)."""


MAX_RUN_STEPS = 2000
"""No run is lengthened beyond this many iterations."""


def run_length(step_ms: float, stages: int, opts: Options) -> tuple[int, int]:
    """(iterations to execute, gaps to drop before the median) for a run whose steps take about
    ``step_ms`` (predicted before its first execution, measured after).

    ``opts.steps`` iterations drop ``opts.warmup`` gaps (default K, the pipeline fill) and
    measure the rest — unless the steps are short: then the dropped gaps cover at least
    ``opts.min_warmup_ms`` (without an explicit ``warmup``) and the measured ones at least
    ``opts.min_window_ms``, at most :data:`MAX_RUN_STEPS` in all. Twelve steps of a millisecond are a 12 ms sample of a
    machine whose speed moves by tens of percent within a second, still warming up.
    """
    warm = stages if opts.warmup is None else opts.warmup
    measured = opts.steps - 1 - warm
    if step_ms > 0 and math.isfinite(step_ms):
        if opts.warmup is None:
            warm = max(warm, math.ceil(opts.min_warmup_ms / step_ms))
        measured = max(measured, math.ceil(opts.min_window_ms / step_ms))
    steps = min(1 + warm + measured, max(MAX_RUN_STEPS, opts.steps))
    return steps, min(warm, steps - 2)
