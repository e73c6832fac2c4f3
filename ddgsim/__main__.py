"""Entry point for ``python -m ddgsim`` (the same start-up as the ``ddgsim`` console script)."""

from ddgsim.cli import entry

entry()
