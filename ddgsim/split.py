"""Splits: unit indices where stages begin — parsing, checking, the even split, stage ranges."""

from __future__ import annotations

import math
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


def parse_split(text: str) -> list[int]:
    """``"15,30,45"`` → ``[15, 30, 45]``; an empty string is the one-stage split."""
    if not text.strip():
        return []
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise UserError(f"split '{text}' must be comma-separated unit indices, e.g. 15,30,45") from None


def even_split(num_units: int, stages: int) -> list[int]:
    """The authors' rule: ceil(n/K) units per stage (the last stage takes the rest).

    When that rule would leave a stage empty (e.g. 5 units on 4 stages), fall back to
    counts that differ by at most one, larger stages first.
    """
    if not 1 <= stages <= num_units:
        raise UserError(f"cannot split {num_units} units into {stages} stages (need 1 <= K <= {num_units})")
    per = math.ceil(num_units / stages)
    split = [per * i for i in range(1, stages)]
    if split and split[-1] >= num_units:
        base, extra = divmod(num_units, stages)
        sizes = [base + (1 if i < extra else 0) for i in range(stages)]
        split = [sum(sizes[: i + 1]) for i in range(stages - 1)]
    return split


def stage_ranges(split: Sequence[int], num_units: int) -> list[tuple[int, int]]:
    """Half-open unit ranges ``[start, end)`` of the stages."""
    bounds = [0, *split, num_units]
    return [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]


def _fmt(split: Sequence[object]) -> str:
    return ",".join(str(s) for s in split) or "(empty)"
