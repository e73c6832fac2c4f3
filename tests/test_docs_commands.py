"""Every ``python -m ddgsim ...`` command in README.md and docs/*.md parses with the CLI's own parser.

Commands are taken from fenced code blocks (a line, joined with the next while it ends in ``\\``),
from indented code blocks (a line indented by four spaces, without backticks) and from inline code
spans (which may wrap over lines). Nothing is run: each command goes through
:func:`ddgsim.cli.build_parser` only, so a renamed or removed flag, a missing required argument or
a bad choice in the docs fails here with the file, the line and argparse's own message.

Templates are made concrete by fixed rules, never skipped:

- shell around the command is cut off: anything before ``python -m ddgsim`` (``VAR=... ``), and
  from `` && ``, `` ; ``, `` | ``, `` > ``, `` 2> `` or `` # `` on;
- ``\\|`` (a ``|`` escaped inside a Markdown table) is a ``|``; an optional group ``[...]`` is
  kept, without its brackets (so its flags are checked too); ``a|b|c`` is its first alternative;
- a word in capitals (``MODEL``, ``FILE``, ``DIR``, ...) is a placeholder and takes its value
  from :data:`PLACEHOLDERS`. A placeholder not listed there, or ``...`` standing for a value,
  fails: write a named placeholder instead, and add it here.

Only a span that is the bare program, ``python -m ddgsim`` with nothing after it, is skipped:
it names the tool rather than showing a command.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from ddgsim.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

PROGRAM = "python -m ddgsim"
#: Values for the placeholders the docs use; each is a value the parser accepts where it appears.
PLACEHOLDERS = {
    "MODEL": "resnet20",
    "COMMAND": "plan",
    "FILE": "out.json",
    "DIR": "out",
    "NAME": "ideal-4",
    "SCHEDULE": "ddg",
    "VALUE": "1.0",
    "N": "2",
    "K": "2",
    "D": "2",
    "B": "32",
    "M": "2",
    "S": "3",
    "R": "0",
    "L": "1.0",
    "X": "2.5",
    "GIB": "16",
    "PCT": "5",
}
_PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9_]*")
_ENV = r"(?:[A-Z_][A-Z0-9_]*=(?:\$\([^)]*\)|\S+)\s+)*"  # VAR=value before the command
_CUT = re.compile(r"\s(?:&&|;|\||>|2>|#)(?:\s|$)")


@dataclass(frozen=True)
class DocCommand:
    path: Path
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}: {self.text}"


def _from_program(text: str) -> str:
    """The command from ``python -m ddgsim`` on, shell before and after it cut off."""
    text = text[text.index(PROGRAM):]
    cut = _CUT.search(text)
    return (text[: cut.start()] if cut else text).strip()


def extract(path: Path) -> list[DocCommand]:
    """Every ``python -m ddgsim`` command in one Markdown file, with the line it starts on."""
    lines = path.read_text().splitlines()
    found: list[DocCommand] = []
    prose: list[tuple[int, str]] = []  # (line number, text) outside fenced blocks
    in_fence = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
            i += 1
            continue
        if in_fence:
            start = i
            while line.endswith("\\") and i + 1 < len(lines):
                i += 1
                line = line[:-1] + " " + lines[i].strip()
            if re.search(re.escape(PROGRAM) + r"(\s|$)", line):
                found.append(DocCommand(path, start + 1, _from_program(line)))
        elif line.startswith("    ") and "`" not in line and PROGRAM in line:  # an indented code block
            found.append(DocCommand(path, i + 1, _from_program(line)))
        else:
            prose.append((i + 1, line))
        i += 1
    # Inline code spans in the prose; a span may wrap over lines (Markdown joins them with a space).
    text = "\n".join(text for _, text in prose)
    numbers = [number for number, _ in prose]
    for span in re.finditer(r"`([^`]+)`", text):
        code = " ".join(span.group(1).split())
        if re.match(_ENV + r"(?:\S*/)?" + re.escape(PROGRAM) + r"(\s|$)", code) and _from_program(code) != PROGRAM:
            number = numbers[text.count("\n", 0, span.start())]
            found.append(DocCommand(path, number, _from_program(code)))
    return sorted(found, key=lambda command: command.line)


def concrete(command: str) -> list[str]:
    """The argument list a template stands for (rules in the module docstring)."""
    text = command[len(PROGRAM):].replace("\\|", "|")
    text = re.sub(r"\[([^\[\]]*)\]", r" \1 ", text)  # an optional group: its contents
    argv = []
    for word in shlex.split(text):
        word = word.split("|")[0] if "|" in word else word
        if word == "...":
            raise ValueError("'...' stands for a value: name it with a placeholder in capitals")
        if _PLACEHOLDER.fullmatch(word):
            if word not in PLACEHOLDERS:
                raise ValueError(f"unknown placeholder {word} (add it to PLACEHOLDERS in this test)")
            word = PLACEHOLDERS[word]
        argv.append(word)
    return argv


def parse_error(argv: list[str]) -> str | None:
    """argparse's message if the CLI's parser refuses argv, else None (``--help``/``--version`` pass)."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(argv)
    except SystemExit as exc:
        if exc.code not in (0, None):
            return err.getvalue().strip() or f"exit status {exc.code}"
    return None


COMMANDS = [command for path in DOCS for command in extract(path)]


def test_the_docs_show_commands() -> None:
    files = {command.path.name for command in COMMANDS}
    assert "README.md" in files and "cli.md" in files
    assert len(COMMANDS) > 30


@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_doc_command_parses(command: DocCommand) -> None:
    try:
        argv = concrete(command.text)
    except ValueError as exc:
        pytest.fail(f"{command}\n  {exc}")
    error = parse_error(argv)
    assert error is None, f"{command}\n  parsed as: {argv}\n  {error}"


def test_a_bad_flag_fails(tmp_path: Path) -> None:
    doc = tmp_path / "bad.md"
    doc.write_text("Run:\n\n```sh\npython -m ddgsim plan resnet110 --gpus 4 --no-such-flag\n```\n"
                   "and `python -m ddgsim simulate\nresnet110 --gpus 4` inline.\n")
    bad, good = extract(doc)
    assert (bad.line, good.line) == (4, 6)
    assert good.text == "python -m ddgsim simulate resnet110 --gpus 4"
    assert parse_error(concrete(good.text)) is None
    error = parse_error(concrete(bad.text))
    assert error is not None and "--no-such-flag" in error


def test_templates_become_concrete() -> None:
    argv = concrete(r"python -m ddgsim profile MODEL [--device cpu\|cuda] [--out FILE] --data digits|text")
    assert argv == ["profile", "resnet20", "--device", "cpu", "--out", "out.json", "--data", "digits"]
    assert _from_program("DDGSIM_CACHE_DIR=$(mktemp -d) python -m ddgsim models  # the zoo") == "python -m ddgsim models"
    with pytest.raises(ValueError, match="placeholder"):
        concrete("python -m ddgsim plan resnet110 --scenario ...")
