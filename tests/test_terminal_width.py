"""Output that fits: every command's help, and the quick commands' output, in an 80-column terminal.

Each command runs in a real pseudo-terminal 80 columns wide (so rich, argparse and the notes all see
a terminal), and no line it prints may be wider; piped, the notes stay one line each (for grep).
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ["models", "units", "profile", "simulate", "plan", "execute", "converge", "stepsize", "theory-slack",
            "calibrate", "validate", "compare-runs"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def in_terminal(*argv: str, columns: int = 80) -> tuple[int, list[str]]:
    """Run ``python -m ddgsim ARGV`` on a pseudo-terminal ``columns`` wide: (exit status, lines shown)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen([sys.executable, "-m", "ddgsim", *argv], stdin=follower, stdout=follower,
                            stderr=follower, cwd=ROOT, env={**env, "TERM": "xterm", "PYTHONPATH": str(ROOT)},
                            close_fds=True)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the terminal closes when the process (and every child) has exited
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    code = proc.wait(timeout=120)
    text = ANSI.sub("", b"".join(chunks).decode("utf-8", "replace")).replace("\r", "")
    return code, text.splitlines()


def too_wide(lines: list[str], columns: int = 80) -> list[str]:
    return [line for line in lines if len(line) > columns]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_fits_80_columns(command: str) -> None:
    code, lines = in_terminal(command, "--help")
    assert code == 0 and any("usage:" in line for line in lines), lines
    assert not too_wide(lines), too_wide(lines)


@pytest.mark.parametrize("argv", [
    ("plan", "resnet110", "--gpus", "4"),  # the front door: tables, the provenance note, staleness notes
    ("plan", "resnet20", "--gpus", "64"),  # replicas: the layout table and its notes
    ("simulate", "resnet56", "--gpus", "3", "--schedule", "gpipe", "--micro-batches", "2"),
    ("models",),
    ("units", "resnet20"),
    ("stepsize", "--stages", "4", "--T", "100"),
])
def test_quick_commands_fit_80_columns(argv: tuple[str, ...], tmp_path: Path) -> None:
    extra = ["--out", str(tmp_path / "plan.json")] if argv[0] == "plan" else []
    code, lines = in_terminal(*argv, *extra)
    assert code == 0, "\n".join(lines)
    assert not too_wide(lines), too_wide(lines)


def test_notes_stay_one_line_when_piped() -> None:
    r = subprocess.run([sys.executable, "-m", "ddgsim", "stepsize", "--stages", "4"], capture_output=True, text=True,
                       cwd=ROOT, check=True)
    assert any(len(line) > 80 for line in r.stdout.splitlines())  # the stability line, whole
