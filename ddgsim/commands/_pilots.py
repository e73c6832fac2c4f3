"""The pilot trainings' options, shared by ``converge`` and ``plan --objective time-to-loss``, and
their progress bar (torch-free: imported while the parser is built)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ddgsim.converge.usecase import PilotProgress, Pilots

FLAGS = {"steps": "--pilot-steps"}
"""The flag of each :class:`~ddgsim.converge.usecase.Pilots` field whose name is not the flag's."""


def add_pilot_args(p: argparse.ArgumentParser, steps: int, window: int) -> None:
    """The options ``converge`` and ``plan --objective time-to-loss`` share."""
    from ddgsim.execute.config import DATASETS

    p.add_argument("--data", metavar="NAME", help=f"training data of the pilots: {', '.join(DATASETS)}")
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


def pilots_from(args: argparse.Namespace) -> Pilots:
    """The pilots the options ask for (the library checks every value)."""
    from ddgsim.converge.usecase import Pilots

    return Pilots(data=args.data, data_dir=args.data_dir, target_loss=args.target_loss, steps=args.pilot_steps,
                  seeds=args.seeds, lr=args.lr, window=args.window, cache=not args.no_cache,
                  warmup_steps=args.warmup_steps, lr_delay_scale=args.lr_delay_scale,
                  weight_prediction=args.weight_prediction)


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


def pilot_progress(enabled: bool) -> PilotProgress:
    """The pilots' progress bar for the use cases (none when not ``enabled``)."""
    return lambda total, label: progress(enabled, total, label)
