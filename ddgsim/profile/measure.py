"""Per-unit costs from real PyTorch runs: forward/backward times, output and saved bytes.

Two ways to time a unit, both measured in every profile:

* **in-situ** (the default rows): inside real whole-model training steps, with marks
  between units in the forward and gradient hooks on the unit outputs in the backward
  (:mod:`ddgsim.profile.insitu`). The rows add up to a real step, with its cache and
  allocator state. With ``micro_batches`` the same is done for GPipe-order steps of M
  micro-batches, giving the cost of one micro-batch as a pipelined step runs it.
* **isolated**: each unit on its own, on a detached copy of its real input (the
  previous unit's output for a random batch): the forward, then
  ``torch.autograd.backward(out, grad_out)``, which computes the parameter gradients
  and the input gradient sent back to the previous stage.

Times are medians over ``reps`` rounds after ``warmup`` untimed ones — more where rounds are
short: the untimed ones last at least :data:`~ddgsim.profile.timing.MIN_WARMUP_S` and the timed
ones at least :data:`~ddgsim.profile.timing.MIN_TIMED_S`, unless fewer than
:data:`~ddgsim.profile.timing.QUICK_REPS` are asked for (a model whose step
takes a millisecond settles over hundreds of steps:
caches, the allocator, the CPU's clock; five rounds of it measured its update 50 % slow).
A round runs
every unit alone, the in-situ steps, then the whole model (``whole_model_ms``: the
same forward+backward with no hooks, a check on the sum of the rows) and its optimizer
step, so every figure sees the same machine even when other jobs come and go. The
saved-tensor count runs after the last round, untimed: a forward under saved-tensor
hooks slows the steps right after it. On CPU
the thread CPU time of each measurement is kept too (``meta["thread_cpu_ms"]``, next
to ``meta["wall_ms"]``), and ``clock="thread"`` writes it to the rows instead. The
profile records the machine's fingerprint (:mod:`ddgsim.profile.machine`) and how it
was measured (``Profile.measurement``).

``activation_bytes`` counts what autograd saves for backward (:mod:`ddgsim.profile.isolated`,
which also runs the isolated rows); the clock, the samples and the rounds loop are
:mod:`ddgsim.profile.timing`.
"""

from __future__ import annotations

import datetime
import functools
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from ddgsim.errors import UserError
from ddgsim.malloc import tune_malloc
from ddgsim.models.io import ModelIO
from ddgsim.profile.format import Profile, check_micro_batches
from ddgsim.profile.insitu import StepTimes, insitu_step
from ddgsim.profile.isolated import (
    saved_rows as saved_rows,  # re-exported: benchmarks/add_saved_fields.py
)
from ddgsim.profile.isolated import unit_runners
from ddgsim.profile.timing import (
    MAX_ROUNDS,
    MIN_TIMED_S,
    MIN_WARMUP_S,
    QUICK_REPS,
    Rounds,
    Samples,
    Timer,
    progress_bar,
)
from ddgsim.profile.units import split_units


