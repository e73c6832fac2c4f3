"""``calibrate``: measure this machine's link and overheads and write a scenario TOML.

    python -m ddgsim calibrate --out ddgsim/scenarios/hardware/local.toml
    python -m ddgsim calibrate --device cuda --sizes 4,1048576,67108864 --reps 50 --out gpus.toml

The file loads with ``--scenario FILE`` (or ``--scenario local`` when written to
``ddgsim/scenarios/hardware/local.toml``). See :mod:`ddgsim.calibrate.measure` for the method.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ddgsim.commands._help import add_command
from ddgsim.errors import UserError


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(subparsers, "calibrate", help="measure this machine's link and write a scenario TOML",
                              description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cpu: gloo between two processes; cuda: NCCL between two GPUs (default cpu)")
    p.add_argument("--sizes", default=None, metavar="BYTES,..",
                   help="message sizes in bytes, multiples of 4 (default 4 B .. 32 MiB, 8 sizes)")
    p.add_argument("--reps", type=int, default=20, metavar="N", help="timed repetitions per size (default 20)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1, as the executor)")
    p.add_argument("--devices", type=int, default=None, metavar="N",
                   help="devices in the scenario (default: CPU cores, or CUDA GPUs)")
    p.add_argument("--name", default=None, help="scenario name (default: the file name without .toml)")
    p.add_argument("--out", required=True, metavar="FILE.toml", help="scenario file to write")
    p.add_argument("--json", action="store_true", help="print the measurements as JSON instead of a table")
    p.set_defaults(func=run)


def parse_sizes(text: str | None) -> list[int]:
    from ddgsim.calibrate.measure import SIZES

    if text is None:
        return list(SIZES)
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--sizes must be comma-separated byte counts, got '{text}'") from None
    bad = [s for s in sizes if s < 4 or s % 4]
    if bad or len(set(sizes)) < 2:
        raise UserError(f"--sizes needs at least 2 different sizes, each a multiple of 4 and >= 4, got '{text}'")
    return sizes


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix != ".toml":
        raise UserError(f"--out must end in .toml, got '{out}'")
    if out.parent and not out.parent.exists():
        raise UserError(f"--out: folder '{out.parent}' does not exist")
    sizes = parse_sizes(args.sizes)
    from ddgsim.calibrate.measure import allreduce_check, measure, write_scenario

    print(f"calibrating {args.device}: {len(sizes)} sizes x {args.reps} reps, {args.threads} thread(s) "
          "per process ...", file=sys.stderr, flush=True)
    cal = measure(args.device, sizes, args.reps, args.threads, args.devices)
    command = "python -m ddgsim calibrate " + shlex.join(sys.argv[2:] if sys.argv[1:2] == ["calibrate"] else [])
    write_scenario(cal, out, args.name, command=command.strip())
    link = cal.link
    if args.json:
        import json

        print(json.dumps({"device": args.device, "sizes": list(link.sizes), "one_way_ms": list(link.one_way_ms),
                          "message_cpu_ms": list(cal.message_cpu_ms),
                          "latency_us": link.latency_us, "bandwidth_gb_s": link.bandwidth_gb_s,
                          "max_rel_residual": link.max_rel_residual, "step_overhead_ms": cal.step_overhead_ms,
                          "concurrent_speed": cal.concurrent_speed,
                          "overheads": cal.overheads.overheads.as_dict() if cal.overheads is not None else None,
                          "allreduce": allreduce_check(cal), "scenario": str(out)}, indent=1))
        print(f"wrote {out}", file=sys.stderr)
        return 0
    print(f"{'bytes':>10} {'one-way ms':>11} {'fit ms':>9}" + (" CPU ms per message and end" if cal.message_cpu_ms else ""))
    for i, (n, t) in enumerate(zip(link.sizes, link.one_way_ms, strict=True)):
        cpu = f" {cal.message_cpu_ms[i]:>12.4f}" if cal.message_cpu_ms else ""
        print(f"{n:>10} {t:>11.4f} {link.predict_ms(n):>9.4f}{cpu}")
    print(f"link: {link.latency_us:.1f} us + bytes / {link.bandwidth_gb_s:.3f} GB/s "
          f"(largest residual {100 * link.max_rel_residual:.1f}%)")
    print(f"{'all-reduce':>10} {'mean ms':>11} {'(fastest-slowest)':>19} {'link model':>10} {'error':>7}")
    for r in allreduce_check(cal):
        spread = f"({r['low_ms']:.4f}-{r['high_ms']:.4f})"
        print(f"{int(r['bytes']):>10} {r['measured_ms']:>11.4f} {spread:>19} "
              f"{r['predicted_ms']:>9.4f} {r['error_pct']:>+6.1f}%")
    print(f"executor step overhead {cal.step_overhead_ms:.3f} ms; concurrent compute speed "
          f"{cal.concurrent_speed:.3f} ({cal.compute_alone_ms:.2f} ms alone, {cal.compute_together_ms:.2f} ms together)")
    if cal.overheads is not None:
        o = cal.overheads.overheads
        alone = o.alone or o
        print(f"executor overheads per action (us): F {o.forward_us:g}, B {o.backward_us:g}, U {o.update_us:g}, "
              f"message {o.send_us:g}, tail {o.tail_us:g}; one process alone: F {alone.forward_us:g}, "
              f"B {alone.backward_us:g}, U {alone.update_us:g}, tail {alone.tail_us:g}")
    print(f"load average before {cal.meta['loadavg_before']}, after {cal.meta['loadavg_after']}")
    print(f"wrote {out}")
    return 0
