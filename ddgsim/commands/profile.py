"""``ddgsim profile MODEL``: measure (or reuse) a per-unit profile and summarise it.

Launch lines used for the bundled reference profiles::

    python -m ddgsim profile resnet110 --batch-size 128 --threads 1 --reps 5 --clock thread \\
        --no-cache --out ddgsim/scenarios/profiles/resnet110-b128-cpu-t1.json
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from ddgsim.commands._help import add_command


def device_arg(text: str) -> str:
    """``--device``: ``cpu``, ``cuda`` or ``cuda:N``."""
    if re.fullmatch(r"cpu|cuda(:\d+)?", text):
        return text
    raise argparse.ArgumentTypeError(f"'{text}' is not a device (accepted: cpu, cuda, cuda:N)")

def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(subparsers, "profile", help="measure a model's per-unit costs",
                              description="Measure forward/backward time and memory of every unit of "
                              "MODEL with real PyTorch runs; reuse a bundled or cached profile if one exists.")
    p.add_argument("model", help="model name (see 'ddgsim models') or 'package.module:factory'")
    p.add_argument("--batch-size", type=int, default=128, metavar="B", help="samples per batch (default 128)")
    p.add_argument("--device", type=device_arg, default="cpu", metavar="DEVICE",
                   help="where to measure: cpu, cuda (the current GPU) or cuda:N (default cpu)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads (torch.set_num_threads; default 1 for stable figures; ignored on cuda)")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions per unit (median; default 5)")
    p.add_argument("--clock", choices=("wall", "thread"), default="wall",
                   help="figures in the rows: wall time (default) or the compute thread's CPU time "
                   "(cpu, --threads 1 only; steadier on a machine shared with other jobs)")
    p.add_argument("--method", choices=("in-situ", "isolated"), default="in-situ",
                   help="figures in the rows: each unit timed inside whole-model training steps (default) or "
                   "alone on a copy of its input; both are measured and summarised in the profile")
    p.add_argument("--micro-batches", metavar="M[,M..]", default="",
                   help="also time one micro-batch of B/M samples inside GPipe-order steps, for each M "
                   "(for gpipe/1f1b predictions), e.g. 2,4")
    p.add_argument("--out", metavar="FILE", help="also write the profile JSON here")
    p.add_argument("--no-cache", action="store_true",
                   help="measure even if a matching profile of this machine is cached, and do not write the cache")
    p.add_argument("--bundled", action="store_true",
                   help="use the profile bundled with ddgsim for this request, whatever machine it describes, "
                   "instead of measuring")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--input-shape", metavar="C,H,W", help="one sample's shape (default: the model's)")
    p.add_argument("--vocab", type=int, metavar="V",
                   help="the input is token ids in [0, V) (int64), e.g. a language model (default: the model's)")
    p.set_defaults(func=run)


def _check_out(out: str) -> Path:
    from ddgsim.errors import UserError

    path = Path(out)
    if path.is_dir():
        raise UserError(f"--out {out} is a directory; give a file name")
    parent = path.parent if str(path.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise UserError(f"--out {out}: {parent} is not a directory")
    if not parent.is_dir():
        raise UserError(f"--out {out}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"--out {out}: directory {parent} is not writable")
    return path


def run(args: argparse.Namespace) -> int:
    import shlex
    import sys

    from ddgsim.commands._args import parse_ints, parse_shape, require_positive
    from ddgsim.errors import UserError
    from ddgsim.fileio import write_json_atomic
    from ddgsim.models.registry import get_spec
    from ddgsim.profile.store import get_profile

    require_positive("--batch-size", args.batch_size)
    require_positive("--threads", args.threads)
    require_positive("--reps", args.reps)
    shape = parse_shape(args.input_shape) if args.input_shape else None
    if args.vocab is not None:
        require_positive("--vocab", args.vocab)
    out = _check_out(args.out) if args.out else None
    spec = get_spec(args.model)
    threads: int | None = args.threads
    if args.clock == "thread" and (args.device != "cpu" or args.threads != 1):
        raise UserError("--clock thread needs --device cpu and --threads 1")
    kind = args.device.split(":", 1)[0]
    if kind == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"--device {args.device}: CUDA is not available on this machine (use --device cpu)")
        index = int(args.device.split(":", 1)[1]) if ":" in args.device else 0
        if index >= torch.cuda.device_count():
            raise UserError(f"--device {args.device}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                            f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
        threads = None
    micro = parse_ints(args.micro_batches, "--micro-batches") if args.micro_batches else ()
    from ddgsim.profile.format import check_micro_batches

    check_micro_batches(args.batch_size, micro)
    if args.bundled:
        from ddgsim.profile.store import bundled_dir, bundled_profile

        found = bundled_profile(spec.name, args.batch_size, kind, threads)
        if found is None:
            raise UserError(f"--bundled: no bundled profile for {spec.name} at batch {args.batch_size} on "
                            f"{kind} with {threads} thread(s) (bundled: "
                            f"{', '.join(sorted(p.name for p in bundled_dir().glob('*.json')))})")
        path: Path | None = found[0]
        prof, source = found[1], "bundled"
    else:
        prof, path, source = get_profile(
            spec.name, args.batch_size, args.device, threads, reps=args.reps, method=args.method,
            micro_batches=micro, this_machine=True,
            progress=not args.no_progress, input_shape=shape, vocab=args.vocab, cache=not args.no_cache, clock=args.clock,
            command=shlex.join(["python", "-m", "ddgsim", *sys.argv[1:]]) if sys.argv[1:2] == ["profile"]
            else shlex.join(["python", "-m", "ddgsim", "profile", args.model]),
        )
    if out is not None:
        try:
            write_json_atomic(out, prof.to_json())
        except OSError as exc:
            raise UserError(f"cannot write --out {out}: {exc.strerror or exc}") from None
    _summary(prof, source, path, out)
    return 0


def _summary(prof: object, source: str, path: Path | None, out: Path | None) -> None:
    from ddgsim.commands._table import console as table_console
    from ddgsim.profile.format import Profile

    assert isinstance(prof, Profile)
    fwd = sum(u.forward_ms for u in prof.units)
    bwd = sum(u.backward_ms for u in prof.units)
    ratio = prof.sum_ms / prof.whole_model_ms if prof.whole_model_ms > 0 else float("nan")
    act = sum(u.activation_bytes for u in prof.units)
    threads = "" if prof.threads is None else f", {prof.threads} thread(s)"
    console = table_console(highlight=False)
    from ddgsim.profile.machine import describe

    how = prof.measurement or {}
    method = f", {how['method']} timing" if how.get("method") else ""
    console.print(f"profile {prof.model}, batch {prof.batch_size}, {prof.device}{threads}: "
                  f"{prof.num_units} units ({source}{method})")
    console.print(f"  machine       {describe(prof.machine) if prof.machine else 'not recorded'}")
    console.print(f"  sum of rows   {prof.sum_ms:10.1f} ms  (forward {fwd:.1f} + backward {bwd:.1f})")
    console.print(f"  whole model   {prof.whole_model_ms:10.1f} ms  (sum/whole = {ratio:.3f})")
    other = prof.meta.get("wall_ms") if "thread" in str(prof.meta.get("clock")) else prof.meta.get("thread_cpu_ms")
    if isinstance(other, dict) and "sum" in other:
        label = "wall time" if "thread" in str(prof.meta.get("clock")) else "thread CPU"
        console.print(f"  ({label}: sum {other['sum']:.1f} ms, whole {other['whole']:.1f} ms, "
                      f"sum/whole = {other['sum_over_whole']})")
    methods = prof.meta.get("methods")
    if isinstance(methods, dict):
        console.print("  sum/whole by method: " + ", ".join(
            f"{name} {m.get('sum_over_whole')}" for name, m in methods.items() if isinstance(m, dict)))
    for m in sorted(prof.micro_batch_ms, key=int):
        costs = prof.micro_costs(int(m)) or []
        per_mb = sum(f + b for f, b in costs)
        console.print(f"  {m} micro-batches of {prof.batch_size // int(m)}: {per_mb:.1f} ms each, "
                      f"{int(m) * per_mb:.1f} ms per batch ({int(m) * per_mb / prof.sum_ms:.3f} of one batch)")
    console.print(f"  saved for backward {act / 2**20:.1f} MiB; "
                  f"largest unit {max(prof.units, key=lambda u: u.compute_ms).name}")
    if path is not None:
        console.print(f"  {'cached' if source == 'measured' else 'from'}: {path}")
    if out is not None:
        console.print(f"wrote {out}")
    off = prof.rows_disagree()
    if off:
        import sys

        sys.stderr.write(f"warning: profile {prof.model}: {off}; measure again with more rounds: "
                         f"--no-cache --reps {max(5, 2 * int((prof.measurement or {}).get('reps') or 1))}\n")
