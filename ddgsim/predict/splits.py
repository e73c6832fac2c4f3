"""A split — the unit indices where stages 1..K-1 begin: checking one, and its stages' unit ranges.

Here, below the planner, because the timing and memory models take a split and must not import
the planner; :mod:`ddgsim.plan.split` re-exports both with the split heuristics.
"""

from __future__ import annotations

from collections.abc import Sequence

from ddgsim.errors import UserError


def check_split(split: Sequence[int], num_units: int, stages: int | None = None) -> list[int]:
    """Return ``split`` as a list, or raise :class:`UserError` naming what is wrong.

    A split for K stages has K-1 strictly increasing indices in ``1..num_units-1``.
    """
    split = list(split)
    if stages is not None and len(split) != stages - 1:
        raise UserError(
            f"split {_fmt(split)} has {len(split)} cut(s); {stages} stages need {stages - 1}"
        )
    for i, s in enumerate(split):
        if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= num_units - 1:
            raise UserError(
                f"split {_fmt(split)}: entry {s!r} is out of range (cuts lie in 1..{num_units - 1} "
                f"for {num_units} units)"
            )
        if i and s <= split[i - 1]:
            raise UserError(f"split {_fmt(split)} must be strictly increasing ({split[i - 1]} then {s})")
    return split


def stage_ranges(split: Sequence[int], num_units: int) -> list[tuple[int, int]]:
    """Half-open unit ranges ``[start, end)`` of the stages."""
    bounds = [0, *split, num_units]
    return [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]


def _fmt(split: Sequence[object]) -> str:
    return ",".join(str(s) for s in split) or "(empty)"
