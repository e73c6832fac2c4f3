"""User-facing errors: one line, exit status 2, no traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user. The CLI prints ``error: <message>`` and exits with 2.

    The message must name the bad value and say what is accepted.
    """

    exit_code = 2


def choices(values: object) -> str:
    """Format accepted values for an error message: ``a, b, c``."""
    return ", ".join(str(v) for v in values)  # type: ignore[attr-defined]


def one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line (whitespace runs as one space), cut to ``limit`` characters with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"
