"""Chrome trace-event JSON (opens in Perfetto / chrome://tracing); shared by the simulator and the executor.

One ``pid`` per source (``process`` name, e.g. "predicted" or "measured"), one ``tid``
(row) per device and per link direction, named by ``M`` metadata events; every
interval is a complete event (``ph: "X"``) with ``ts``/``dur`` in µs. Rows keep the
order in which they first appear, devices before links when the caller lists them so.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ddgsim.fileio import write_json_atomic


@dataclass(frozen=True, kw_only=True)
class TraceEvent:
    """One interval on one row of the timeline."""

    row: str
    """Device name (``gpu0``) or link direction (``gpu0->gpu1``)."""
    name: str
    """What ran: an action (``0F3``) or a message (``act 0F3``)."""
    start_ms: float
    """Start, in ms from the beginning of the run."""
    end_ms: float
    """End, in ms."""
    cat: str = ""
    """Category: ``F``/``B``/``U``/``W`` for compute, ``link`` for transfers."""
    args: dict[str, Any] = field(default_factory=dict)
    """Extra fields shown by the viewer."""


def trace_events(
    events: Iterable[TraceEvent],
    process: str = "ddgsim",
    pid: int = 0,
    rows: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Trace-event dicts for one process: metadata first, then one ``X`` event per interval."""
    events = list(events)
    order = list(dict.fromkeys([*rows, *(e.row for e in events)]))
    tid = {row: i for i, row in enumerate(order)}
    out: list[dict[str, Any]] = [{"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": process}}]
    for row, i in tid.items():
        out.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": i, "args": {"name": row}})
        out.append({"name": "thread_sort_index", "ph": "M", "pid": pid, "tid": i, "args": {"sort_index": i}})
    for e in events:
        ev: dict[str, Any] = {
            "name": e.name, "cat": e.cat or "compute", "ph": "X", "pid": pid, "tid": tid[e.row],
            "ts": round(e.start_ms * 1e3, 3), "dur": round((e.end_ms - e.start_ms) * 1e3, 3),
        }
        if e.args:
            ev["args"] = e.args
        out.append(ev)
    return out


def write_trace(
    path: str | os.PathLike[str],
    events: Iterable[TraceEvent],
    process: str = "ddgsim",
    rows: Sequence[str] = (),
    metadata: dict[str, Any] | None = None,
) -> None:
    """Write one process's timeline atomically as ``{"traceEvents": [...], ...}``."""
    data: dict[str, Any] = {"traceEvents": trace_events(events, process, 0, rows), "displayTimeUnit": "ms"}
    if metadata:
        data["metadata"] = metadata
    write_json_atomic(Path(path), data)


def load_trace(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a trace file back, checked against its schema (tests, the compare command)."""
    from ddgsim.fileio import read_json
    from ddgsim.schemas import check

    data: dict[str, Any] = read_json(path, "trace")
    check(data, "trace", str(path))
    return data
