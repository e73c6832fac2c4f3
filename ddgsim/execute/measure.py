"""Measured timings of a run: the ``--metrics`` JSON and the ``--trace`` Chrome trace.

Per stage and per iteration: time in forward, backward, update (compute only),
waiting (blocked on a receive, ``W`` included), and communication (posting
receives/sends and waiting for sends to finish). A stage's step time is the time
between the ends of two consecutive iterations of that stage; the run's step time
for iteration t is the gap between the moments the *slowest* stage finished t−1
and t, and the summary reports its median (the first iteration, which includes
the pipeline's fill, counts only if it is the only one).

Clocks: each process measures from its own ``perf_counter`` right after a barrier,
so rows of different stages line up to within the barrier's skew (tens of µs on
one host; across nodes, the network round trip). Link rows show each send from the
moment it was posted to the moment its completion was observed by the sender
(completion is polled at action boundaries, so a link bar may end late).

Replicated stages: one ``per_stage`` row per process (stage, replica), in rank order;
``comm_ms`` includes the all-reduce of the gradients before each update;
``summary.per_stage_median_ms`` has one value per stage, its slowest replica's median;
losses and the test pass are replica 0's of the last stage (the loss is the batch's,
summed over the replicas).
"""

from __future__ import annotations

import copy
import itertools
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ddgsim.errors import UserError
from ddgsim.fileio import write_json_atomic
from ddgsim.plan.records import Prediction
from ddgsim.trace import TraceEvent, write_trace

if TYPE_CHECKING:
    from ddgsim.plan.format import Plan

FORMAT = "ddgsim-metrics/1"


def step_times(per_stage: list[dict[str, Any]]) -> list[float]:
    """The run's step times (ms): gaps between the moments the slowest stage ended consecutive
    iterations, from each stage's ``iterations`` and ``step_ms`` (a report or a metrics row).
    A run of one iteration has one step: its end."""
    ends: dict[int, float] = {}
    for st in per_stage:
        for it, end in zip(st["iterations"], itertools.accumulate(st["step_ms"]), strict=True):
            ends[it] = max(ends.get(it, 0.0), end)
    its = sorted(ends)
    steps = [ends[b] - ends[a] for a, b in itertools.pairwise(its)]
    return steps or [ends[its[0]]] if its else []


def measured_step_ms(metrics: dict[str, Any], warmup: int) -> float:
    """Median step time of a run's metrics (:func:`step_times`), the first ``warmup`` dropped."""
    if len({it for st in metrics["per_stage"] for it in st["iterations"]}) < 2:
        raise UserError("a run needs at least 2 steps to measure an iteration time")
    gaps = step_times(metrics["per_stage"])
    kept = gaps[min(warmup, len(gaps) - 1):]
    return float(statistics.median(kept))


def _order(report: dict[str, Any]) -> tuple[int, int]:
    return report["stage"], report.get("replica", 0)


DEVICE_KEYS = ("device_forward_ms", "device_backward_ms", "device_update_ms")
"""Per iteration, the GPU's own compute time (CUDA events, :mod:`ddgsim.execute.devtime`); CUDA runs only."""


EXECUTOR_KEYS = ("format", "plan", "model", "schedule", "stages", "split", "batch_size", "micro_batches", "replicas",
                 "steps", "backend", "threads", "data", "data_source", "per_stage", "losses", "test_accuracy",
                 "test_loss", "test_bits_per_token", "predicted", "summary")
"""The keys of the executor's metrics, in the file's order."""
RUNTIME_KEYS = ("format", "runtime", "plan", "model", "schedule", "micro_batches", "stages", "split", "batch_size",
                "steps", "data", "per_stage", "losses", "predicted", "summary")
"""The keys of another runtime's metrics (``validate --runtimes torch``), in the file's order."""
_OMITTED_IF_NONE = frozenset({"replicas", "backend", "threads", "data"})
"""Keys the schema does not let be null: left out when unknown (an older file read back)."""


