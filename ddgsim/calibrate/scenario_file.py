"""The scenario a calibration writes: :func:`scenario_toml` (devices, a full mesh of the fitted
link, the measured all-reduce curve, the executor's overheads, and comments on how and when) and
:func:`write_scenario` (atomically, loaded back before it stays)."""

from __future__ import annotations

import math
import os
from pathlib import Path

from ddgsim.calibrate.overhead_probe import ProbeResult
from ddgsim.calibrate.results import TRIM, WARMUP, Calibration, allreduce_check
from ddgsim.errors import UserError

HOST = "local"
"""The ``host`` of the calibrated devices (one machine), which its ``[[allreduce]]`` names."""


def host_slots(cpu_count: object, threads: int) -> int:
    """Stage processes of ``threads`` threads that compute at once on ``cpu_count`` CPUs (at least 1)."""
    cpus = cpu_count if isinstance(cpu_count, int) and cpu_count > 0 else 1
    return max(1, cpus // max(1, threads))


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _num(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:.6g}"


def scenario_toml(cal: Calibration, name: str = "local", command: str = "") -> str:
    """The scenario file text: devices, a full mesh of the fitted link, comments on how and when."""
    link, m = cal.link, cal.meta
    prefix = "gpu" if cal.device == "cuda" else "cpu"
    lines = [
        f"# Calibrated by `{command or 'python -m ddgsim calibrate'}`",
        f"# on {m.get('date')} ({m.get('host')}: {m.get('gpu') or m.get('cpu')}, {m.get('cpu_count')} CPUs,",
        f"# torch {m.get('torch_version')}, python {m.get('python_version')}), {cal.threads} thread(s) per process,",
        f"# load average before {m.get('loadavg_before')} and after {m.get('loadavg_after')} (a busy machine skews",
        "# every figure below; calibrate on a quiet one).",
        "#",
        f"# Link: two processes, {cal.backend}, blocking send/recv ping-pong of float32 tensors; one-way time",
        f"# = half the median round trip over {cal.reps} repetitions ({WARMUP} untimed first). Fit of",
        "# time = latency + bytes / bandwidth by non-negative least squares, weights 1/time:",
        "#        bytes   one-way ms     fit ms" + ("   CPU ms per message and end" if cal.message_cpu_ms else ""),
    ]
    cpu = cal.message_cpu_ms or (None,) * len(link.sizes)
    for n, t, c in zip(link.sizes, link.one_way_ms, cpu, strict=True):
        lines.append(f"# {n:>12} {t:>12.4f} {link.predict_ms(n):>10.4f}" + (f" {c:>12.4f}" if c is not None else ""))
    lines += [
        f"# latency {link.latency_us:.2f} us, bandwidth {link.bandwidth_gb_s:.3f} GB/s, largest relative "
        f"residual {100 * link.max_rel_residual:.1f}%.",
        "# Measured between the first two devices only; every pair is assumed to be the same.",
        "#",
        *_allreduce_comment(cal),
        "# For reference (the [overheads] table below is what the timing models use):",
        "#   StageWorker F+B+U in-process on a one-parameter stage (SGD momentum 0.9,",
        f"#   Nesterov, weight decay 5e-4): {cal.step_overhead_ms:.4f} ms",
        f"#   reference kernel (conv block fwd+bwd, batch 16): {cal.compute_alone_ms:.3f} ms with one process",
        f"#   computing, {cal.compute_together_ms:.3f} ms with two at once -> speed {cal.concurrent_speed:.3f} when",
        "#   stages compute concurrently. Device speeds below stay 1.0 (relative to a profile measured on",
        "#   one device alone); on CPU the devices share one host, and the simulator slows each by",
        "#   concurrent_speed (at most 1) for the share of its compute that overlaps the other's.",
        f"name = {_toml_str(name)}",
        "description = " + _toml_str(
            f"calibrated {m.get('date')}: {cal.devices} x {cal.device}, {cal.backend}, "
            f"{link.latency_us:.1f} us + bytes / {link.bandwidth_gb_s:.2f} GB/s; step overhead "
            f"{cal.step_overhead_ms:.3f} ms; concurrent compute speed {cal.concurrent_speed:.3f}"),
    ]
    if cal.device == "cpu":
        lines.append(f"concurrent_speed = {min(1.0, round(cal.concurrent_speed, 3))}")
        slots = host_slots(m.get("cpu_count"), cal.threads)
        lines += [f"# {m.get('cpu_count')} CPUs over {cal.threads} thread(s) per process: while more processes compute,",
                  "# the operating system shares the cores among them",
                  f"host_slots = {slots}"]
    lines.append("")
    if cal.overheads is not None:
        lines += _overheads_toml(cal.overheads)
    names = [f"{prefix}{i}" for i in range(cal.devices)]
    for d in names:
        lines += ["[[devices]]", f"name = {_toml_str(d)}", "speed = 1.0", f"memory_gib = {_num(cal.memory_gib)}",
                  f"host = {_toml_str(HOST)}", ""]
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            lines += ["[[links]]", f"src = {_toml_str(a)}", f"dst = {_toml_str(b)}",
                      f"bandwidth_gb_s = {_num(link.bandwidth_gb_s)}", f"latency_us = {link.latency_us:.3f}",
                      "bidirectional = true", ""]
    if len(cal.allreduce) >= 2:  # a curve (calibrate itself always measures several sizes)
        lines += ["[[allreduce]]", f"host = {_toml_str(HOST)}", "replicas = 2",
                  "sizes = [" + ", ".join(str(x.nbytes) for x in cal.allreduce) + "]",
                  "ms = [" + ", ".join(f"{x.mean_ms:.6g}" for x in cal.allreduce) + "]", ""]
    return "\n".join(lines)


def _overheads_toml(probe: ProbeResult) -> list[str]:
    """The ``[overheads]`` table and how it was measured (:mod:`ddgsim.calibrate.overhead_probe`)."""
    from ddgsim.calibrate.overhead_probe import PROBE_BATCH

    lines = [
        "# The executor's fixed cost per action beyond the profile's compute (ddgsim.predict.overheads),",
        f"# measured by running the executor on a probe model (a 64-16-8-10 MLP, batch {PROBE_BATCH}) whose",
        "# units cost almost nothing, in situ profile subtracted (ddgsim.calibrate.overhead_probe):",
        f"#   the loop's cost per action {probe.per_action_us:.1f} us, per message posted or taken "
        f"{probe.per_message_us:.1f} us",
        f"#   (largest residual of the fit {probe.residual_us:.1f} us); {100 * probe.tail_share:.0f}% of the loop's "
        "cost comes after",
        "#   the action's message (tail_us): the share whose predictions of the probe runs were closest:",
    ]
    for name, measured, predicted in probe.runs:
        lines.append(f"#   {name:<14} measured {measured:.3f} ms, predicted {predicted:.3f} ms "
                     f"({100 * (predicted - measured) / measured:+.1f}%)")
    over = probe.overheads
    if over.message_sizes:
        lines += ["# What a message's bytes cost each of its two processes beyond a small message's (the least), from the",
                  "# link's ping-pong timed in process CPU time (half a round trip's, median; never above a larger",
                  "# size's): message_sizes (bytes) and message_cpu_us below, charged to every F and B per message."]
    lines.append("[overheads]")
    lines += [f"{k} = {_value(v)}" for k, v in over.as_dict().items() if k != "alone"]
    if over.alone is not None:
        lines += ["", "# a job of one process (alone on the host; its optimizer step is the profile's whole step)",
                  "[overheads.alone]"]
        lines += [f"{k} = {v:g}" for k, v in over.alone.as_dict().items()]
    return [*lines, ""]


def _value(v: float | list[float]) -> str:
    return "[" + ", ".join(f"{x:.10g}" for x in v) + "]" if isinstance(v, list) else f"{v:g}"


def _allreduce_comment(cal: Calibration) -> list[str]:
    if not cal.allreduce:
        return []
    lines = [f"# All-reduce of 2 processes ({cal.backend} dist.all_reduce, float32) over {cal.reps} repetitions",
             f"# interleaved over the sizes: mean of the middle {100 - 200 * TRIM:g}%, median (fastest-slowest),",
             "# and what the link above would predict (a ring of 2). The means are the [[allreduce]] table",
             "# at the end: an all-reduce among 2 of these devices takes them (interpolated), not the link model.",
             "#        bytes    mean ms  median ms (spread)          link model ms   error"]
    for r in allreduce_check(cal):
        lines.append(f"# {int(r['bytes']):>12} {r['measured_ms']:>10.4f} {r['median_ms']:>10.4f} "
                     f"({r['low_ms']:.4f}-{r['high_ms']:.4f}) {r['predicted_ms']:>12.4f} {r['error_pct']:>+7.1f}%")
    return [*lines, "#"]


def write_scenario(cal: Calibration, path: Path, name: str | None = None, command: str = "") -> None:
    """Write atomically, then load it back with the simulator's loader (a bad file never stays)."""
    from ddgsim.predict.scenario import load_file

    text = scenario_toml(cal, name or path.stem, command)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    try:
        load_file(tmp)
    except UserError:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
