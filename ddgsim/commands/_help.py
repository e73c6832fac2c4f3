"""Every subcommand's ``--help``: a plain-text description and examples that run as shown.

Torch-free (imported while the parser is built).
"""

from __future__ import annotations

import argparse
import re
import textwrap
from typing import Any

EXAMPLES: dict[str, list[tuple[str, str]]] = {
    "models": [("ddgsim models", "the zoo with parameter counts, inputs and classes")],
    "units": [("ddgsim units resnet110", "the 60 units of ResNet-110"),
              ("ddgsim units gpt-mini", "a GPT: embed, one unit per block, ln_f, head"),
              ("PYTHONPATH=. ddgsim units mymodels:tinygpt --input-shape 64 --vocab 256", "your own token model")],
    "profile": [("ddgsim profile resnet20 --batch-size 128", "measure this machine (cached per machine and settings)"),
                ("ddgsim profile resnet56 --batch-size 128 --micro-batches 2,4 --out p.json", "with gpipe/1f1b costs"),
                ("ddgsim profile resnet110 --bundled", "show the profile shipped with ddgsim")],
    "simulate": [("ddgsim simulate resnet110 --gpus 4", "the best split, ddg-pipelined, free links"),
                 ("ddgsim simulate resnet110 --split 15,30,45 --schedule ddg --scenario pcie-4gpu", "one split"),
                 ("ddgsim simulate --plan plan.json --trace t.json", "reproduce a plan's prediction, with a trace")],
    "plan": [("ddgsim plan resnet110 --gpus 4", "best split for 1..4 devices (bundled profile, ~1 s)"),
             ("ddgsim plan resnet110 --gpus 4 --schedule all --out plan.json", "compare schedules, write the plan"),
             ("ddgsim plan gpt-mini --gpus 2 --json", "machine-readable")],
    "execute": [("ddgsim execute plan.json --steps 200 --data digits", "train for real, one process per stage"),
                ("ddgsim execute plan.json --steps 200 --data text --lr 0.03", "a GPT plan on byte-level text"),
                ("ddgsim execute p.json --steps 1000 --checkpoint-dir ck --checkpoint-every 100",
                 "checkpoints; --resume ck continues")],
    "converge": [("ddgsim converge mlp --data digits --stages 1,2,3", "steps each K needs to reach BP's loss"),
                 ("ddgsim converge gpt-mini --data text --stages 1,2 --seeds 2 --json", "a GPT on text, as JSON")],
    "stepsize": [("ddgsim stepsize --stages 4", "step sizes the analysis allows, per-stage limits")],
    "theory-slack": [("ddgsim theory-slack --out slack.csv --K-max 8", "slack of every convergence bound")],
    "calibrate": [("ddgsim calibrate --out local.toml", "this machine's links as a scenario"),
                  ("ddgsim plan resnet20 --gpus 2 --scenario local.toml", "plan with it")],
    "validate": [("ddgsim validate resnet20 --gpus 1,2 --splits 2 --out v", "predicted vs measured, every schedule"),
                 ("ddgsim validate mlp --gpus 2 --schedules gpipe --runtimes ddgsim,torch --out v",
                  "also under torch.distributed.pipelining"),
                 ("ddgsim validate mlp --gpus 1,2 --replicas 1,2 --schedules ddg --out v",
                  "also with every stage replicated (K=1 x D=2: data parallel)")],
    "compare-runs": [("ddgsim compare-runs v1 v2", "two runs of one validation: how far they disagree")],
}


def plain(text: str) -> str:
    """Docstring markup as a terminal shows it: a leading ````name````: goes, ``code`` -> 'code',
    :class:`x.Y` -> Y."""
    text = re.sub(r"^``[^`]+``:\s*", "", text)
    text = re.sub(r":\w+:`~?(?:[\w.]*\.)?(\w+)`", r"\1", text)
    text = re.sub(r"``([^`]+)``", r"'\1'", text)
    return text[:1].upper() + text[1:]


def epilog(name: str) -> str:
    """The examples, each a comment line and the command, so that they fit 80 columns."""
    lines = ["examples:"]
    for cmd, what in EXAMPLES[name]:
        lines += [f"  # {what}", f"  {cmd}"]
    return "\n".join(lines)


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's and the examples' own line breaks and folds prose wider than the
    terminal: an unindented line, or an example's ``# comment``; a command is left whole (copy it)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out: list[str] = []
        for line in text.splitlines():
            comment = line.lstrip().startswith("# ")
            if len(indent + line) <= width or (line[:1] == " " and not comment):
                out.append(indent + line)
                continue
            lead = line[:len(line) - len(line.lstrip())] + ("# " if comment else "")
            out += textwrap.wrap(line, width, initial_indent=indent, subsequent_indent=indent + lead,
                                 break_long_words=False, break_on_hyphens=False)
        return "\n".join(out)


def add_command(subparsers: Any, name: str, *, help: str, description: str | None, extra_epilog: str = "",
                **kwargs: Any) -> argparse.ArgumentParser:
    """``subparsers.add_parser`` with a plain description, the examples and any ``extra_epilog``."""
    text = epilog(name) + (f"\n\n{extra_epilog}" if extra_epilog else "")
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, help=help, description=plain(description or help), epilog=text, formatter_class=Formatter, **kwargs)
    return parser
