"""Why a launched process failed: each process's stderr kept in a log file, and the line that says why.

The launchers (the executor's, :mod:`ddgsim.compare.torch_pipelining`'s, ``calibrate``'s) set
``DDGSIM_CHILD_LOGS`` to a folder before the elastic launcher spawns the processes; each
process calls :func:`keep_stderr` first thing, so that everything it writes to ``sys.stderr``
(its ``error:`` lines, Python tracebacks, warnings) still reaches the terminal and is also
appended to ``<folder>/rank<R>.log``. When a process fails, :func:`explain` reads those logs
and names the failing process, its exit code, its first error line (an ``error: ...`` line, or
the exception type and message of its first traceback) and where its full log is.

Which process failed first: a process whose reason is about losing its peers ("lost contact",
a closed connection) usually fails *because* another one did, and one stopped by SIGTERM
without a word was stopped by the launcher, so a process with its own error, or killed by
another signal (SIGKILL, SIGSEGV), is named before them; among equals, the one whose log was
last written earliest.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ddgsim.errors import DdgsimError, one_line

ENV = "DDGSIM_CHILD_LOGS"
"""The folder where each launched process keeps a copy of its stderr (``rank<R>.log``)."""

_PREFIX = re.compile(r"^\[(?:rank|default)\d+\]:\s?")
_PEER_LOSS = ("lost contact", "Connection closed", "Connection reset", "Broken pipe", "ECONNREFUSED",
              "Connection refused")


class LaunchFailed(DdgsimError):
    """A launched process failed; the message is one line (without ``error: ``), ``code`` the exit status
    (also :attr:`~ddgsim.errors.DdgsimError.exit_code`: the command exits with it)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code
        self.exit_code = code

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.code))


class _Tee(io.TextIOBase):
    """A text stream writing to the terminal's stream and to a log file, flushing the file per write."""

    def __init__(self, stream: TextIO, log: TextIO) -> None:
        self._stream = stream
        self._log = log

    def write(self, s: str) -> int:
        n = self._stream.write(s)
        try:
            self._log.write(s)
            self._log.flush()
        except (OSError, ValueError):  # the log went away (a full disk, a closed file): the terminal still has it
            pass
        return n

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._stream.encoding


def log_path(folder: Path, rank: int) -> Path:
    return folder / f"rank{rank}.log"


def keep_stderr() -> Path | None:
    """In a launched process: also copy ``sys.stderr`` to its log file, when the launcher asked for one."""
    folder = os.environ.get(ENV)
    if not folder:
        return None
    path = log_path(Path(folder), int(os.environ.get("RANK", "0")))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        log = open(path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115 (open for the process's life)
    except OSError:
        return None
    sys.stderr = _Tee(sys.stderr, log)
    return path


def error_line(text: str) -> str | None:
    """The first line saying why a process failed: ``error: ...`` (without the ``error: ``), or the
    exception line of a traceback (``ValueError: optimizer got an empty parameter list``); None if none."""
    in_traceback = False
    for raw in text.splitlines():
        line = _PREFIX.sub("", raw).rstrip()
        if line.startswith("error: "):
            return line[len("error: "):]
        if line.startswith("Traceback (most recent call last)"):
            in_traceback = True
            continue
        if in_traceback and line and not line[0].isspace():  # the frames are indented, the exception is not
            return line
    return None


@dataclass(frozen=True)
class ChildFailure:
    """One failed process: its global rank, exit code, the line that says why (if it said) and its log."""

    rank: int
    exitcode: int
    reason: str | None
    log: Path | None

    def describe(self, who: str) -> str:
        """``stage 0 failed (exit code 1): ValueError: ...; full log: runs/x.logs/rank0.log``."""
        code = f"exit code {self.exitcode}"
        if self.exitcode < 0:
            with contextlib.suppress(ValueError):
                code += f", {signal.Signals(-self.exitcode).name}"
        out = f"{who} {self.rank} failed ({code})"
        if self.reason:
            out += f": {one_line(self.reason, 240)}"
        if self.log is not None:
            out += f"; full log: {self.log}"
        return out

    @property
    def peer_loss(self) -> bool:
        return self.reason is not None and any(s in self.reason for s in _PEER_LOSS)

    @property
    def blame(self) -> int:
        """0: a cause (its own error, or killed by a signal such as SIGKILL or SIGSEGV); 1: lost its peers;
        2: no reason given and stopped by SIGTERM, as the launcher stops the others after a failure."""
        if self.peer_loss:
            return 1
        if self.reason or (self.exitcode < 0 and -self.exitcode != signal.SIGTERM) or self.exitcode > 0:
            return 0
        return 2


def explain(failures: dict[int, Any], folder: Path | None) -> ChildFailure:
    """The failure to show from torch elastic's ``ChildFailedError.failures`` (global rank -> ProcessFailure)."""
    found: list[tuple[int, float, ChildFailure]] = []
    for rank, failure in failures.items():
        log = log_path(folder, rank) if folder is not None else None
        reason, written = None, float("inf")
        if log is not None and log.is_file():
            reason = error_line(log.read_text(encoding="utf-8", errors="replace"))
            written = log.stat().st_mtime
        else:
            log = None
        f = ChildFailure(rank=rank, exitcode=int(failure.exitcode), reason=reason, log=log)
        found.append((f.blame, written, f))
    return min(found, key=lambda t: (t[0], t[1], t[2].rank))[2]
