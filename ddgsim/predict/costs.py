"""The cost model: what each action and message of a split lasts, per stage (:class:`Costs`).

The durations every timing model reads — the max-plus recursion (:mod:`ddgsim.predict.max_plus`),
the closed forms (:mod:`ddgsim.predict.closed_form`), the SimPy simulator
(:mod:`ddgsim.predict.event_sim`) and the planner's tables — vectorised over S candidate splits:

* Durations on stage k's device (speed s): with M micro-batches, ``F`` and ``B`` are the
  profile's per-micro-batch costs for M (``Profile.micro_batch_ms``: one micro-batch of
  B/M samples timed inside GPipe-order steps) divided by s, when the profile has them;
  otherwise forward_ms(stage)/(s·M) and backward_ms(stage)/(s·M) — linear scaling,
  which flatters ``gpipe``/``1f1b`` where small batches run less efficiently.
  ``U`` = ``update_ms`` once per iteration, ``W`` = 0.
* Replicas (``layout``, :mod:`ddgsim.replicas`): F and B are one replica's largest shard of a
  micro-batch, ⌈B/M / D_k⌉ samples (``Profile.shard_costs``: measured where the profile has that
  sample count, else interpolated — ``Costs.notes`` says so); ``U`` lasts the stage's
  all-reduces (``Costs.allreduce_ms``: the gradients', one per bucket, and on the last stage the
  loss shares'; :func:`ddgsim.predict.collective.update_allreduce_ms`, not overlapped with
  compute — the executor and the SimPy model overlap the gradients' buckets with the
  backward, ``Costs.grad_buckets``, so here it is an upper bound) plus ``update_ms``; a
  boundary's message is its slowest piece (one representative replica per stage: its route's
  hops each take every piece of the boundary that crosses them; the SimPy model runs every
  replica and piece). Exact where a boundary's pieces take equal times (symmetric replicas);
  otherwise an upper bound, as the slowest pieces of two boundaries may lie on different
  replicas' chains.
* ``U`` cost: the profile's measured ``update_ms`` per unit (the profiler times the
  executor's SGD step right after a backward and shares it out by parameter tensors),
  divided by the device speed. Profiles without it fall back to a bandwidth model:
  SGD with momentum moves 5 × param_bytes at ``update_gb_s`` (default 10 GB/s ≈
  STREAM triad on one core) — far too cheap for many small tensors on a CPU.
* The executor's fixed costs (the scenario's ``[overheads]``, :mod:`ddgsim.predict.overheads`):
  each ``F``, ``B``, ``U`` lasts its overhead longer, messages it takes and posts included
  (their count, and the CPU their bytes cost each end: :func:`message_bytes_ms`),
  before its message leaves; then the stage stays busy for the action's tail
  (``Costs.tail_ms``) before its next action can start; the message does not wait for it.
* After ``F k t m`` ends (k < K-1) the boundary's ``output_bytes``/M travel to stage
  k+1; after ``B k t m`` ends (k > 0) the same number of bytes travel back to k-1, over
  the route's hops (``Costs.act_hop_ms``, ``grad_hop_ms``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ddgsim.errors import UserError, choices
from ddgsim.predict.collective import ring_edges, span_buckets, tree_levels, update_allreduce_ms
from ddgsim.predict.overheads import NONE, Overheads, action_ms, bytes_ms, tail_ms
from ddgsim.predict.scenario import Hop, Scenario
from ddgsim.profile.format import Profile
from ddgsim.replicas import (
    ALLREDUCE,
    Layout,
    Piece,
    bucket_ready,
    largest_shard,
    piece_share,
    pieces,
)

UPDATE_GB_S = 10.0
"""Memory bandwidth assumed for the optimizer step on the profiled device (GB/s)."""
UPDATE_TRAFFIC = 5
"""Bytes moved per parameter byte by SGD with momentum (read w, g, m; write w, m)."""


def default_iterations(stages: int) -> int:
    """4K + 8: warm-up (at most K-1 iterations) is well inside the first half."""
    return 4 * stages + 8


def min_iterations(stages: int) -> int:
    """The second half of the run must start after the longest warm-up (K-1 iterations)."""
    return 2 * stages + 2


@dataclass(frozen=True, kw_only=True)
class Costs:
    """Durations of S candidate splits on one device mapping (leading axis S)."""

    devices: tuple[str, ...]
    """Device of each stage."""
    micro_batches: int
    """M: F and B durations and message sizes below are per micro-batch."""
    forward_ms: np.ndarray
    """(S, K): one ``F`` on the stage's device."""
    backward_ms: np.ndarray
    """(S, K): one ``B``."""
    update_ms: np.ndarray
    """(S, K): one ``U``."""
    message_bytes: np.ndarray
    """(S, K-1): bytes of one message across boundary k → k+1 (and of its gradient)."""
    act_hops: tuple[tuple[tuple[str, str], ...], ...]
    """Per boundary k: the hops of the route from stage k to stage k+1."""
    grad_hops: tuple[tuple[tuple[str, str], ...], ...]
    """Per boundary k: the hops of the route from stage k+1 back to stage k."""
    act_hop_ms: np.ndarray
    """(S, K-1, H): time on hop h of the activation message (0 past the route's end)."""
    grad_hop_ms: np.ndarray
    """(S, K-1, H): time on hop h of the gradient message."""
    allreduce_ms: np.ndarray | None = None
    """(S, K): the all-reduces of the stage's weight gradients (one per bucket,
    :func:`ddgsim.predict.collective.span_buckets`) among its replicas before every ``U``, one after
    the other (zeros with one replica per stage); ``None`` is taken as zeros."""
    layout: Layout | None = None
    """The devices of every replica of every stage (``None``: one replica per stage, on ``devices``)."""
    micro_bytes: np.ndarray | None = None
    """(S, K-1): bytes of a whole micro-batch across boundary k (all its pieces); ``None``: ``message_bytes``."""
    allreduce: str = "ring"
    """All-reduce algorithm of ``allreduce_ms``."""
    allreduce_bytes: np.ndarray | None = None
    """(S, K): bytes each stage's all-reduce sums (its parameter bytes; ``None``: zeros)."""
    notes: tuple[str, ...] = ()
    """One line each: where a cost is an estimate (shard costs scaled from the batch, ...)."""
    tail_ms: np.ndarray | None = None
    """(K, 3): per stage, the tail of one ``F``, ``B``, ``U``: host time after the action's message is
    posted (:func:`ddgsim.predict.overheads.tail_ms`), before the stage's next action; ``None``: zeros."""
    samples: int | None = None
    """Samples of one micro-batch (B/M): the boundaries' pieces follow the real shards, which differ by
    a sample where a replica count does not divide it (:func:`ddgsim.replicas.shard`); ``None``: equal
    shards."""
    grad_buckets: tuple[tuple[tuple[float, float], ...], ...] | None = None
    """With one split (S = 1) and replicas: per stage, its gradient buckets as
    :func:`ddgsim.replicas.bucket_ready` gives them (fraction of the backward done when a bucket is
    ready, its bytes); empty for a stage of one replica. The simulator overlaps them with the
    backward, as the executor does; ``allreduce_ms`` (what the closed forms add to ``U``) is
    their sum, unhidden: an upper bound. ``None``: one bucket per stage, ready at the end."""

    def __post_init__(self) -> None:
        if self.allreduce_ms is None:
            object.__setattr__(self, "allreduce_ms", np.zeros_like(self.update_ms))
        if self.layout is None:
            object.__setattr__(self, "layout", Layout.pipeline(self.devices))
        if self.micro_bytes is None:
            object.__setattr__(self, "micro_bytes", self.message_bytes)
        if self.allreduce_bytes is None:
            object.__setattr__(self, "allreduce_bytes", np.zeros_like(self.update_ms))
        if self.tail_ms is None:
            object.__setattr__(self, "tail_ms", np.zeros((self.forward_ms.shape[1], 3)))

    @property
    def stages(self) -> int:
        return int(self.forward_ms.shape[1])

    @property
    def replicas(self) -> tuple[int, ...]:
        """D_k of every stage."""
        assert self.layout is not None
        return self.layout.replicas

    @property
    def u_ms(self) -> np.ndarray:
        """(S, K): what one ``U`` lasts on the stage: its all-reduce, then the optimizer step."""
        assert self.allreduce_ms is not None
        return np.asarray(self.update_ms + self.allreduce_ms)

    def row(self, i: int) -> Costs:
        """The costs of candidate ``i`` alone (S = 1)."""
        sl = slice(i, i + 1)
        assert self.allreduce_ms is not None and self.micro_bytes is not None and self.allreduce_bytes is not None
        return Costs(
            devices=self.devices, micro_batches=self.micro_batches,
            forward_ms=self.forward_ms[sl], backward_ms=self.backward_ms[sl],
            update_ms=self.update_ms[sl], message_bytes=self.message_bytes[sl],
            act_hops=self.act_hops, grad_hops=self.grad_hops,
            act_hop_ms=self.act_hop_ms[sl], grad_hop_ms=self.grad_hop_ms[sl],
            allreduce_ms=self.allreduce_ms[sl], layout=self.layout, micro_bytes=self.micro_bytes[sl],
            allreduce=self.allreduce, notes=self.notes, allreduce_bytes=self.allreduce_bytes[sl],
            grad_buckets=self.grad_buckets if self.forward_ms.shape[0] == 1 else None, tail_ms=self.tail_ms,
            samples=self.samples,
        )

    def boundary_pieces(self, k: int) -> list[Piece]:
        """The pieces of a micro-batch crossing boundary k → k+1 (one piece without replicas), over
        :meth:`boundary_span` samples."""
        D = self.replicas
        return pieces(self.boundary_span(k), D[k], D[k + 1])

    def boundary_span(self, k: int) -> int:
        """Samples the pieces of boundary k split: the micro-batch's, or ``D_k·D_{k+1}`` (equal shards)."""
        D = self.replicas
        return self.samples if self.samples is not None else D[k] * D[k + 1]

    def shared_links(self, scenario: Scenario | None = None) -> list[tuple[str, str]]:
        """Link directions that carry more than one flow (boundary × direction × piece, or all-reduce).

        Where this is empty the recursion is exactly the simulator; otherwise the two
        may serve messages on those links in a different order. With replicas, pass the
        ``scenario`` so every piece's route and every all-reduce's links are counted.
        """
        users: dict[tuple[str, str], int] = {}
        if scenario is None or max(self.replicas) == 1:
            for route in self.act_hops + self.grad_hops:
                for hop in route:
                    users[hop] = users.get(hop, 0) + 1
            return sorted(h for h, n in users.items() if n > 1)
        assert self.layout is not None
        rows = self.layout.devices
        for k in range(self.stages - 1):
            for p in self.boundary_pieces(k):
                a, b = rows[k][p.src], rows[k + 1][p.dst]
                for hop in scenario.route(a, b) + scenario.route(b, a):
                    users[hop] = users.get(hop, 0) + 1
        for row in rows:
            edges = (ring_edges(row) if self.allreduce == "ring" else
                     [e for level in tree_levels(row) for x, y in level for e in ((x, y), (y, x))])
            for hop in {h for a, b in edges for h in scenario.route(a, b)}:
                users[hop] = users.get(hop, 0) + 1
        return sorted(h for h, n in users.items() if n > 1)

    def busy_ms(self) -> np.ndarray:
        """(S, K): what occupies each stage per iteration: compute (with its tails), and its all-reduce."""
        M = self.micro_batches
        assert self.tail_ms is not None
        tails = M * (self.tail_ms[:, 0] + self.tail_ms[:, 1]) + self.tail_ms[:, 2]
        return np.asarray(M * (self.forward_ms + self.backward_ms) + self.u_ms + tails[None, :])


