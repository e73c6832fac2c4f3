"""Tables that fit the terminal: never a truncated number, never a hidden column.

rich shrinks a table wider than the console by cutting cells to ``…``. Here a table
too wide for the console is split into several, each repeating the key columns (the
option and the stage), the others spread over them in order. The width is the
console's: the terminal's, or ``COLUMNS`` when set (also when piped); piped output
without ``COLUMNS`` is 80 columns wide, drawn with plain ASCII rules so that ``awk``
and ``grep`` see whitespace-separated columns. ``--json`` is the machine-readable form.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

SECTION = None
"""A row that is ``SECTION`` starts a new section (a rule between groups of rows)."""


@dataclass(frozen=True)
class Column:
    name: str
    justify: str = "right"
    part: int = 0
    """Columns of one part stay together when a table is split, if they fit together."""


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """rich would exit 1; a BrokenPipeError lets :func:`ddgsim.cli.main` stop quietly with 141."""
        raise BrokenPipeError


def console(**kwargs: Any) -> Console:
    """The console every command prints with: its width is the terminal's or ``COLUMNS`` (piped: 80
    unless ``COLUMNS``); a reader that goes away (``| head``) ends the command quietly."""
    env = os.environ.get("COLUMNS", "")
    width = int(env) if env.isdigit() and int(env) > 0 else None
    return _Console(width=width, **kwargs)


def _cell_len(cell: str) -> int:
    return Text.from_markup(cell).cell_len


def _table_width(widths: Sequence[int]) -> int:
    """rich's default box: one border each side, ' x ' padding and a rule between columns."""
    return sum(widths) + 3 * len(widths) + 1


def fit(title: str, columns: Sequence[Column], rows: Sequence[Sequence[str] | None], width: int,
        keys: int = 1, terminal: bool = True) -> list[Table]:
    """``rows`` as one table if it fits ``width``, else as several, each with the first ``keys`` columns."""
    widths = [max([_cell_len(c.name)] + [_cell_len(r[i]) for r in rows if r is not None])
              for i, c in enumerate(columns)]
    key_cols = list(range(keys))
    parts: list[list[int]] = []
    for i in range(keys, len(columns)):
        if parts and columns[parts[-1][-1]].part == columns[i].part:
            parts[-1].append(i)
        else:
            parts.append([i])
    units: list[list[int]] = []  # what is packed: whole parts, or single columns of a part too wide alone
    for part in parts:
        if _table_width([widths[j] for j in [*key_cols, *part]]) <= width:
            units.append(part)
        else:
            units += [[i] for i in part]
    groups: list[list[int]] = []
    current = list(key_cols)
    for unit in units:
        trial = [*current, *unit]
        if len(current) > keys and _table_width([widths[j] for j in trial]) > width:
            groups.append(current)
            current = [*key_cols, *unit]
        else:
            current = trial
    groups.append(current)
    tables = []
    for n, group in enumerate(groups):
        suffix = f" ({n + 1}/{len(groups)})" if len(groups) > 1 else ""
        t = Table(title=title + suffix, title_justify="left", box=box.HEAVY_HEAD if terminal else box.ASCII2)
        for j in group:
            c = columns[j]
            t.add_column(c.name, justify=c.justify, no_wrap=True, overflow="fold",  # type: ignore[arg-type]
                         min_width=widths[j] if _table_width([widths[g] for g in group]) <= width else None)
        own = group[keys:]
        for r in rows:
            if r is None:
                t.add_section()
            elif len(groups) == 1 or any(r[j] for j in own):  # a split-off part skips rows it has nothing for
                t.add_row(*(r[j] for j in group))
        tables.append(t)
    return tables


def print_tables(con: Console, title: str, columns: Sequence[Column], rows: Sequence[Sequence[str] | None],
                 keys: int = 1) -> None:
    for t in fit(title, columns, rows, con.width, keys, con.is_terminal):
        con.print(t)


def replica_label(replicas: Sequence[int]) -> str:
    """`` × D = d`` when every stage has d > 1 replicas, `` × D_k = a–b (per stage)`` when they
    differ, empty for a pure pipeline."""
    lo, hi = min(replicas, default=1), max(replicas, default=1)
    if lo != hi:
        return f" × D_k = {lo}–{hi} (per stage)"
    return f" × D = {hi}" if hi > 1 else ""


def replica_cell(devices: Sequence[str]) -> str:
    """A stage's devices in one cell: the device, or the first…last of its replicas and their count."""
    return devices[0] if len(devices) == 1 else f"{devices[0]}…{devices[-1]} ({len(devices)})"