def device_name(device: str) -> str:
    """Human-readable name of the device: CPU model from /proc/cpuinfo, or the CUDA name."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


UPDATE_OPTIMIZER = {"lr": 0.0, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4, "foreach": True}
"""The optimizer step timed after every whole-model backward: the executor's SGD with the
authors' settings (momentum 0.9, Nesterov, weight decay 5e-4), multi-tensor kernels.
lr = 0 leaves the weights unchanged. Timed right after a backward on purpose: on the
dev VM the same step took ~4 ms on warm caches and ~40 ms after a ResNet-56 backward."""


def _update_step(opt: torch.optim.Optimizer) -> None:
    opt.step()


def _whole_step(model: nn.Module, x: torch.Tensor, grad_out: torch.Tensor) -> None:
    torch.autograd.backward(model(x), grad_out)


CLOCKS = ("wall", "thread")
METHODS = ("in-situ", "isolated")
"""Where a unit is timed: inside whole-model training steps (:mod:`ddgsim.profile.insitu`), or alone
on a detached copy of its input (:class:`UnitRunner`). Both are measured, in the same rounds."""


class _InSituSamples:
    """Per-unit samples of in-situ steps with M micro-batches (per micro-batch times)."""

    def __init__(self, n: int) -> None:
        self.fwd = [Samples() for _ in range(n)]
        self.bwd = [Samples() for _ in range(n)]
        self.step = Samples()

    def add(self, st: StepTimes) -> None:
        cpu = "thread" in st.total
        for i, (f, b) in enumerate(zip(st.forward["wall"], st.backward["wall"], strict=True)):
            self.fwd[i].add(f, st.forward["thread"][i] if cpu else None)
            self.bwd[i].add(b, st.backward["thread"][i] if cpu else None)
        self.step.add(st.total["wall"], st.total.get("thread"))

    def pairs(self, clock: str) -> list[list[float]]:
        return [[f.median(clock), b.median(clock)] for f, b in zip(self.fwd, self.bwd, strict=True)]


def _paired_ratio(a: Samples, b: Samples, clock: str) -> float | None:
    """Median over rounds of a[r] / b[r]."""
    xs, ys = (a.cpu, b.cpu) if clock == "thread" else (a.wall, b.wall)
    ratios = [x / y for x, y in zip(xs, ys, strict=True) if y > 0]
    return round(statistics.median(ratios), 4) if ratios else None


def _summary_of(pairs: list[list[float]], whole: float) -> dict[str, Any]:
    total = sum(f + b for f, b in pairs)
    return {"units": [[round(f, 4), round(b, 4)] for f, b in pairs], "sum": round(total, 3),
            "whole": round(whole, 3), "sum_over_whole": round(total / whole, 4) if whole > 0 else None}


def profile_model(model: nn.Module, *, name: str, batch_size: int, io: ModelIO | None = None,
                  input_shape: Sequence[int] | None = None,
                  device: str = "cpu", threads: int | None = 1, reps: int = 5, warmup: int = 2,
                  progress: bool = True, command: str | None = None, seed: int = 0,
                  clock: str = "wall", method: str = "in-situ", micro_batches: Sequence[int] = ()) -> Profile:
    """Measure every unit of ``model`` at ``batch_size`` on ``device`` and return a Profile.

    ``threads`` sets ``torch.set_num_threads`` for the run (restored afterwards);
    ``None`` leaves it alone. ``command`` is recorded in ``meta`` (default: ``sys.argv``).
    ``clock`` picks the figures written to the rows: ``"wall"`` (elapsed time; CUDA
    events on GPU) or ``"thread"`` (CPU time of the one compute thread: on a machine
    shared with other jobs it is what an idle core would take, minus cache contention;
    CPU and ``threads=1`` only). Both clocks are kept in ``meta`` on CPU.
    ``method`` picks the rows: ``"in-situ"`` (each unit timed inside whole-model steps)
    or ``"isolated"`` (each unit alone); both are measured and summarised in
    ``meta["methods"]``. For every M in ``micro_batches`` an in-situ GPipe-order step of
    M micro-batches is timed too (``Profile.micro_batch_ms``).
    The model is moved to ``device`` and put in training mode; its parameters are left
    unchanged (gradients cleared) but BatchNorm running statistics move.
    ``io`` declares the input (float samples or token ids, :class:`ddgsim.models.io.ModelIO`);
    ``input_shape`` alone means float samples of that shape.
    """
    if io is None:
        if input_shape is None:
            raise TypeError("profile_model needs io or input_shape")
        io = ModelIO(input_shape=tuple(int(d) for d in input_shape))
    from ddgsim.profile.machine import (
        busy_reading,
        cpu_jiffies,
        fingerprint,
        loadavg,
        other_load,
        steal_pct,
    )

    if clock not in CLOCKS:
        raise UserError(f"clock must be one of {', '.join(CLOCKS)}, got '{clock}'")
    if method not in METHODS:
        raise UserError(f"method must be one of {', '.join(METHODS)}, got '{method}'")
    if clock == "thread" and (not device.startswith("cpu") or threads != 1):
        raise UserError(f"--clock thread needs --device cpu and --threads 1 (got {device}, threads {threads})")
    if batch_size <= 0 or reps <= 0 or warmup < 0:
        raise UserError(f"batch_size ({batch_size}) and reps ({reps}) must be > 0, warmup ({warmup}) >= 0")
    if threads is not None and threads <= 0:
        raise UserError(f"threads must be > 0, got {threads}")
    mbs = check_micro_batches(batch_size, micro_batches)
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda requested but CUDA is not available")
    if dev.type == "cuda" and dev.index is not None:
        if dev.index >= torch.cuda.device_count():
            raise UserError(f"device {device}: this machine has {torch.cuda.device_count()} CUDA devices")
        torch.cuda.set_device(dev)  # the events and synchronisations below go to the current device
    malloc_tuned = tune_malloc()
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    load_before = loadavg()
    jiffies_before = cpu_jiffies()
    busy_before = busy_reading()
    started = time.perf_counter()
    try:
        model = model.to(dev).train()
        units = split_units(model, io, batch_size=2)
        modules = [u.module for u in units]
        timer = Timer(dev)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        x0 = io.example_input(batch_size, gen).to(dev)
        with torch.no_grad():
            grad_out = torch.randn(model(x0).shape, generator=gen).to(dev)
        runners = unit_runners(units)
        insitu = {m: _InSituSamples(len(units)) for m in (1, *mbs)}
        whole = Samples()
        update = Samples()
        trainable = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.SGD(trainable, **UPDATE_OPTIMIZER) if trainable else None  # type: ignore[arg-type]
        per_round = len(units) + 2 + len(mbs)
        rounds = Rounds(warmup, reps, cap=max(MAX_ROUNDS, warmup + reps))
        # Rounds: every unit alone (each on the previous unit's output, the same values every
        # round), an in-situ step (and one per micro-batch count), the whole model, its update;
        # repeat. Interleaving makes every figure see the same (possibly shared) machine.
        with progress_bar(progress, (warmup + reps) * per_round, name) as bar:
            advance = bar.advance
            while (r := rounds.next()) is not None:
                record = r >= rounds.warm
                bar.total((r + 1 + rounds.left_at_least()) * per_round)
                x = x0
                for runner in runners:
                    x = runner.step(x, timer, record)
                    advance(f"round {r + 1} {runner.unit.name}")
                del x
                for m, samples in insitu.items():
                    model.zero_grad(set_to_none=True)
                    st = insitu_step(modules, x0, grad_out, m)
                    if record:
                        samples.add(st)
                    advance(f"round {r + 1} in-situ step" + (f", {m} micro-batches" if m > 1 else ""))
                model.zero_grad(set_to_none=True)
                wall, cpu, _ = timer(functools.partial(_whole_step, model, x0, grad_out))
                if opt is not None:
                    uwall, ucpu, _ = timer(functools.partial(_update_step, opt))
                    if record:
                        update.add(uwall, ucpu)
                model.zero_grad(set_to_none=True)
                if record:
                    whole.add(wall, cpu)
                advance(f"round {r + 1} whole model")
        # What autograd saves, counted after the timed rounds: a forward under saved-tensor hooks
        # slowed the next in-situ step's forward 2-5x (resnet110, batch 16), which with few --reps
        # (median of 2 = their mean) put the rows 60 % above the whole step.
        x = x0
        for runner in runners:
            x = runner.count_saved(x)
        del x
        for runner in runners:
            for p in runner.params:
                p.grad = None
        # The step's cost is mostly per tensor: share it out by parameter tensors.
        update_ms = update.median(clock)
        n_tensors = sum(len([p for p in r.params if p.requires_grad]) for r in runners) or 1
        chosen = insitu[1].pairs(clock) if method == "in-situ" else [
            [r.fwd.median(clock), r.bwd.median(clock)] for r in runners]
        rows = [
            replace(runner.row(clock), forward_ms=f, backward_ms=b, update_ms=round(
                update_ms * len([p for p in runner.params if p.requires_grad]) / n_tensors, 4))
            for runner, (f, b) in zip(runners, chosen, strict=True)
        ]
        whole_ms = whole.median(clock)
    finally:
        if threads is not None:
            torch.set_num_threads(old_threads)
    sum_ms = sum(r.compute_ms for r in rows)
    meta: dict[str, Any] = {
        "command": command if command is not None else shlex.join(sys.argv),
        "device_name": device_name(device),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "threads": threads,
        "reps": reps,
        "warmup": warmup,
        "rounds": {"untimed": rounds.warm, "timed": rounds.timed,
                   "rule": f"at least {MIN_WARMUP_S:g} s untimed and {MIN_TIMED_S:g} s timed" if reps >= QUICK_REPS
                   else f"exactly warmup + reps (fewer than {QUICK_REPS} reps: a quick look)"},
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "sum_ms": round(sum_ms, 3),
        "update_ms": round(update_ms, 3),
        "update_optimizer": "torch.optim.SGD(momentum=0.9, nesterov=True, weight_decay=5e-4, foreach=True), "
                            "timed after each whole-model backward; rows share it by parameter tensors",
        "sum_over_whole": round(sum_ms / whole_ms, 4) if whole_ms > 0 else None,
        # glibc returns big freed blocks to the OS and page-faults them back in; on some
        # VMs that makes the whole model (fresh activation memory each step) slower than
        # the sum of its units. ddgsim.malloc.tune_malloc (also applied by the executor)
        # keeps them; MALLOC_* variables are recorded too.
        "malloc_tuned": malloc_tuned,
        "malloc_env": {k: v for k, v in os.environ.items() if k.startswith(("MALLOC_", "GLIBC_TUNABLES"))},
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        # CPUs other processes kept busy during the measurement (the load average lags by a minute)
        "other_load": None if (other := other_load(busy_before, busy_reading())) is None else round(other, 2),
        # CPU time the hypervisor gave to other VMs meanwhile: wall-clock rows include it, thread CPU times not
        "steal_pct": None if (stolen := steal_pct(jiffies_before, cpu_jiffies())) is None else round(stolen, 2),
        "wall_s": round(time.perf_counter() - started, 1),
        "clock": "cuda events" if dev.type == "cuda" else
                 "thread (time.thread_time)" if clock == "thread" else "wall (time.perf_counter)",
        "activation_bytes": "unique storages saved by autograd, parameters and buffers excluded",
        "schedule": "interleaved rounds: every unit alone (forward, backward), an in-situ step per micro-batch "
                    "count, then the whole model and its update; warmup rounds untimed; medians over the timed rounds",
        "methods": {
            "in-situ": _summary_of(insitu[1].pairs(clock), whole.median(clock)) | {
                "step": round(insitu[1].step.median(clock), 3),
                # Round by round (the step and the whole model run seconds apart): robust to drift.
                "step_over_whole_paired": _paired_ratio(insitu[1].step, whole, clock),
                "how": "units timed inside whole-model steps (forward marks, gradient hooks on unit outputs)"},
            "isolated": _summary_of([[r.fwd.median(clock), r.bwd.median(clock)] for r in runners],
                                    whole.median(clock)) | {
                "how": "every unit alone on a detached copy of its input"},
        },
    }
    if whole.cpu:
        # Both clocks from the same rounds, for the rows' method; per unit [forward_ms, backward_ms], medians.
        for key, clk in (("wall_ms", "wall"), ("thread_cpu_ms", "thread")):
            pairs = insitu[1].pairs(clk) if method == "in-situ" else [
                [r.fwd.median(clk), r.bwd.median(clk)] for r in runners]
            meta[key] = _summary_of(pairs, whole.median(clk))
    return Profile(
        model=name,
        batch_size=batch_size,
        input_shape=list(io.input_shape),
        input_dtype=io.input_dtype,
        vocab=io.vocab,
        device=dev.type,
        threads=threads,
        dtype=str(next((p.dtype for p in model.parameters()), torch.float32)).removeprefix("torch."),
        units=rows,
        whole_model_ms=whole_ms,
        micro_batch_ms={str(m): [[round(f, 4), round(b, 4)] for f, b in insitu[m].pairs(clock)] for m in mbs},
        machine=fingerprint(device),
        measurement={"method": method, "clock": clock, "reps": reps, "warmup": warmup, "seed": seed,
                     "micro_batches": list(mbs)},
        meta=meta,
    )