@dataclass(frozen=True, kw_only=True)
class Metrics:
    """A run's measurements: the ``ddgsim-metrics/1`` file (``ddgsim/schemas/metrics.schema.json``).

    Built once, by :func:`build_metrics`, for the executor and for another runtime alike;
    ``to_json(from_json(d)) == d``, key order included, for every file either writes.
    """

    plan: str
    """The plan file run."""
    model: str
    schedule: str
    stages: int
    split: tuple[int, ...]
    batch_size: int
    micro_batches: int
    steps: int
    per_stage: tuple[dict[str, Any], ...]
    """One row per process (stage-major, replica order): the executor's timings, or another runtime's report."""
    losses: tuple[float | None, ...]
    """The last stage's loss of every iteration (``None`` where not recorded)."""
    summary: dict[str, Any]
    """``median_step_ms`` and ``samples_per_s``; the executor's also wall time, final loss, test pass and
    per-stage medians."""
    predicted: Prediction = field(default_factory=Prediction)
    """The plan's prediction, copied."""
    runtime: str | None = None
    """Who ran the plan: ``None`` for the ddgsim executor, else e.g. ``torch.distributed.pipelining``."""
    replicas: tuple[int, ...] | None = None
    backend: str | None = None
    threads: int | None = None
    data: str | None = None
    data_source: str | None = None
    test_accuracy: float | None = None
    test_loss: float | None = None
    test_bits_per_token: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The metrics file's object: the executor's keys, or another runtime's (what it measures)."""
        full: dict[str, Any] = {
            "format": FORMAT, "runtime": self.runtime, "plan": self.plan, "model": self.model,
            "schedule": self.schedule, "stages": self.stages, "split": list(self.split),
            "batch_size": self.batch_size, "micro_batches": self.micro_batches,
            "replicas": None if self.replicas is None else list(self.replicas), "steps": self.steps,
            "backend": self.backend, "threads": self.threads, "data": self.data, "data_source": self.data_source,
            "per_stage": [dict(r) for r in self.per_stage], "losses": list(self.losses),
            "test_accuracy": self.test_accuracy, "test_loss": self.test_loss,
            "test_bits_per_token": self.test_bits_per_token, "predicted": self.predicted.to_json(),
            "summary": copy.deepcopy(self.summary),
        }
        keys = RUNTIME_KEYS if self.runtime is not None else EXECUTOR_KEYS
        return {k: full[k] for k in keys if not (k in _OMITTED_IF_NONE and full[k] is None)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Metrics:
        """A metrics file's object (:func:`load_metrics` checks it against the schema)."""
        return cls(
            plan=data["plan"], model=data["model"], schedule=data["schedule"], stages=data["stages"],
            split=tuple(data["split"]), batch_size=data["batch_size"], micro_batches=data.get("micro_batches", 1),
            steps=data["steps"], per_stage=tuple(data["per_stage"]), losses=tuple(data["losses"]),
            summary=dict(data["summary"]), predicted=Prediction.from_json(data.get("predicted", {})),
            runtime=data.get("runtime"), replicas=tuple(data["replicas"]) if "replicas" in data else None,
            backend=data.get("backend"), threads=data.get("threads"), data=data.get("data"),
            data_source=data.get("data_source"), test_accuracy=data.get("test_accuracy"),
            test_loss=data.get("test_loss"), test_bits_per_token=data.get("test_bits_per_token"),
        )


STAGE_KEYS = ("step_ms", "forward_ms", "backward_ms", "update_ms", "wait_ms", "comm_ms")
"""Per iteration, what each executor process measures (ms)."""


def build_metrics(plan: Plan, plan_path: str | os.PathLike[str], steps: int, reports: list[dict[str, Any]], *,
                  data: str, runtime: str | None = None, skip: int = 0, backend: str | None = None,
                  threads: int | None = None) -> Metrics:
    """The one builder of a run's metrics, from its processes' reports (one per process, as
    :func:`step_times` reads them).

    The ddgsim executor's reports (``runtime`` None) carry every timing, the losses and the test
    pass; another runtime's only their step times, kept as reported. The summary's median drops
    the first ``skip`` step gaps.
    """
    gaps = step_times(reports)
    med = statistics.median(gaps[skip:] or gaps) if gaps else float("nan")
    summary: dict[str, Any] = {
        "median_step_ms": med,
        "samples_per_s": plan.batch_size / (med / 1e3) if gaps and med > 0 else float("nan"),
    }
    common: dict[str, Any] = dict(
        plan=str(plan_path), model=plan.model, schedule=plan.schedule, stages=plan.num_stages,
        split=tuple(plan.split), batch_size=plan.batch_size, micro_batches=plan.micro_batches, steps=steps,
        predicted=plan.predicted, data=data)
    if runtime is not None:
        return Metrics(**common, runtime=runtime, per_stage=tuple(reports), losses=(None,) * steps, summary=summary)
    reports = sorted(reports, key=_order)
    last = next(r for r in reports if r["stage"] == max(x["stage"] for x in reports))
    losses = last["losses"]
    summary.update({
        "wall_s": max(r["wall_s"] for r in reports),
        "final_loss": losses.get(steps - 1),
        "test_accuracy": _test(last, "accuracy"),
        "test_loss": _test(last, "loss"),
        "test_bits_per_token": _test(last, "bits_per_token"),
        "per_stage_median_ms": {
            k: [max(statistics.median(r[k]) if r[k] else 0.0 for r in reports if r["stage"] == s)
                for s in sorted({r["stage"] for r in reports})]
            for k in STAGE_KEYS
        },
    })
    rows = tuple(
        {"stage": r["stage"], "replica": r.get("replica", 0), "device": r["device"],
         "iterations": r["iterations"], **{k: [round(v, 4) for v in r[k]] for k in STAGE_KEYS},
         **({"weights_sha256": r["weights_sha256"]} if "weights_sha256" in r else {}),
         **({"peak_memory_bytes": r["peak_memory_bytes"], "memory_method": r["memory_method"]}
            if r.get("peak_memory_bytes") is not None else {}),
         **{k: [round(v, 4) for v in r[k]] for k in DEVICE_KEYS if k in r}}
        for r in reports
    )
    return Metrics(
        **common, replicas=tuple(plan.replicas), backend=backend, threads=threads,
        data_source=last.get("data_source") or None, per_stage=rows,
        losses=tuple(losses.get(t, losses.get(str(t))) for t in range(steps)),
        test_accuracy=_test(last, "accuracy"), test_loss=_test(last, "loss"),
        test_bits_per_token=_test(last, "bits_per_token"), summary=summary,
    )


def metrics(job: Any, reports: list[dict[str, Any]]) -> Metrics:
    """The executor's metrics of ``job`` (:func:`build_metrics`)."""
    return build_metrics(job.plan, job.config.plan, job.config.steps, reports, data=job.config.data,
                         backend=job.backend, threads=job.config.threads)


def load_metrics(path: str | Path) -> dict[str, Any]:
    """Read a ``--metrics`` file back, checked against its schema."""
    from ddgsim.fileio import read_json
    from ddgsim.schemas import check

    data: dict[str, Any] = read_json(path, "metrics")
    check(data, "metrics", str(path))
    return data


def _test(report: dict[str, Any], key: str) -> float | None:
    """One figure of the last stage's test pass (``None`` without one, or not defined for the target)."""
    test = report.get("test") or {}
    value = test.get(key)
    return None if value is None else float(value)


def trace_events(reports: list[dict[str, Any]], K: int) -> tuple[list[TraceEvent], list[str]]:
    events: list[TraceEvent] = []
    rows = [r["device"] for r in sorted(reports, key=_order)]
    for r in reports:
        for name, s, e, kind in r["events"]:
            events.append(TraceEvent(row=r["device"], name=name, start_ms=s, end_ms=e, cat=kind))
    by_stage = {r["stage"]: r["device"] for r in reports}
    for r in reports:
        k = r["stage"]
        for s, e, name, nbytes, *to in r["sends"]:
            if to:  # the destination's device (every send of the ddgsim executor names it)
                dst = to[0]
            elif name.startswith("act"):
                dst = by_stage.get(k + 1, "?")
            elif name.startswith("grad"):
                dst = by_stage.get(k - 1, "?")
            else:
                continue
            events.append(TraceEvent(row=f"{r['device']}->{dst}", name=name, start_ms=s, end_ms=e,
                                     cat="link", args={"bytes": nbytes}))
    return events, rows


def write_outputs(job: Any, reports: list[dict[str, Any]], metrics_path: Path | None, trace_path: Path | None) -> None:
    if metrics_path:
        write_json_atomic(Path(metrics_path), metrics(job, reports).to_json())
    if trace_path:
        events, rows = trace_events(reports, job.num_stages)
        write_trace(trace_path, events, process="measured", rows=rows,
                    metadata={"plan": str(job.config.plan), "schedule": job.plan.schedule})


def summarize(job: Any, reports: list[dict[str, Any]]) -> str:
    m = metrics(job, reports).summary
    acc = m["test_accuracy"]
    acc_s = f", test accuracy {100 * acc:.2f}%" if acc is not None else ""
    if m["test_bits_per_token"] is not None:
        acc_s += f", test loss {m['test_loss']:.4f} ({m['test_bits_per_token']:.3f} bits per token)"
    reps = f" D=({','.join(map(str, job.plan.replicas))})" if job.plan.world_size > job.num_stages else ""
    line = (f"{job.plan.schedule} K={job.num_stages}{reps}: {job.config.steps} steps, median step "
            f"{m['median_step_ms']:.1f} ms, {m['samples_per_s']:.1f} samples/s, final loss "
            f"{_loss(m['final_loss'])}{acc_s}")
    versus = versus_prediction(job.plan.predicted, m)
    return line + ("\n" + versus if versus else "")


def _loss(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def versus_prediction(predicted: Prediction | None, summary: dict[str, Any]) -> str:
    """The plan's prediction beside the measurement: iteration time, samples/s, per stage busy
    and bubble, and how far apart they are ("" when the plan carries no prediction)."""
    if predicted is None or predicted.iteration_ms is None:
        return ""
    pred, meas = float(predicted.iteration_ms), float(summary["median_step_ms"])
    if not (meas > 0 and pred > 0):
        return ""
    err = 100 * (pred - meas) / meas
    lines = [f"predicted {pred:.1f} ms/iteration ({float(predicted.samples_per_s or 0):.1f} samples/s), "
             f"measured {meas:.1f} ms ({summary['samples_per_s']:.1f} samples/s): the prediction is "
             f"{abs(err):.1f}% {'above' if err > 0 else 'below'} the measurement"]
    per = summary["per_stage_median_ms"]
    busy_pred, bubble_pred = predicted.busy_ms or (), predicted.bubble_fraction or ()
    for k, (f, b, u) in enumerate(zip(per["forward_ms"], per["backward_ms"], per["update_ms"], strict=True)):
        busy = f + b + u
        bubble = max(0.0, 1 - busy / meas)
        p_busy = f"{busy_pred[k]:.1f}" if k < len(busy_pred) else "?"
        p_bub = f"{100 * max(0.0, bubble_pred[k]):.0f}%" if k < len(bubble_pred) else "?"
        lines.append(f"  stage {k}: busy {busy:.1f} ms (predicted {p_busy}), idle {100 * bubble:.0f}% "
                     f"(predicted {p_bub})")
    return "\n".join(lines)
