"""Steady-state load of every link direction: bytes and busy time per iteration."""

from __future__ import annotations

from dataclasses import dataclass

from ddgsim.predict.collective import after_gradients, ring_edges, tree_chunks
from ddgsim.predict.max_plus import Costs
from ddgsim.predict.scenario import Scenario


@dataclass(frozen=True, kw_only=True)
class LinkStats:
    """Steady-state load of one link direction."""

    src: str
    """Sending device."""
    dst: str
    """Receiving device."""
    bytes_per_iteration: float
    """Bytes crossing this direction per iteration (all messages routed over it)."""
    busy_ms: float
    """Time per iteration this direction is occupied (latency included)."""


def link_stats(costs: Costs) -> tuple[LinkStats, ...]:
    """Bytes and busy time per iteration of every loaded link direction (M messages each way)."""
    M = costs.micro_batches
    load: dict[tuple[str, str], list[float]] = {}
    for routes, hop_ms in ((costs.act_hops, costs.act_hop_ms), (costs.grad_hops, costs.grad_hop_ms)):
        for k, route in enumerate(routes):
            for h, hop in enumerate(route):
                acc = load.setdefault(hop, [0.0, 0.0])
                acc[0] += M * float(costs.message_bytes[0, k])
                acc[1] += M * float(hop_ms[0, k, h])
    return tuple(LinkStats(src=s, dst=d, bytes_per_iteration=v[0], busy_ms=v[1]) for (s, d), v in sorted(load.items()))


def replicated_link_stats(costs: Costs, scenario: Scenario) -> tuple[LinkStats, ...]:
    """:func:`link_stats` with replicas: every piece (M per iteration each way) and every all-reduce chunk."""
    assert costs.layout is not None and costs.micro_bytes is not None and costs.allreduce_bytes is not None
    M, rows = costs.micro_batches, costs.layout.devices
    load: dict[tuple[str, str], list[float]] = {}

    def add(src: str, dst: str, nbytes: float, times: int) -> None:
        for hop in scenario.route(src, dst):
            acc = load.setdefault(hop, [0.0, 0.0])
            acc[0] += times * nbytes
            acc[1] += times * scenario.link(hop).hop_ms(nbytes)

    for k in range(costs.stages - 1):
        span = costs.boundary_span(k)
        for p in costs.boundary_pieces(k):
            nbytes = float(costs.micro_bytes[0, k]) * (p.hi - p.lo) / span
            add(rows[k][p.src], rows[k + 1][p.dst], nbytes, M)
            add(rows[k + 1][p.dst], rows[k][p.src], nbytes, M)
    for k, row in enumerate(rows):
        n = len(row)
        if n < 2:
            continue
        grads = ([b for _, b in costs.grad_buckets[k]] if costs.grad_buckets is not None else
                 [float(costs.allreduce_bytes[0, k])])
        for nbytes in [*(b for b in grads if b > 0), *after_gradients(k == len(rows) - 1)]:
            if costs.allreduce == "ring":
                for a, b in ring_edges(row):
                    add(a, b, nbytes / n, 2 * (n - 1))
            else:
                c = tree_chunks(scenario, row, nbytes)
                for i in range(1, n):
                    add(row[i], row[(i - 1) // 2], nbytes / c, c)
                    add(row[(i - 1) // 2], row[i], nbytes / c, c)
    return tuple(LinkStats(src=s, dst=d, bytes_per_iteration=v[0], busy_ms=v[1]) for (s, d), v in sorted(load.items()))
