"""Measure the executor's fixed cost per action by running it on a probe model.

The profile of a model times its units' kernels; what the executor does around them
(:mod:`ddgsim.predict.overheads`) is a property of the machine and the runtime, not of the
model. It is measured here the only faithful way, by the executor itself: a probe model
whose units cost almost nothing (:func:`probe_model`, a 64-16-8-10 MLP at batch
:data:`PROBE_BATCH`) is profiled in situ like any model, then run for real
(:func:`ddgsim.execute.launch.run_plan`, one process per stage, the run's backend) in
:data:`CONFIGS`: one process; two stages; two stages with four micro-batches; three stages
(those the scenario has devices for), :data:`ROUNDS` times each, interleaved.

Each stage's metrics give, per iteration, the time inside its F, B and U actions (the
executor's compute windows), the time it waited for messages, and its step. Per stage
(medians over the iterations after :data:`SKIP`):

* inside the windows: what an action costs beyond the profile's units (the loss, the
  weight swap, autograd's entry), per F, per B, per U;
* outside them, the step's remainder ``step − wait − windows``: on the one-process run it is the
  loop's cost of its three actions (fetching samples, sampling memory, recording): ``g`` per
  action; on the stages of the other runs ``g · actions + h · messages`` (actions = 2M + 1;
  messages = what the stage posts plus what it takes), which gives ``h``, one message's cost,
  by least squares.

Then ``forward_us`` = F's window excess + g, ``backward_us`` and ``update_us`` alike (medians
over the stages of the runs of several processes), and ``send_us`` = ``receive_us`` = h (a
stage always posts as many messages as it takes, so the two are not told apart; each action
is charged for its own messages). The one-process run gives ``[overheads.alone]`` the same
way: a process alone on the host runs its actions faster than processes that share the
cores, and its optimizer step is the one the profile timed (a stage of several pays the
optimizer's fixed cost again). Last, the share of g that comes after each action's message
(``tail_us``) is the one whose predictions of the probe runs' steps are closest
(:func:`choose_tail`).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ddgsim.predict.overheads import Overheads, messages
from ddgsim.predict.scenario import Scenario

PROBE = "ddgsim.calibrate.overhead_probe:probe_model"
"""The probe's model name (a user-model factory path, so that the executor's processes build it)."""
PROBE_BATCH = 8
STEPS = 600
"""Iterations per probe run: its steps take about a millisecond, and such steps take hundreds of
iterations to settle (caches, the allocator, the CPU's clock; see :func:`ddgsim.compare.options.run_length`)."""
SKIP = 300
"""Iterations dropped at the start of each run (start-up, first receives, warm-up)."""
ROUNDS = 3
"""Executions of each probe run, interleaved; every figure is the median over them (one round
when the calibration is asked for fewer than :data:`FULL_REPS` repetitions: a quick check)."""
FULL_REPS = 10
CONFIGS: tuple[tuple[str, tuple[int, ...], int], ...] = (
    ("bp", (), 1),
    ("bp", (3,), 1),
    ("ddg-pipelined", (3,), 1),
    ("gpipe", (3,), 4),
    ("bp", (2, 4), 1),
)
"""(schedule, split, micro-batches) of each probe run: K = 1; K = 2 taking turns (bp), busy at
once (ddg-pipelined), with M = 4; K = 3."""


@contextmanager
def _quiet(path: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors 1 and 2, which the executor's
    processes inherit) to ``path`` meanwhile."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(path, "ab") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


@contextmanager
def _environment_kept() -> Iterator[None]:
    """Restore this process's environment afterwards: the launcher sets the workers' (huge pages,
    PYTHONPATH) in its own, and the machine's key (``hugepages``) would change under the caller."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def probe_model() -> Any:
    """The probe: :class:`ddgsim.models.small.MLP` of width 16 on digits-shaped input (6 units)."""
    from ddgsim.models.small import MLP

    model = MLP(hidden=16)
    model.input_shape = (1, 8, 8)  # type: ignore[assignment]  # declared for the model registry
    return model


@dataclass(frozen=True, kw_only=True)
class StageSample:
    """What one stage of one probe run measured, per iteration (medians, ms)."""

    run: str
    stages: int
    """K of the run (1: a job of one process)."""
    stage: int
    micro_batches: int
    messages: int
    """Messages the stage posts and takes per iteration."""
    forward_excess_ms: float
    """Per F: window minus the profile's forward of the stage's units."""
    backward_excess_ms: float
    update_excess_ms: float
    outside_ms: float
    """step − wait − F, B and U windows."""


@dataclass(frozen=True, kw_only=True)
class ProbeResult:
    overheads: Overheads
    per_action_us: float
    """g: the loop's cost per action, outside the windows."""
    per_message_us: float
    """h: one message, posted or taken."""
    samples: tuple[StageSample, ...]
    residual_us: float
    """Largest |outside − fit| over the stages, µs."""
    tail_share: float = 0.0
    """Share of g that comes after the action's message: the tail (of both sets of figures)."""
    runs: tuple[tuple[str, float, float], ...] = ()
    """Per probe run: (name, measured step ms, the step the model predicts with these overheads)."""

    def with_tail(self, share: float) -> ProbeResult:
        """The same fit with ``share`` of the per-action loop cost moved after the message (a tail)."""
        t = share * self.per_action_us

        def moved(o: Overheads) -> Overheads:
            return replace(o, forward_us=round(max(0.0, o.forward_us - t), 1),
                           backward_us=round(max(0.0, o.backward_us - t), 1),
                           update_us=round(max(0.0, o.update_us - t), 1), tail_us=round(t, 1))

        base = self.overheads
        alone = moved(base.alone) if base.alone is not None else None
        return replace(self, overheads=replace(moved(base), alone=alone), tail_share=share)


def _stage_costs(profile: Any, split: Sequence[int], M: int) -> list[tuple[float, float, float]]:
    """Per stage: (forward of one micro-batch, its backward, the update) from the profile, ms — the
    timing models' own figures (:func:`ddgsim.predict.max_plus.costs_for_splits`, no overheads)."""
    from ddgsim.predict.max_plus import costs_for_splits
    from ddgsim.predict.scenario import ideal

    c = costs_for_splits(profile, [list(split)], ideal(len(split) + 1), micro_batches=M)
    return list(zip(c.forward_ms[0].tolist(), c.backward_ms[0].tolist(), c.update_ms[0].tolist(), strict=True))


def samples_of(metrics: dict[str, Any], profile: Any, split: Sequence[int], M: int, run: str,
               skip: int = SKIP) -> list[StageSample]:
    """One :class:`StageSample` per stage of a probe run's metrics."""
    K = len(split) + 1
    recv, send = messages([1] * K)
    costs = _stage_costs(profile, split, M)
    out = []
    for st in metrics["per_stage"]:
        k = st["stage"]
        f, b, u = costs[k]

        def med(key: str, st: dict[str, Any] = st) -> float:
            return float(statistics.median(st[key][skip:]))

        outside = [s - w - fw - bw - uw for s, w, fw, bw, uw in zip(
            st["step_ms"], st["wait_ms"], st["forward_ms"], st["backward_ms"], st["update_ms"], strict=True)]
        out.append(StageSample(
            run=run, stages=K, stage=k, micro_batches=M, messages=2 * M * (recv[k] + send[k]),
            forward_excess_ms=(med("forward_ms") - M * f) / M, backward_excess_ms=(med("backward_ms") - M * b) / M,
            update_excess_ms=med("update_ms") - u, outside_ms=float(statistics.median(outside[skip:]))))
    return out


def _excess(values: Sequence[float], glue_ms: float) -> float:
    """A figure in µs: the median window excess plus the loop's cost per action, at least 0."""
    return round(1e3 * max(0.0, float(statistics.median(values)) + glue_ms), 1)


def fit(samples: Sequence[StageSample]) -> ProbeResult:
    """The overheads from the probe runs' stages (module docstring)."""
    shared = [s for s in samples if s.stages > 1]
    alone = [s for s in samples if s.stages == 1]
    if not shared or not alone:
        raise ValueError("the overhead fit needs the one-process probe run and one of at least two stages")
    # The loop's cost per action, from the one-process run (no messages there) ...
    g = max(0.0, float(statistics.median(s.outside_ms / (2 * s.micro_batches + 1) for s in alone)))
    # ... and a message's from what remains on the stages of the others (least squares, ≥ 0).
    a = np.array([2 * s.micro_batches + 1 for s in shared], dtype=np.float64)
    m = np.array([s.messages for s in shared], dtype=np.float64)
    y = np.array([s.outside_ms for s in shared], dtype=np.float64)
    h = max(0.0, float(m @ (y - g * a) / (m @ m))) if m.any() else 0.0
    resid = float(np.max(np.abs(g * a + h * m - y)))
    lone = Overheads(forward_us=_excess([s.forward_excess_ms for s in alone], g),
                     backward_us=_excess([s.backward_excess_ms for s in alone], g),
                     update_us=_excess([s.update_excess_ms for s in alone], g))
    over = Overheads(
        forward_us=_excess([s.forward_excess_ms for s in shared], g),
        backward_us=_excess([s.backward_excess_ms for s in shared], g),
        update_us=_excess([s.update_excess_ms for s in shared], g),
        send_us=round(1e3 * h, 1), receive_us=round(1e3 * h, 1), alone=lone)
    return ProbeResult(overheads=over, per_action_us=1e3 * g, per_message_us=1e3 * h, samples=tuple(samples),
                       residual_us=1e3 * resid)


TAIL_SHARES = tuple(i / 10 for i in range(11))
"""The tail shares tried (:func:`choose_tail`)."""


def choose_tail(result: ProbeResult, runs: Sequence[tuple[str, Any, Sequence[int], str, int, float]],
                scenario: Scenario) -> ProbeResult:
    """The share of the loop's per-action cost that comes after the message, chosen as the one whose
    predictions of the probe runs' steps (``runs``: name, profile, split, schedule, M, measured ms)
    on ``scenario`` (this machine's links) are closest: the least root-mean-square relative error
    over the runs, ties to the smaller share. Where the loop's cost falls (before the message or
    after it) does not show in any one stage's busy time, only in how the stages wait for each other."""
    from ddgsim.predict.event_sim import simulate

    best: tuple[float, float, ProbeResult] | None = None
    for share in TAIL_SHARES:
        cand = result.with_tail(share)
        sc = replace(scenario, overheads=cand.overheads)
        got = [(name, measured, simulate(prof, list(split), sc, sched, micro_batches=M).iteration_ms)
               for name, prof, split, sched, M, measured in runs]
        err = float(np.sqrt(np.mean([((p - m) / m) ** 2 for _, m, p in got])))
        if best is None or err < best[0] - 1e-12:
            best = (err, share, replace(cand, runs=tuple(got)))
    assert best is not None
    return best[2]


def measure(scenario: Scenario, device: str = "cpu", threads: int = 1, reps: int = 20,
            workdir: Path | None = None) -> ProbeResult:
    """Profile the probe (``reps`` repetitions), run it in :data:`CONFIGS` (those with at most as many
    stages as ``scenario`` has devices: this machine's, as calibrated, its first devices used;
    :data:`ROUNDS` times, once below :data:`FULL_REPS`), fit, and choose the tail."""
    from ddgsim.execute.launch import run_plan
    from ddgsim.execute.measure import load_metrics, measured_step_ms
    from ddgsim.models.registry import build_model, get_spec
    from ddgsim.plan.build import plan_from_prediction
    from ddgsim.plan.records import ProfileRef
    from ddgsim.predict.event_sim import simulate
    from ddgsim.predict.scenario import ideal
    from ddgsim.profile.measure import profile_model

    spec = get_spec(PROBE)
    counts = sorted({M for _, _, M in CONFIGS if M > 1})
    cpu1 = device == "cpu" and threads == 1
    profile = profile_model(build_model(spec), name=PROBE, batch_size=PROBE_BATCH, io=spec.io, device=device,
                            threads=threads if device == "cpu" else None, reps=reps, progress=False,
                            command="ddgsim calibrate (overhead probe)", clock="thread" if cpu1 else "wall",
                            micro_batches=counts)
    with tempfile.TemporaryDirectory(prefix="ddgsim-probe-") as tmp:
        folder = workdir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        prof_path = folder / "probe.profile.json"
        profile.save(prof_path)
        ref = ProfileRef.of(profile, prof_path)
        configs = [(f"k{len(split) + 1}-{schedule}-m{M}", schedule, split, M) for schedule, split, M in CONFIGS
                   if len(split) + 1 <= len(scenario.devices)]
        plans = {}
        for name, schedule, split, M in configs:
            scen = ideal(len(split) + 1)
            sim = simulate(profile, list(split), scen, schedule, micro_batches=M)
            plans[name] = folder / f"{name}.plan.json"
            plan_from_prediction(profile, ref, scen.name, schedule, split, sim, micro_batches=M).save(plans[name])
        got: dict[str, list[tuple[list[StageSample], float]]] = {name: [] for name, *_ in configs}
        for r in range(ROUNDS if reps >= FULL_REPS else 1):  # interleaved: a slow spell hits every config
            for name, _, split, M in configs:
                metrics_path = folder / f"{name}.r{r}.metrics.json"
                with _quiet(folder / f"{name}.out"), _environment_kept():  # quiet; the launcher's env stays there
                    run_plan(plans[name], STEPS, threads, metrics_path, None, device, log_dir=folder / f"{name}.logs")
                metrics = load_metrics(metrics_path)
                got[name].append((samples_of(metrics, profile, split, M, name), measured_step_ms(metrics, SKIP)))
        samples: list[StageSample] = []
        runs = []
        for name, schedule, split, M in configs:
            samples += [_median(list(per_round)) for per_round in zip(*(s for s, _ in got[name]), strict=True)]
            runs.append((name, profile, split, schedule, M, float(statistics.median(t for _, t in got[name]))))
        return choose_tail(fit(samples), runs, scenario)


def _median(rounds: list[StageSample]) -> StageSample:
    """One stage's samples of several rounds of a run: the median of every figure."""
    def med(key: str) -> float:
        return float(statistics.median(getattr(s, key) for s in rounds))

    return replace(rounds[0], forward_excess_ms=med("forward_excess_ms"), backward_excess_ms=med("backward_excess_ms"),
                   update_excess_ms=med("update_excess_ms"), outside_ms=med("outside_ms"))
