"""``validation.csv``: one row per run, written whole after every execution and read back."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

from ddgsim.compare.accuracy import Speedup, speedups
from ddgsim.compare.rows import OK, Row, cell
from ddgsim.errors import UserError
from ddgsim.fileio import atomic_open

COLUMNS = ("model", "K", "schedule", "split", "predicted_ms", "measured_ms", "error_pct",
           "label", "batch_size", "steps", "scenario", "status", "error", "attempts",
           "micro_batches", "repeats", "measured_min_ms", "measured_max_ms", "measured_all_ms", "runtime",
           "steal_pct", "redone", "replicas", "predicted_memory_mib", "measured_memory_mib",
           "compute_ratio_all", "measured_at_s_all", "session_factor",
           "predicted_session_ms", "noise_pct", "speedup_predicted", "speedup_measured",
           "speedup_error_pct", "session_error_pct")
"""``validation.csv`` columns; the first seven are the contract, the rest context (a file without
``status``, ``error``, ``attempts`` is read as every run ``ok`` at the first attempt; one without
the repeat columns as one repeat with M = 1). From ``noise_pct`` on they are derived
(:attr:`Row.noise_pct`, :func:`speedups`, :attr:`Row.session_error_pct`), written for readers of the
file and recomputed when it is read."""

CSV_NAME = "validation.csv"


def write_csv(rows: Sequence[Row], path: Path) -> None:
    """The whole file, written aside and renamed: a reader never sees half of it."""
    ups = speedups(rows)
    nan = Speedup(math.nan, math.nan, math.nan)
    with atomic_open(path, newline="") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        for i, r in enumerate(rows):
            up = ups.get(i, nan)
            w.writerow([r.model, r.K, r.schedule, r.split, cell(r.predicted_ms, ".6g"), cell(r.measured_ms, ".6g"),
                        cell(r.error_pct, ".2f"), r.label, r.batch_size, r.steps, r.scenario, r.status, r.error,
                        r.attempts, r.micro_batches, r.repeats, cell(r.measured_min_ms, ".6g"),
                        cell(r.measured_max_ms, ".6g"), ";".join(format(x, ".6g") for x in r.measured_all_ms),
                        r.runtime, cell(r.steal_pct, ".2f"), r.redone, r.replicas,
                        ";".join(format(x, ".4g") for x in r.predicted_memory_mib),
                        ";".join(format(x, ".4g") for x in r.measured_memory_mib),
                        ";".join(format(x, ".4f") for x in r.compute_ratio_all),
                        ";".join(format(x, ".1f") for x in r.measured_at_s), cell(r.session_factor, ".4f"),
                        cell(r.predicted_session_ms, ".6g"), cell(r.noise_pct, ".2f"), cell(up.predicted, ".4f"), cell(up.measured, ".4f"),
                        cell(up.error_pct, ".2f"), cell(r.session_error_pct, ".2f")])


def read_csv(path: str | Path) -> list[Row]:
    """Every row of a ``validation.csv``; older files' missing context columns take their defaults."""
    try:
        with Path(path).open(newline="") as fh:
            recs = list(csv.DictReader(fh))
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{path} is not a validation.csv (a text CSV file): {exc}") from None
    missing = [c for c in COLUMNS[:7] if recs and c not in recs[0]]
    if missing:
        raise UserError(f"{path} is not a validation.csv: column '{missing[0]}' is missing")
    rows = []
    for line, rec in enumerate(recs, start=2):
        try:
            rows.append(_row(rec))
        except (ValueError, TypeError) as exc:
            raise UserError(f"{path} line {line} is not a validation run: {exc}") from None
    return rows


def _floats(text: str | None) -> tuple[float, ...]:
    """A CSV list of numbers joined by ``;`` (empty: none)."""
    return tuple(float(x) for x in (text or "").split(";") if x)


def _float(text: str | None) -> float:
    """A CSV number; empty (a failed run's measurement) is NaN."""
    return float(text) if text and text.strip() else math.nan


def _row(rec: dict[str, str]) -> Row:
    """One record of the file as a :class:`Row`."""
    return Row(model=rec["model"], K=int(rec["K"]), schedule=rec["schedule"], split=rec["split"],
               predicted_ms=_float(rec["predicted_ms"]), measured_ms=_float(rec["measured_ms"]),
               error_pct=_float(rec["error_pct"]), label=rec.get("label") or "",
               batch_size=int(rec.get("batch_size") or 0), steps=int(rec.get("steps") or 0),
               scenario=rec.get("scenario") or "", status=rec.get("status") or OK,
               error=rec.get("error") or "", attempts=int(rec.get("attempts") or 1),
               micro_batches=int(rec.get("micro_batches") or 1), repeats=int(rec.get("repeats") or 1),
               measured_all_ms=_floats(rec.get("measured_all_ms")),
               runtime=rec.get("runtime") or "ddgsim", steal_pct=_float(rec.get("steal_pct")),
               redone=int(rec.get("redone") or 0), replicas=int(rec.get("replicas") or 1),
               predicted_memory_mib=_floats(rec.get("predicted_memory_mib")),
               measured_memory_mib=_floats(rec.get("measured_memory_mib")),
               compute_ratio_all=_floats(rec.get("compute_ratio_all")),
               measured_at_s=_floats(rec.get("measured_at_s_all")),
               session_factor=_float(rec.get("session_factor")),
               predicted_session_ms=_float(rec.get("predicted_session_ms")))

