"""Command-line interface: a thin dispatcher over one module per subcommand.

Each subcommand lives in ``ddgsim/commands/<name>.py`` and exposes
``add_parser(subparsers)`` (cheap: must not import torch) and ``run(args) -> int``.
Heavy imports happen inside ``run`` so that ``plan`` on a bundled profile starts fast.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence

from ddgsim.errors import UserError

# Order is the order shown in --help. Modules that do not exist yet are skipped.
COMMANDS = (
    "models",
    "units",
    "profile",
    "simulate",
    "plan",
    "execute",
    "stepsize",
    "theory_slack",
    "calibrate",
    "validate",
)


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line and exit 2 (argparse's own code)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"error: {self.prog}: {message}\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ddgsim", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        modname = f"ddgsim.commands.{name}"
        if importlib.util.find_spec(modname) is None:
            continue
        importlib.import_module(modname).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return UserError.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130


def entry() -> None:
    """The ``ddgsim`` console script and ``python -m ddgsim``: one start-up for both.

    Restarts the interpreter once with huge pages for malloc (:func:`ddgsim.malloc.reexec_with_hugepages`)
    before anything heavy is imported, so both entry points measure and run on the same allocator.
    """
    from ddgsim.malloc import reexec_with_hugepages

    reexec_with_hugepages("ddgsim")
    sys.exit(main())
