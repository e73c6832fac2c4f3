"""Splits: unit indices where stages begin — parsing, checking, stage ranges (those two from
:mod:`ddgsim.predict.splits`), and every split heuristic (the authors' even split,
parameter-balanced, compute-weighted) with the exact min-max partition DP they and the planner
share."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ddgsim.errors import UserError
from ddgsim.predict.splits import check_split as check_split  # re-exported (``as``): callers import
from ddgsim.predict.splits import stage_ranges as stage_ranges  # them from here

if TYPE_CHECKING:
    from ddgsim.profile.format import Profile


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


def parameter_balanced_split(profile: Profile, stages: int) -> list[int]:
    """DeepSpeed's ``partition_method="parameters"``: contiguous parts minimising the
    largest parameter count (its ``partition_balanced``), by an exact min-max DP.
    Ties go to the earliest cut; units without parameters weigh nothing.
    """
    n = profile.num_units
    w = np.concatenate([[0.0], np.cumsum([u.param_bytes for u in profile.units])])
    idx = np.arange(n + 1)
    valid = idx[:, None] < idx[None, :]
    part = np.where(valid, w[None, :] - w[:, None], np.inf)
    found = minmax_partition([part] * stages, n)
    assert found is not None
    return found[0]


def weighted_split(profile: Profile, stages: int, weights: Sequence[float]) -> list[int]:
    """Cuts giving stage k a share of the compute (forward + backward) ∝ ``weights[k]``."""
    n = profile.num_units
    cum = np.cumsum([u.compute_ms for u in profile.units])
    targets = np.cumsum(weights)[:-1] / float(np.sum(weights)) * cum[-1]
    cuts: list[int] = []
    for k, target in enumerate(targets):
        # cut after the unit whose cumulative compute is closest to the target
        c = int(np.argmin(np.abs(cum - target))) + 1
        c = max(c, (cuts[-1] + 1) if cuts else 1)
        c = min(c, n - (stages - 1 - k))
        cuts.append(c)
    return cuts


def imbalance_weights(stages: int) -> list[tuple[str, list[float]]]:
    """Ever stronger imbalances: stage 0 heavy, last stage heavy, x2, x3, x4."""
    out = []
    for f in (2.0, 3.0, 4.0):
        out.append((f"front x{f:g}", [f] + [1.0] * (stages - 1)))
        out.append((f"back x{f:g}", [1.0] * (stages - 1) + [f]))
    return out


def reach(K: int, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per stage k: masks of allowed starts u and ends v (every stage keeps ≥ 1 unit)."""
    idx = np.arange(n + 1)
    out = []
    for k in range(K):
        starts = (idx >= k) & (idx <= n - (K - k))
        ends = (idx >= k + 1) & (idx <= n - (K - 1 - k))
        if k == 0:
            starts = idx == 0
        if k == K - 1:
            ends = idx == n
        out.append((starts, ends))
    return out


def backtrack(back: Sequence[np.ndarray], n: int) -> list[int]:
    """The split from forward-DP back pointers (``back[k][v]`` = start of stage k ending at v)."""
    split, v = [], n
    for k in range(len(back) - 1, 0, -1):
        v = int(back[k][v])
        split.append(v)
    return split[::-1]


def minmax_partition(costs: Sequence[np.ndarray], n: int) -> tuple[list[int], float] | None:
    """Exact min-max DP: the split minimising max_k costs[k][start, end] (inf = not allowed)."""
    allowed = reach(len(costs), n)
    prev = np.full(n + 1, np.inf)
    prev[0] = -np.inf
    back = []
    for k, cost in enumerate(costs):
        starts, ends = allowed[k]
        val = np.where(starts[:, None] & ends[None, :], np.maximum(prev[:, None], cost), np.inf)
        arg = np.argmin(val, axis=0)
        prev = val[arg, np.arange(n + 1)]
        back.append(arg)
    if not np.isfinite(prev[n]):
        return None
    return backtrack(back, n), float(prev[n])