def check_mapping(scenario: Scenario, stages: int, devices: Sequence[str] | None) -> tuple[str, ...]:
    """Device per stage: the scenario's first K devices, or an explicit distinct list."""
    names = [d.name for d in scenario.devices]
    if devices is None:
        if stages > len(names):
            raise UserError(
                f"{stages} stages need {stages} devices but scenario '{scenario.name}' has {len(names)}"
            )
        return tuple(names[:stages])
    devices = tuple(devices)
    if len(devices) != stages:
        raise UserError(f"device mapping lists {len(devices)} device(s) for {stages} stages")
    for d in devices:
        if d not in names:
            raise UserError(f"device mapping: unknown device '{d}' (scenario '{scenario.name}' has {choices(names)})")
    dup = sorted({d for d in devices if devices.count(d) > 1})
    if dup:
        raise UserError(f"device mapping: device '{dup[0]}' is used by two stages (one stage per device)")
    return devices


def check_layout(scenario: Scenario, stages: int, layout: Layout) -> None:
    """``UserError`` unless ``layout`` has ``stages`` rows of devices of ``scenario``."""
    if layout.stages != stages:
        raise UserError(f"the layout has {layout.stages} stage(s) for {stages} stages")
    for d in layout.flat:
        scenario.device(d)


def shard_note(profile: Profile, micro_batches: int, replicas: Sequence[int]) -> str | None:
    """One line when a shard's costs are not measured (``Profile.shard_costs``: scaled or interpolated)."""
    B, M = profile.batch_size, micro_batches
    missing = sorted({M * d for d in replicas if M * d > 1 and not profile.shard_costs(M, d)[1]})
    if not missing:
        return None
    from ddgsim.models.registry import profile_hint

    uneven = sorted({largest_shard(B // M, c // M) for c in missing if B % c and B % M == 0})
    even = [c for c in missing if B % c == 0 or B % M]
    parts = []
    if even:
        counts = ",".join(map(str, even))
        how = profile_hint(profile.model, f"--batch-size {profile.batch_size} --micro-batches {counts}")
        parts.append(f"the profile has no measured costs for 1/{counts} of the batch (M·D pieces); a shard's "
                     f"costs are scaled from the nearest measured sample counts here (measure them: {how})")
    if uneven:
        sizes = ", ".join(map(str, uneven))
        parts.append(f"shards of {sizes} of a micro-batch's {B // M} samples (replicas that do not divide it) are "
                     "priced between the nearest measured sample counts, linearly")
    return "note: " + "; ".join(parts)


def piece_loads(scenario: Scenario, src: Sequence[str], dst: Sequence[str], samples: int | None = None,
                ) -> tuple[list[tuple[Hop, ...]], dict[Hop, tuple[float, float]]]:
    """The routes of a boundary's pieces (``src`` replicas → ``dst`` replicas, ``ddgsim.replicas.pieces``
    of a micro-batch of ``samples``; ``None``: equal shards) and, per hop, ``(latency ms, ms per byte
    of the whole micro-batch's message)`` summed over the pieces that cross it: a hop serves them one
    after the other."""
    span = samples if samples is not None else len(src) * len(dst)
    routes: list[tuple[Hop, ...]] = []
    load: dict[Hop, tuple[float, float]] = {}
    for p in pieces(span, len(src), len(dst)):
        route = tuple(scenario.route(src[p.src], dst[p.dst]))
        for h in route:
            link = scenario.link(h)
            lat, per = load.get(h, (0.0, 0.0))
            load[h] = (lat + link.latency_us * 1e-3, per + (p.hi - p.lo) / span / (link.bandwidth_gb_s * 1e6))
        routes.append(route)
    return routes, load


def _cuts(splits: Sequence[Sequence[int]] | np.ndarray, allreduce: str) -> tuple[np.ndarray, int, int]:
    """The splits as an (S, K-1) array, S and K (and the all-reduce algorithm checked)."""
    if allreduce not in ALLREDUCE:
        raise UserError(f"unknown all-reduce algorithm '{allreduce}' (known: {choices(ALLREDUCE)})")
    cuts = np.asarray(splits, dtype=np.int64)
    if cuts.ndim != 2:
        cuts = cuts.reshape(len(cuts), -1)
    return cuts, cuts.shape[0], cuts.shape[1] + 1


def costs_for_splits(
    profile: Profile,
    splits: Sequence[Sequence[int]] | np.ndarray,
    scenario: Scenario,
    devices: Sequence[str] | None = None,
    micro_batches: int = 1,
    update_gb_s: float = UPDATE_GB_S,
    *,
    layout: Layout | None = None,
    allreduce: str = "ring",
) -> Costs:
    """Per-stage durations for S splits at once (prefix sums; the splits are not checked).

    With a ``layout`` (D_k replicas of stage k, ``devices`` must then be ``None``): F and B
    are one replica's largest shard of a micro-batch, ⌈B/M / D_k⌉ samples (``Profile.shard_costs``:
    measured, or interpolated between measured sample counts — said in ``notes``); ``allreduce_ms`` is the
    all-reduce of the stage's parameter bytes among its replicas (:mod:`ddgsim.predict.collective`);
    the message across a boundary is the slowest of its pieces (bytes × piece/micro-batch on
    the route between the two replicas' devices).
    """
    if layout is not None and max(layout.replicas) == 1 and devices is None:
        devices, layout = list(layout.flat), None
    if layout is not None:
        return _costs_with_layout(profile, splits, scenario, micro_batches, update_gb_s, layout, allreduce,
                                  devices)
    cuts, S, K = _cuts(splits, allreduce)
    devs = check_mapping(scenario, K, devices)
    M = micro_batches
    n = profile.num_units
    bounds = np.concatenate([np.zeros((S, 1), np.int64), cuts, np.full((S, 1), n, np.int64)], axis=1)

    def stage_sum(values: list[float]) -> np.ndarray:
        cs = np.concatenate([[0.0], np.cumsum(values)])
        return np.asarray(cs[bounds[:, 1:]] - cs[bounds[:, :-1]])

    speed = np.array([scenario.device(d).speed for d in devs])
    micro, _ = profile.shard_costs(M)  # measured per micro-batch inside pipelined (GPipe-order) steps, or scaled
    fwd = stage_sum([f for f, _ in micro]) / speed
    bwd = stage_sum([b for _, b in micro]) / speed
    upd = stage_sum(unit_update_ms(profile, update_gb_s)) / speed
    extra_f, extra_b, extra_u = action_ms(scenario.overheads, [1] * K)
    out_bytes = np.array([u.output_bytes for u in profile.units], dtype=np.float64)
    msg = out_bytes[cuts - 1] / M if K > 1 else np.zeros((S, 0))
    by_bytes = message_bytes_ms(scenario.overheads, [1] * K, msg, None)
    fwd, bwd, upd = fwd + extra_f + by_bytes, bwd + extra_b + by_bytes, upd + extra_u
    tails = tail_ms(scenario.overheads, [1] * K)
    act_hops = tuple(tuple(scenario.route(devs[k], devs[k + 1])) for k in range(K - 1))
    grad_hops = tuple(tuple(scenario.route(devs[k + 1], devs[k])) for k in range(K - 1))
    H = max([len(r) for r in act_hops + grad_hops] + [1])

    def hop_ms(routes: tuple[tuple[tuple[str, str], ...], ...]) -> np.ndarray:
        out = np.zeros((S, K - 1, H))
        for k, route in enumerate(routes):
            for h, hop in enumerate(route):
                link = scenario.link(hop)
                out[:, k, h] = link.latency_us * 1e-3 + msg[:, k] / (link.bandwidth_gb_s * 1e6)
        return out

    note = shard_note(profile, M, [1] * K)
    return Costs(
        devices=devs, micro_batches=M, forward_ms=fwd, backward_ms=bwd, update_ms=upd,
        message_bytes=msg, act_hops=act_hops, grad_hops=grad_hops,
        act_hop_ms=hop_ms(act_hops), grad_hop_ms=hop_ms(grad_hops), allreduce=allreduce,
        notes=(note,) if note else (), tail_ms=tails,
    )


def _costs_with_layout(
    profile: Profile, splits: Sequence[Sequence[int]] | np.ndarray, scenario: Scenario, M: int,
    update_gb_s: float, layout: Layout, allreduce: str, devices: Sequence[str] | None,
) -> Costs:
    if devices is not None:
        raise UserError("give either a device mapping or a layout, not both")
    cuts, S, K = _cuts(splits, allreduce)
    check_layout(scenario, K, layout)
    D = layout.replicas
    rows = layout.devices
    devs = tuple(row[0] for row in rows)
    n = profile.num_units
    bounds = np.concatenate([np.zeros((S, 1), np.int64), cuts, np.full((S, 1), n, np.int64)], axis=1)

    def stage_sum(values: Sequence[float], k: int) -> np.ndarray:
        cs = np.concatenate([[0.0], np.cumsum(values)])
        return np.asarray(cs[bounds[:, k + 1]] - cs[bounds[:, k]])

    fwd, bwd = np.zeros((S, K)), np.zeros((S, K))
    # the largest shard of a micro-batch, ⌈B/M / D⌉ samples: once per replica count, not per stage
    shard_ms = {d: profile.shard_costs(M, d)[0] for d in set(D)}
    for k in range(K):
        speed = scenario.device(devs[k]).speed
        fwd[:, k] = stage_sum([f for f, _ in shard_ms[D[k]]], k) / speed
        bwd[:, k] = stage_sum([b for _, b in shard_ms[D[k]]], k) / speed
    unit_upd = unit_update_ms(profile, update_gb_s)
    params = [float(u.param_bytes) for u in profile.units]
    upd, ar, ar_bytes = np.zeros((S, K)), np.zeros((S, K)), np.zeros((S, K))
    grads = span_buckets(params) if any(d > 1 for d in D) else np.zeros((n + 1, n + 1, 1))
    for k in range(K):
        upd[:, k] = stage_sum(unit_upd, k) / scenario.device(devs[k]).speed
        if D[k] > 1:
            ar_bytes[:, k] = stage_sum(params, k)
            ar[:, k] = update_allreduce_ms(scenario, rows[k], grads[bounds[:, k], bounds[:, k + 1]], allreduce,
                                           last=k == K - 1)
    samples = profile.batch_size // M
    out_bytes = np.array([u.output_bytes for u in profile.units], dtype=np.float64)
    whole = out_bytes[cuts - 1] / M if K > 1 else np.zeros((S, 0))
    extra_f, extra_b, extra_u = action_ms(scenario.overheads, D, samples)
    by_bytes = message_bytes_ms(scenario.overheads, D, whole, samples)
    fwd, bwd, upd = fwd + extra_f + by_bytes, bwd + extra_b + by_bytes, upd + extra_u
    tails = tail_ms(scenario.overheads, D, samples)
    buckets = tuple(
        tuple(bucket_ready(params[bounds[0, k]:bounds[0, k + 1]],
                           [u.backward_ms for u in profile.units[bounds[0, k]:bounds[0, k + 1]]]))
        if D[k] > 1 else () for k in range(K)) if S == 1 else None
    # One representative message per boundary and direction: the slowest piece over its route,
    # where a hop that several pieces of the boundary cross takes all of them (they queue there).
    act_routes: list[tuple[Hop, ...]] = []
    grad_routes: list[tuple[Hop, ...]] = []
    act_load: list[dict[Hop, np.ndarray]] = []
    grad_load: list[dict[Hop, np.ndarray]] = []
    for k in range(K - 1):
        for out_routes, out_load, (src, dst) in ((act_routes, act_load, (rows[k], rows[k + 1])),
                                                  (grad_routes, grad_load, (rows[k + 1], rows[k]))):
            routes, per_hop = piece_loads(scenario, src, dst, samples)
            load = {h: lat + whole[:, k] * per for h, (lat, per) in per_hop.items()}
            totals = [float(sum((np.sum(load[h]) for h in r), 0.0)) for r in routes]
            out_routes.append(routes[int(np.argmax(totals))])
            out_load.append(load)
    act_hops, grad_hops = tuple(act_routes), tuple(grad_routes)
    H = max([len(r) for r in act_hops + grad_hops] + [1])

    def hop_ms(routes: tuple[tuple[Hop, ...], ...], load: list[dict[Hop, np.ndarray]]) -> np.ndarray:
        out = np.zeros((S, K - 1, H))
        for k, route in enumerate(routes):
            for h, hop in enumerate(route):
                out[:, k, h] = load[k][hop]
        return out

    # Bytes of one piece (the largest) per boundary; links are loaded by all pieces.
    msg = np.stack([whole[:, k] * piece_share(samples, D[k], D[k + 1])
                    for k in range(K - 1)], axis=1) if K > 1 else np.zeros((S, 0))
    note = shard_note(profile, M, D)
    return Costs(
        devices=devs, micro_batches=M, forward_ms=fwd, backward_ms=bwd, update_ms=upd,
        message_bytes=msg, act_hops=act_hops, grad_hops=grad_hops,
        act_hop_ms=hop_ms(act_hops, act_load), grad_hop_ms=hop_ms(grad_hops, grad_load),
        allreduce_ms=ar, layout=layout, micro_bytes=whole, allreduce=allreduce, allreduce_bytes=ar_bytes,
        notes=(note,) if note else (), grad_buckets=buckets, tail_ms=tails, samples=samples,
    )


def message_bytes_ms(overheads: Overheads, replicas: Sequence[int], whole: np.ndarray,
                     samples: int | None) -> np.ndarray:
    """(S, K): what one ``F`` (and one ``B``) of each stage spends on the bytes of its messages
    (:func:`ddgsim.predict.overheads.bytes_ms`), ``whole`` (S, K-1) being each boundary's micro-batch
    message in bytes."""
    K = len(replicas)
    out = np.zeros((whole.shape[0], K))
    for k in range(K):
        out[:, k] = bytes_ms(overheads, replicas, k, whole[:, k - 1] if k > 0 else 0.0,
                             whole[:, k] if k < K - 1 else 0.0, samples)
    return out


def shard_work_ms(profile: Profile, micro_batches: int = 1, replicas: int = 1) -> np.ndarray:
    """Per unit: forward + backward of one replica's shards of all ``micro_batches`` micro-batches
    of an iteration (``Profile.shard_costs``), on the profiled device."""
    costs, _ = profile.shard_costs(micro_batches, replicas)
    return micro_batches * np.array([f + b for f, b in costs], dtype=np.float64)


def unit_update_ms(profile: Profile, update_gb_s: float = UPDATE_GB_S) -> list[float]:
    """Optimizer-step cost of each unit on the profiled device: measured when the profile
    has it (every row), else 5 × param_bytes at ``update_gb_s``."""
    if all(u.update_ms is not None for u in profile.units):
        return [float(u.update_ms or 0.0) for u in profile.units]
    return [u.param_bytes * UPDATE_TRAFFIC / (update_gb_s * 1e6) for u in profile.units]


def single_device_ms(profile: Profile, speed: float, update_gb_s: float = UPDATE_GB_S,
                     overheads: Overheads = NONE) -> float:
    """Iteration time of the whole model on one device: compute + update (+ the executor's fixed
    cost of its three actions), no transfers."""
    f, b, u = action_ms(overheads, [1])
    extra = float(f[0] + b[0] + u[0] + tail_ms(overheads, [1]).sum())
    return (profile.sum_ms + sum(unit_update_ms(profile, update_gb_s))) / speed + extra
