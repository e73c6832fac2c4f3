"""The same validation run twice or more: how far its measurements moved between runs, and the
least error any prediction could have had against all of them.

A validation's own noise figure (:attr:`ddgsim.compare.rows.Row.noise_pct`) is the spread of one
configuration's repeats inside one run, minutes apart. A machine whose state changes between
runs (another speed level for an hour, another placement of the processes) moves every repeat
of a run alike, and that spread cannot see it. Several runs of the same command can: if one
configuration's measured speedup is ``m_1 … m_n`` over the runs, a prediction ``p`` has
``max_i |p − m_i| / m_i`` as its worst error over them, and no ``p`` does better than
:func:`floor_pct` — reached at :func:`best_prediction`. Where that floor is above a tolerance,
no model can be within it in every run: the runs disagree with each other by more.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ddgsim.compare.accuracy import Speedup, speedups
from ddgsim.compare.rows import Row, run_label
from ddgsim.errors import UserError


def best_prediction(values: Sequence[float]) -> float:
    """The ``p`` with the least worst relative error ``max_i |p − v_i| / v_i`` over ``values`` (all
    > 0): the harmonic mean of the least and the largest, where the two errors are equal."""
    lo, hi = _range(values)
    return min(hi, max(lo, 2.0 * lo * hi / (lo + hi)))  # inside [lo, hi] despite rounding


def floor_pct(values: Sequence[float]) -> float:
    """100 · the least worst relative error any single prediction has against every one of
    ``values`` (all > 0): ``(max − min) / (max + min)``."""
    lo, hi = _range(values)
    return 100.0 * (hi - lo) / (hi + lo)


def within_all(measured: Sequence[float], widths_pct: Sequence[float]) -> tuple[float, float] | None:
    """The predictions ``p`` with ``|p − m_i| ≤ w_i % · m_i`` for every run ``i`` — each measurement
    ``measured[i]`` within its own width ``widths_pct[i]`` (a tolerance, or the run's noise where
    larger): the interval ``(lo, hi)``, or ``None`` when no prediction is within every one."""
    if len(measured) != len(widths_pct) or not measured:
        raise UserError(f"need one width per measurement, got {len(measured)} measurements and {len(widths_pct)} widths")
    lo = max(m * (1 - w / 100) for m, w in zip(measured, widths_pct, strict=True))
    hi = min(m * (1 + w / 100) for m, w in zip(measured, widths_pct, strict=True))
    return (lo, hi) if lo <= hi else None


def _range(values: Sequence[float]) -> tuple[float, float]:
    if not values or min(values) <= 0:
        raise UserError(f"need one or more positive measurements, got {list(values)!r}")
    return min(values), max(values)


@dataclass(frozen=True)
class Across:
    """One configuration over several runs of the same validation."""

    label: str
    measured_ms: tuple[float, ...]
    """Each run's measured time (median of its repeats)."""
    noise_pct: tuple[float, ...]
    """Each run's noise for it (:attr:`Row.noise_pct`: half the spread of its repeats)."""
    speedup: tuple[float, ...]
    """Each run's measured speedup over K = 1 of the same moment (empty for K = 1 or unpaired)."""
    speedup_predicted: tuple[float, ...]
    speedup_error_pct: tuple[float, ...]
    """Each run's error of the predicted speedup, as that validation reports it (:attr:`Speedup.error_pct`)."""

    @property
    def time_floor_pct(self) -> float:
        return floor_pct(self.measured_ms)

    def time_within(self, tol_pct: float) -> tuple[float, float] | None:
        """The predicted times within ``tol_pct`` or the run's own noise, whichever is larger, of every
        run's measurement (:func:`within_all`); ``None``: no prediction is, in every run."""
        return within_all(self.measured_ms, [max(tol_pct, n) for n in self.noise_pct])

    @property
    def speedup_floor_pct(self) -> float:
        return floor_pct(self.speedup) if self.speedup else float("nan")


KEY_FIELDS = "model, batch, scenario, K, replicas, schedule, micro-batches, runtime and split"
"""What matches a configuration over the runs."""

Key = tuple[str, int, str, str]


def _key(r: Row) -> Key:
    return (r.model, r.batch_size, r.scenario, run_label(r))


def _describe(key: Key) -> str:
    return f"{key[0]} b{key[1]} {key[3]}"


def _check(name: str, rows: Sequence[Row]) -> None:
    """A run's measured rows: every time finite and positive, no configuration twice."""
    if not rows:
        raise UserError(f"run {name} has no runs in its validation.csv")
    seen: set[Key] = set()
    for r in rows:
        if not r.ok:
            continue
        times = (r.measured_ms, *r.measured_all_ms)
        if not all(math.isfinite(t) and t > 0 for t in times):
            raise UserError(f"run {name}: {_describe(_key(r))} has measured times {list(times)!r}; a measured run "
                            "needs positive, finite times")
        if _key(r) in seen:
            raise UserError(f"run {name} holds {_describe(_key(r))} twice: one validation per file, please")
        seen.add(_key(r))


@dataclass(frozen=True)
class Matched:
    """The configurations measured in every run, and those left out (measured in some runs only)."""

    table: list[Across]
    left_out: list[str]


def across(runs: Sequence[Sequence[Row]], names: Sequence[str] | None = None) -> Matched:
    """Every configuration measured in all of ``runs`` (matched by :data:`KEY_FIELDS`), in the first
    run's order, and the labels of those measured in some of them only."""
    if len(runs) < 2:
        raise UserError(f"need two or more validation runs to compare, got {len(runs)}")
    names = list(names) if names is not None else [str(i + 1) for i in range(len(runs))]
    per_run: list[dict[Key, tuple[Row, Speedup | None]]] = []
    for name, rows in zip(names, runs, strict=True):
        _check(name, rows)
        ups = speedups(rows)
        table: dict[Key, tuple[Row, Speedup | None]] = {}
        for i, r in enumerate(rows):
            if r.ok:
                table[_key(r)] = (r, ups.get(i))
        per_run.append(table)
    out: list[Across] = []
    everywhere = [k for k in per_run[0] if all(k in t for t in per_run)]
    somewhere = {k for t in per_run for k in t}
    for key in everywhere:
        got = [t[key] for t in per_run]
        ups_of = [u for _, u in got if u is not None] if all(u is not None for _, u in got) else []
        out.append(Across(label=run_label(got[0][0]), measured_ms=tuple(r.measured_ms for r, _ in got),
                          noise_pct=tuple(r.noise_pct for r, _ in got),
                          speedup=tuple(u.measured for u in ups_of),
                          speedup_predicted=tuple(u.predicted for u in ups_of),
                          speedup_error_pct=tuple(u.error_pct for u in ups_of)))
    if not out:
        what = "; ".join(f"run {n}: " + (", ".join(sorted({f"{k[0]} at batch {k[1]} on {k[2] or '?'}" for k in t}))
                                          or "nothing measured") for n, t in zip(names, per_run, strict=True))
        raise UserError(f"the runs have no configuration in common ({KEY_FIELDS}): {what}")
    return Matched(out, [_describe(k) for k in sorted(somewhere - set(everywhere))])


def worst_floors(table: Sequence[Across]) -> tuple[float, float]:
    """(speedup, time): the least worst error, over every configuration and run, that any
    predictions (one per configuration) could have had — the largest of the configurations' floors."""
    ups = [a.speedup_floor_pct for a in table if a.speedup]
    return max(ups, default=float("nan")), max(a.time_floor_pct for a in table)
