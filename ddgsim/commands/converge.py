"""``converge``: how many steps each K needs to reach a target loss (pilot trainings).

    python -m ddgsim converge mlp --data digits --stages 1,2,3 --steps 300 --seeds 3
    python -m ddgsim converge gpt-mini --data text --stages 1,2,3 --target-loss 2.2 --json

For every K: the planner's split for K stages, a learning rate per K (a sweep bounded by the
stages' stability limits, :mod:`ddgsim.converge.pilot`), short trainings with the exact
in-process engine over several seeds, and the steps until the smoothed training loss reaches
the target — with their spread and the ratio to BP (K = 1). Runs are cached: asking again,
or planning with ``plan --objective time-to-loss``, trains nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ddgsim.commands._help import add_command
from ddgsim.errors import UserError, choices
from ddgsim.schedule import DEFAULT_SCHEDULE

DATA = ("digits", "cifar10", "text", "synthetic")


def add_parser(subparsers: Any) -> None:
    from ddgsim.converge.pilot import DEFAULT_STEPS, DEFAULT_WINDOW

    p = add_command(subparsers, "converge", help="steps each K needs to reach a target loss (pilot trainings)",
                    description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("model", help="model name (see `python -m ddgsim models`)")
    add_pilot_args(p, DEFAULT_STEPS, DEFAULT_WINDOW)
    p.add_argument("--stages", default="1,2,3,4", metavar="K[,K..]", help="stage counts to pilot (default 1,2,3,4)")
    p.add_argument("--schedule", default=DEFAULT_SCHEDULE, metavar="NAME",
                   help=f"ddg or ddg-pipelined (the same weights; default {DEFAULT_SCHEDULE})")
    p.add_argument("--batch-size", type=int, default=128, metavar="B",
                   help="batch size of the pilots and of the profile their splits are planned on (default 128)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def add_pilot_args(p: argparse.ArgumentParser, steps: int, window: int) -> None:
    """The options ``converge`` and ``plan --objective time-to-loss`` share."""
    p.add_argument("--data", metavar="NAME", help=f"training data of the pilots: {', '.join(DATA)}")
    p.add_argument("--data-dir", metavar="DIR", help="CIFAR-10 python batches (--data cifar10)")
    p.add_argument("--target-loss", type=float, metavar="X",
                   help="the training loss to reach (default: one every BP seed reaches at 3/4 of the steps)")
    p.add_argument("--pilot-steps", type=int, default=steps, metavar="N", help=f"steps per pilot (default {steps})")
    p.add_argument("--seeds", type=int, default=3, metavar="S", help="seeds per K (default 3)")
    p.add_argument("--lr", type=float, default=0.05, metavar="RATE", help="base learning rate, BP's (default 0.05)")
    p.add_argument("--window", type=int, default=window, metavar="W",
                   help=f"steps the training loss is averaged over (default {window})")
    p.add_argument("--no-cache", action="store_true", help="train every pilot again (and cache nothing)")
    p.add_argument("--warmup-steps", type=int, default=0, metavar="N",
                   help="staleness compensation in the pilots: learning-rate warm-up over N steps")
    p.add_argument("--lr-delay-scale", action="store_true",
                   help="staleness compensation in the pilots: each stage's rate times its stability ratio")
    p.add_argument("--weight-prediction", action="store_true",
                   help="staleness compensation in the pilots: forward with weights extrapolated along the momentum")


def check_pilot_args(args: argparse.Namespace) -> None:
    if args.data is None:
        raise UserError(f"--data is required for pilot trainings (choose from {choices(DATA)})")
    if args.data not in DATA:
        raise UserError(f"unknown --data '{args.data}' (choose from {choices(DATA)})")
    for name in ("pilot_steps", "seeds", "batch_size", "window"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup_steps < 0:
        raise UserError(f"--warmup-steps must be >= 0, got {args.warmup_steps}")
    if not args.lr > 0:
        raise UserError(f"--lr must be > 0, got {args.lr}")
    if args.target_loss is not None and not args.target_loss > 0:
        raise UserError(f"--target-loss must be > 0, got {args.target_loss}")


@contextmanager
def progress(enabled: bool, total: int, label: str) -> Iterator[Callable[[str], None]]:
    """A rich progress bar on stderr over the pilot runs; ``advance(what)`` after each."""
    if not enabled:
        yield lambda _what: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn(f"pilots of {label}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[what]}"), TimeElapsedColumn(), console=Console(stderr=True),
                  transient=True) as bar:
        task = bar.add_task("pilots", total=total, what="")
        yield lambda what: bar.update(task, advance=1, what=what)


def pilots(args: argparse.Namespace, model: str, splits: dict[int, tuple[int, ...]], schedule: str,
           batch_size: int, label: str | None = None) -> tuple[float, list[Any]]:
    """Run (or read from the cache) the pilots of ``splits``; ``(target, results)``."""
    from ddgsim.converge.pilot import PilotSpec, run_pilots, runs_needed

    base = PilotSpec(model=model, data=args.data, split=(), schedule=schedule, batch_size=batch_size,
                     steps=args.pilot_steps, lr=args.lr, seed=0, data_dir=args.data_dir,
                     warmup_steps=args.warmup_steps, lr_delay_scale=args.lr_delay_scale,
                     weight_prediction=args.weight_prediction)
    quiet = getattr(args, "no_progress", False) or getattr(args, "json", False)
    with progress(not quiet, runs_needed(list(splits), args.seeds), label or model) as advance:
        return run_pilots(base, splits, args.seeds, args.target_loss, args.window, cache=not args.no_cache,
                          advance=advance)


def run(args: argparse.Namespace) -> int:
    from ddgsim.commands._args import parse_ints

    check_pilot_args(args)
    from ddgsim.converge.objective import STALE_SCHEDULES

    if args.schedule not in STALE_SCHEDULES:
        raise UserError(f"--schedule must be {' or '.join(STALE_SCHEDULES)} for pilots, got '{args.schedule}'")
    ks = parse_ints(args.stages, "--stages")
    from ddgsim.converge.pilot import planned_splits
    from ddgsim.models.registry import get_spec
    from ddgsim.profile.store import get_profile

    spec = get_spec(args.model)
    profile, _path, _source = get_profile(spec.name, args.batch_size, "cpu", 1, this_machine=False,
                                          progress=not args.no_progress and not args.json)
    splits = planned_splits(profile, ks, args.schedule)
    target, results = pilots(args, spec.name, splits, args.schedule, args.batch_size)
    bp = next((r.median_steps for r in results if r.stages == 1), None)
    rows = [r.summary(args.window, bp) for r in results]
    if args.json:
        json.dump({"model": spec.name, "data": args.data, "target_loss": target, "window": args.window,
                   "pilot_steps": args.pilot_steps, "batch_size": args.batch_size, "seeds": args.seeds,
                   "base_lr": args.lr, "schedule": args.schedule, "warmup_steps": args.warmup_steps,
                   "lr_delay_scale": args.lr_delay_scale, "weight_prediction": args.weight_prediction,
                   "per_k": rows}, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    print(render(spec.name, args, target, rows))
    return 0


def render(model: str, args: argparse.Namespace, target: float, rows: list[dict[str, Any]]) -> str:
    lines = [f"{model} on --data {args.data}: steps until the training loss (mean of {args.window} steps) "
             f"reaches {target:.4g}",
             f"{args.seeds} seed(s), {args.pilot_steps} steps, batch {args.batch_size}, base lr {args.lr:g}"
             + compensation_label(args),
             f"{'K':>2}  {'split':<14} {'lr':>8}  {'steps (median, min-max)':>24}  {'vs BP':>6}  {'final loss':>10}"]
    for r in rows:
        med = r["median_steps"]
        reached = sum(s is not None for s in r["steps_to_target"])
        steps = (f"{med:.0f} ({r['min_steps']}-{r['max_steps']})" if med is not None
                 else f"not reached ({reached}/{len(r['steps_to_target'])} seeds)")
        ratio = f"{r['ratio_to_bp']:.2f}×" if r["ratio_to_bp"] is not None else "-"
        lines.append(f"{r['stages']:>2}  {r['split']!s:<14} {r['lr']:>8.4g}  {steps:>24}  {ratio:>6}  "
                     f"{r['final_loss']:>10.4f}")
    lines.append("learning rates tried on seed 0 (steps to target): " + "; ".join(
        f"K={r['stages']}: " + ", ".join(f"{lr} → {s if s is not None else '-'}" for lr, s in r["lr_tried"].items())
        for r in rows))
    return "\n".join(lines)


def compensation_label(args: argparse.Namespace) -> str:
    """``, compensation: warm-up 50, delay-scaled lr, weight prediction`` (empty without)."""
    parts = ([f"warm-up {args.warmup_steps}"] if args.warmup_steps else []) + \
        (["delay-scaled lr"] if args.lr_delay_scale else []) + (["weight prediction"] if args.weight_prediction else [])
    return f", compensation: {', '.join(parts)}" if parts else ""
