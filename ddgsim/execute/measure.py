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

import itertools
import statistics
from pathlib import Path
from typing import Any

from ddgsim.errors import UserError
from ddgsim.fileio import write_json_atomic
from ddgsim.trace import TraceEvent, write_trace

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


def metrics(job: Any, reports: list[dict[str, Any]]) -> dict[str, Any]:
    steps = step_times(reports)
    med = statistics.median(steps) if steps else float("nan")
    reports = sorted(reports, key=_order)
    last = next(r for r in reports if r["stage"] == max(x["stage"] for x in reports))
    losses = last["losses"]
    keys = ("step_ms", "forward_ms", "backward_ms", "update_ms", "wait_ms", "comm_ms")
    return {
        "format": FORMAT,
        "plan": str(job.config.plan), "model": job.plan.model, "schedule": job.plan.schedule,
        "stages": job.num_stages, "split": list(job.plan.split), "batch_size": job.plan.batch_size,
        "micro_batches": job.plan.micro_batches, "replicas": list(job.plan.replicas),
        "steps": job.config.steps, "backend": job.backend,
        "threads": job.config.threads, "data": job.config.data, "data_source": last.get("data_source") or None,
        "per_stage": [
            {"stage": r["stage"], "replica": r.get("replica", 0), "device": r["device"],
             "iterations": r["iterations"], **{k: [round(v, 4) for v in r[k]] for k in keys},
             **({"weights_sha256": r["weights_sha256"]} if "weights_sha256" in r else {}),
             **({"peak_memory_bytes": r["peak_memory_bytes"], "memory_method": r["memory_method"]}
                if r.get("peak_memory_bytes") is not None else {}),
             **{k: [round(v, 4) for v in r[k]] for k in DEVICE_KEYS if k in r}}
            for r in reports
        ],
        "losses": [losses.get(t, losses.get(str(t))) for t in range(job.config.steps)],
        "test_accuracy": _test(last, "accuracy"),
        "test_loss": _test(last, "loss"),
        "test_bits_per_token": _test(last, "bits_per_token"),
        "predicted": job.plan.predicted,
        "summary": {
            "median_step_ms": med,
            "samples_per_s": job.plan.batch_size / (med / 1e3) if steps and med > 0 else float("nan"),
            "wall_s": max(r["wall_s"] for r in reports),
            "final_loss": losses.get(job.config.steps - 1),
            "test_accuracy": _test(last, "accuracy"),
            "test_loss": _test(last, "loss"),
            "test_bits_per_token": _test(last, "bits_per_token"),
            "per_stage_median_ms": {
                k: [max(statistics.median(r[k]) if r[k] else 0.0 for r in reports if r["stage"] == s)
                    for s in sorted({r["stage"] for r in reports})]
                for k in keys
            },
        },
    }


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
        write_json_atomic(Path(metrics_path), metrics(job, reports))
    if trace_path:
        events, rows = trace_events(reports, job.num_stages)
        write_trace(trace_path, events, process="measured", rows=rows,
                    metadata={"plan": str(job.config.plan), "schedule": job.plan.schedule})


def summarize(job: Any, reports: list[dict[str, Any]]) -> str:
    m = metrics(job, reports)["summary"]
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


def versus_prediction(predicted: dict[str, Any] | None, summary: dict[str, Any]) -> str:
    """The plan's prediction beside the measurement: iteration time, samples/s, per stage busy
    and bubble, and how far apart they are ("" when the plan carries no prediction)."""
    if not predicted or "iteration_ms" not in predicted:
        return ""
    pred, meas = float(predicted["iteration_ms"]), float(summary["median_step_ms"])
    if not (meas > 0 and pred > 0):
        return ""
    err = 100 * (pred - meas) / meas
    lines = [f"predicted {pred:.1f} ms/iteration ({float(predicted.get('samples_per_s', 0)):.1f} samples/s), "
             f"measured {meas:.1f} ms ({summary['samples_per_s']:.1f} samples/s): the prediction is "
             f"{abs(err):.1f}% {'above' if err > 0 else 'below'} the measurement"]
    per = summary["per_stage_median_ms"]
    busy_pred, bubble_pred = predicted.get("busy_ms") or [], predicted.get("bubble_fraction") or []
    for k, (f, b, u) in enumerate(zip(per["forward_ms"], per["backward_ms"], per["update_ms"], strict=True)):
        busy = f + b + u
        bubble = max(0.0, 1 - busy / meas)
        p_busy = f"{busy_pred[k]:.1f}" if k < len(busy_pred) else "?"
        p_bub = f"{100 * max(0.0, bubble_pred[k]):.0f}%" if k < len(bubble_pred) else "?"
        lines.append(f"  stage {k}: busy {busy:.1f} ms (predicted {p_busy}), idle {100 * bubble:.0f}% "
                     f"(predicted {p_bub})")
    return "\n".join(lines)
