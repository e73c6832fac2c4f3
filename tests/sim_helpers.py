"""Synthetic profiles and scenarios for the simulator tests (no torch, no files)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from hypothesis import strategies as st

from ddgsim.predict.overheads import Overheads
from ddgsim.predict.scenario import Device, Link, Scenario
from ddgsim.profile.format import Profile, UnitProfile


def make_profile(
    forward: Sequence[float],
    backward: Sequence[float],
    output_bytes: Sequence[int] | None = None,
    param_bytes: Sequence[int] | None = None,
    activation_bytes: Sequence[int] | None = None,
    batch_size: int = 8,
    saved_input: Sequence[int] | None = None,
    saved_output: Sequence[int] | None = None,
) -> Profile:
    n = len(forward)
    out = output_bytes or [1000] * n
    par = param_bytes or [0] * n
    act = activation_bytes or [0] * n
    units = [
        UnitProfile(name=f"u{i}", forward_ms=float(forward[i]), backward_ms=float(backward[i]),
                    output_bytes=int(out[i]), param_bytes=int(par[i]), activation_bytes=int(act[i]),
                    saved_input_bytes=None if saved_input is None else int(saved_input[i]),
                    saved_output_bytes=None if saved_output is None else int(saved_output[i]))
        for i in range(n)
    ]
    return Profile(model="synthetic", batch_size=batch_size, input_shape=[3, 8, 8], device="cpu",
                   threads=1, dtype="float32", units=units,
                   whole_model_ms=sum(forward) + sum(backward))


def chain(
    n: int,
    bandwidth_gb_s: float | Sequence[float] = math.inf,
    latency_us: float | Sequence[float] = 0.0,
    speeds: Sequence[float] | None = None,
    memory_gib: float = math.inf,
    mesh: bool = False,
) -> Scenario:
    """n devices ``d0..``; links between neighbours (or all pairs with ``mesh``)."""
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n) if mesh or j == i + 1]
    bws = [bandwidth_gb_s] * len(pairs) if isinstance(bandwidth_gb_s, (int, float)) else list(bandwidth_gb_s)
    lats = [latency_us] * len(pairs) if isinstance(latency_us, (int, float)) else list(latency_us)
    devs = tuple(Device(name=f"d{i}", speed=(speeds[i] if speeds else 1.0), memory_gib=memory_gib) for i in range(n))
    links = tuple(Link(src=f"d{i}", dst=f"d{j}", bandwidth_gb_s=bws[p], latency_us=lats[p])
                  for p, (i, j) in enumerate(pairs))
    return Scenario(name=f"{'mesh' if mesh else 'chain'}-{n}", devices=devs, links=links)


ms = st.floats(min_value=0.05, max_value=50.0, allow_nan=False).map(lambda x: round(x, 3))


@st.composite
def cases(draw: st.DrawFn, max_stages: int = 8, max_units: int = 16) -> tuple[Profile, list[int], Scenario]:
    """A random profile, a random split into K ≤ max_stages stages and a chain/mesh scenario."""
    n = draw(st.integers(1, max_units))
    forward = draw(st.lists(ms, min_size=n, max_size=n))
    backward = draw(st.lists(ms, min_size=n, max_size=n))
    out = draw(st.lists(st.integers(0, 20_000_000), min_size=n, max_size=n))
    par = draw(st.lists(st.integers(0, 5_000_000), min_size=n, max_size=n))
    profile = make_profile(forward, backward, out, par)
    K = draw(st.integers(1, min(max_stages, n)))
    split = sorted(draw(st.sets(st.integers(1, n - 1), min_size=K - 1, max_size=K - 1))) if K > 1 else []
    links = max(K * (K - 1) // 2, 1)
    mesh = draw(st.booleans())
    count = links if mesh else max(K - 1, 1)
    bw = draw(st.lists(st.sampled_from([math.inf, 0.5, 2.0, 12.0, 100.0]), min_size=count, max_size=count))
    lat = draw(st.lists(st.sampled_from([0.0, 5.0, 100.0, 2000.0]), min_size=count, max_size=count))
    speeds = draw(st.lists(st.sampled_from([0.5, 1.0, 1.5, 2.0]), min_size=K, max_size=K))
    return profile, split, with_overheads(chain(K, bw, lat, speeds, mesh=mesh), draw(overheads()))


def overheads() -> st.SearchStrategy[Overheads]:
    """None half the time; else fixed costs per action, per message and tails (µs), sometimes
    the CPU of a message's bytes, sometimes with other figures for a job of one process."""
    us = st.sampled_from([0.0, 40.0, 700.0, 5000.0])
    one = st.builds(Overheads, forward_us=us, backward_us=us, update_us=us, send_us=us, receive_us=us, tail_us=us)
    # the CPU a message's bytes cost each end: none, or a curve from nothing at a few bytes (calibrate's)
    curve = st.just(((), ())) | st.tuples(
        st.just((4.0, 262144.0, 8388608.0)),
        st.tuples(st.just(0.0), st.sampled_from([40.0, 700.0]), st.sampled_from([700.0, 5000.0])))
    some = st.builds(lambda c, **kw: Overheads(message_sizes=c[0], message_cpu_us=c[1], **kw), curve,
                     forward_us=us, backward_us=us, update_us=us, send_us=us, receive_us=us,
                     tail_us=us, alone=st.none() | one)
    return st.just(Overheads()) | some


def with_overheads(scenario: Scenario, overheads: Overheads) -> Scenario:
    return dataclasses.replace(scenario, overheads=overheads)
