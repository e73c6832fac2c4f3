"""``ddgsim models``: the model zoo with parameter counts, input shapes and classes."""

from __future__ import annotations

import argparse

from ddgsim.commands._help import add_command


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(subparsers, "models", help="list the built-in models",
                              description="List the model zoo (any 'package.module:factory' works too).")
    p.set_defaults(func=run)


def count_params(factory: object) -> int:
    """Parameters of a freshly built model, allocated on the meta device (no memory, fast)."""
    import torch

    with torch.device("meta"):
        model = factory()  # type: ignore[operator]
    return sum(p.numel() for p in model.parameters())


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from ddgsim.models.registry import MODELS

    table = Table(title="ddgsim models")
    for col, justify in (("name", "left"), ("params", "right"), ("input → classes", "left"),
                         ("description", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for spec in MODELS.values():
        table.add_row(spec.name, f"{count_params(spec.factory):,}", spec.io.describe(), spec.description)
    Console().print(table)
    return 0
