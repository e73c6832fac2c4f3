"""ddgsim's log records on stderr, one line each, as its own messages are written.

Library modules log through ``log = logging.getLogger(__name__)`` (under the ``ddgsim`` logger)
and never configure logging. An entry point calls :func:`log_to_stderr` once: ``ddgsim`` itself
(:func:`ddgsim.cli.main`), each stage process of the executor (``stage R: `` before every line)
and the scripts that launch processes. Then a record is one line on the ``sys.stderr`` of the
moment (a test's capture; a launched process's copy for its log, :mod:`ddgsim.execute.childlog`):

- a note (``INFO``) as its message alone, as the commands print their own notes;
- a warning or an error as ``warning: <who><message>``, ``error: <who><message>``.

Without :func:`log_to_stderr` (ddgsim used as a library), Python's own handling applies: warnings
and errors reach stderr through its last-resort handler, notes are dropped unless the
application configures logging.
"""

from __future__ import annotations

import logging
import sys

ROOT = "ddgsim"
"""The logger every module's logger is under."""


class _LineFormatter(logging.Formatter):
    """``warning: WHO: message`` (a note: ``WHO: message``), one line: as the process's own lines read."""

    def __init__(self, who: str) -> None:
        super().__init__()
        self.who = who

    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
        return f"{level}{self.who}{record.getMessage()}"


class _Stderr(logging.Handler):
    """Writes each record to the ``sys.stderr`` of the moment (a test's capture, a launched process's copy)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # logging's contract: a handler never raises
            self.handleError(record)


def log_to_stderr(who: str = "", level: int = logging.INFO) -> None:
    """Send ``ddgsim``'s log records from ``level`` up to this process's ``sys.stderr``, one line
    each, ``who`` before each message. Called again, it changes ``who`` and ``level`` (one handler)."""
    root = logging.getLogger(ROOT)
    handler = next((h for h in root.handlers if isinstance(h, _Stderr)), None)
    if handler is None:
        handler = _Stderr()
        root.addHandler(handler)
    handler.setFormatter(_LineFormatter(who))
    root.setLevel(level)
