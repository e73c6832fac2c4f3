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

from ddgsim.errors import DdgsimError, command_line_message, flag_names
from ddgsim.logs import log_to_stderr

# Order is the order shown in --help. Modules that do not exist yet are skipped.
COMMANDS = (
    "models",
    "units",
    "profile",
    "simulate",
    "plan",
    "execute",
    "converge",
    "stepsize",
    "theory_slack",
    "calibrate",
    "validate",
    "compare_runs",
)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is the error line, then the usage on one line; exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        usage = " ".join(self.format_usage().split())
        sys.stderr.write(f"error: {self.prog}: {message}\n{usage} (more: {self.prog} --help)\n")
        raise SystemExit(2)


DESCRIPTION = """\
Plan, predict and run decoupled parallel backpropagation (DDG, Huo et al. 2018):
split a model over K devices, predict iteration time, staleness and memory, run the
plan with torch.distributed and compare.

examples:
  ddgsim plan resnet110 --gpus 4                  best split for 1..4 devices (bundled profile)
  ddgsim plan gpt-mini --gpus 2 --out plan.json   write the chosen plan
  ddgsim execute plan.json --steps 200 --data text
  ddgsim validate resnet20 --gpus 1,2 --out v     predicted vs measured on this machine
"""


def version() -> str:
    """``ddgsim X (Python Y, torch Z build)``, without importing torch."""
    import platform

    from ddgsim import __version__
    from ddgsim.profile.machine import torch_build

    torch_version, build = torch_build()
    return f"ddgsim {__version__} (Python {platform.python_version()}, torch {torch_version} {build})"


FLAGS_KEY = "_ddgsim_flags"
"""Where a command's parsed arguments carry the flag of each parameter a library error may name: its
options (:func:`ddgsim.errors.flag_names`), and its module's ``FLAGS`` for the parameters whose name is
not the flag's (``stages``: ``--gpus``)."""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ddgsim", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        modname = f"ddgsim.commands.{name}"
        if importlib.util.find_spec(modname) is None:
            continue
        module = importlib.import_module(modname)
        before = set(sub.choices)
        module.add_parser(sub)
        for added in set(sub.choices) - before:
            command = sub.choices[added]
            command.set_defaults(**{FLAGS_KEY: {**flag_names(command), **getattr(module, "FLAGS", {})}})
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a terminal that cannot show "×" or "★" gets "?", not a traceback
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="replace")
    parser = build_parser()
    args = parser.parse_args(argv)
    log_to_stderr()  # the library's notes, warnings and errors: one line each on stderr
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()
        return code
    except DdgsimError as exc:  # one line, no traceback; a library's parameters named as this command's flags
        sys.stderr.write(f"error: {command_line_message(exc, getattr(args, FLAGS_KEY, None))}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except BrokenPipeError:
        return _reader_gone()


def _reader_gone() -> int:
    """``ddgsim plan --json | head``: the reader left. Stop quietly (no traceback, nothing more written),
    with the status a command killed by SIGPIPE reports (128 + 13)."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # Python's final flush of stdout must not fail again
    return 141


def entry() -> None:
    """The ``ddgsim`` console script and ``python -m ddgsim``: one start-up for both.

    Restarts the interpreter once with huge pages for malloc (:func:`ddgsim.malloc.reexec_with_hugepages`)
    before anything heavy is imported, so both entry points measure and run on the same allocator.
    """
    from ddgsim.malloc import reexec_with_hugepages

    reexec_with_hugepages("ddgsim")
    sys.exit(main())
