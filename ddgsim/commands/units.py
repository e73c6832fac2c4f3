"""``ddgsim units MODEL``: the units (pieces between legal cut points) of a model."""

from __future__ import annotations

import argparse

from ddgsim.commands._help import add_command


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(subparsers, "units", help="list a model's units (legal cut points)",
                              description="Trace MODEL with torch.fx and list its units: the pieces "
                              "between consecutive legal cut points, which a split may separate.")
    p.add_argument("model", help="model name (see 'ddgsim models') or 'package.module:factory'")
    p.add_argument("--input-shape", metavar="C,H,W", help="one sample's shape (default: the model's)")
    p.add_argument("--vocab", type=int, metavar="V",
                   help="the input is token ids in [0, V) (int64), e.g. a language model (default: the model's)")
    p.add_argument("--json", action="store_true", help="print the units as JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ddgsim.commands._args import parse_shape, require_positive
    from ddgsim.models.registry import get_spec

    shape = parse_shape(args.input_shape) if args.input_shape else None
    if args.vocab is not None:
        require_positive("--vocab", args.vocab)
    spec = get_spec(args.model)
    io = spec.io.with_overrides(input_shape=shape, vocab=args.vocab)

    from rich.table import Table

    from ddgsim.commands._table import console
    from ddgsim.models.registry import build_model
    from ddgsim.profile.units import split_units

    units = split_units(build_model(spec), io)
    if args.json:
        import json

        print(json.dumps({"model": spec.name, "input_shape": list(io.input_shape), "input_dtype": io.input_dtype,
                          "vocab": io.vocab, "units": [
                              {"index": u.index, "name": u.name, "output_shape": list(u.output_shape[1:]),
                               "params": sum(p.numel() for p in u.module.parameters())} for u in units]}, indent=1))
        return 0
    splits = f"split indices are 1..{len(units) - 1}" if len(units) > 1 else "one unit: it cannot be split"
    table = Table(title=f"{spec.name} ({io.describe()}): {len(units)} unit{'s' if len(units) > 1 else ''} ({splits})")
    for col in ("index", "name", "output (per sample)", "params"):
        table.add_column(col, justify="right" if col in ("index", "params") else "left")
    total = 0
    for u in units:
        n = sum(p.numel() for p in u.module.parameters())
        total += n
        table.add_row(str(u.index), u.name, "x".join(map(str, u.output_shape[1:])), f"{n:,}")
    table.caption = f"{total:,} parameters in all"
    console().print(table)
    return 0
