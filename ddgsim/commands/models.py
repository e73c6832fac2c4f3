"""``ddgsim models``: the model zoo with parameter counts, input shapes and classes."""

from __future__ import annotations

import argparse

from ddgsim.commands._help import add_command


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(subparsers, "models", help="list the built-in models",
                              description="List the model zoo (any 'package.module:factory' works too).")
    p.add_argument("--json", action="store_true", help="print the zoo as JSON instead of a table")
    p.set_defaults(func=run)


def count_params(factory: object) -> int:
    """Parameters of a freshly built model, allocated on the meta device (no memory, fast)."""
    import torch

    with torch.device("meta"):
        model = factory()  # type: ignore[operator]
    return sum(p.numel() for p in model.parameters())


def run(args: argparse.Namespace) -> int:
    from rich.table import Table

    from ddgsim.commands._table import console
    from ddgsim.models.registry import MODELS

    if args.json:
        import json

        print(json.dumps([{"name": s.name, "params": count_params(s.factory), "input_shape": list(s.io.input_shape),
                           "input_dtype": s.io.input_dtype, "vocab": s.io.vocab, "target": s.io.target,
                           "num_classes": s.io.num_classes, "description": s.description}
                          for s in MODELS.values()], indent=1))
        return 0
    table = Table(title="ddgsim models")
    for col, justify in (("name", "left"), ("params", "right"), ("input → classes", "left"),
                         ("description", "left")):
        table.add_column(col, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for spec in MODELS.values():
        table.add_row(spec.name, f"{count_params(spec.factory):,}", spec.io.describe(), spec.description)
    console().print(table)
    return 0
