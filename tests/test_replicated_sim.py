"""Replicated stages in the timing models: SimPy all-reduce vs the closed forms, D = 1 unchanged,
the simulator vs the max-plus recursion with replicas, memory per replica, cluster scenarios."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st
from sim_helpers import cases, chain, make_profile

from ddgsim.errors import UserError
from ddgsim.predict.closed_form import closed_form_period, stage_costs
from ddgsim.predict.collective import LOSS_BYTES, ring_ms, tree_ms
from ddgsim.predict.event_sim import simulate
from ddgsim.predict.max_plus import costs_for_splits, periods, unit_update_ms
from ddgsim.predict.scenario import Device, Link, Scenario, cluster
from ddgsim.replicas import Layout

BATCH = 27720  # divisible by every M·D used here (lcm of 1..12)
figures = st.fixed_dictionaries({
    "intra_bandwidth_gb_s": st.sampled_from([1.0, 10.0, 300.0]),
    "intra_latency_us": st.sampled_from([0.0, 2.0, 100.0]),
    "inter_bandwidth_gb_s": st.sampled_from([0.5, 5.0, 25.0]),
    "inter_latency_us": st.sampled_from([0.0, 5.0, 500.0]),
})
sizes = st.sampled_from([1e3, 12345.0, 1e6, 3e7])


def sim_allreduce(sc: Scenario, devs: list[str], nbytes: float, algorithm: str) -> float:
    """All-reduce time in SimPy: one stage of D replicas with no compute, so a bp iteration is
    the all-reduces (the gradients', then the loss shares' LOSS_BYTES, as on any last stage)
    plus the optimizer step (which the bandwidth model charges)."""
    prof = make_profile([0.0], [0.0], param_bytes=[int(nbytes)], batch_size=BATCH)
    r = simulate(prof, [], sc, "bp", layout=Layout((tuple(devs),)), allreduce=algorithm, iterations=6)
    return r.iteration_ms - sum(unit_update_ms(prof))


def closed(sc: Scenario, devs: list[str], nbytes: float, algorithm: str) -> float:
    """The closed forms of both all-reduces of a last stage's update: gradients, then loss."""
    form = ring_ms if algorithm == "ring" else tree_ms
    return float(form(sc, devs, int(nbytes))) + float(form(sc, devs, LOSS_BYTES))


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(["ring", "tree"]), st.integers(2, 9), sizes, figures, st.booleans())
def test_simpy_allreduce_equals_the_closed_form(algorithm: str, D: int, nbytes: float, fig, spread: bool) -> None:
    # Uniform links along the collective: D devices of one node, or one device on each of D
    # nodes (every edge then crosses two NICs; under the tree a parent's NIC carries both of
    # its children's chunks, so complete trees only: D = 2, 3, 7).
    if spread and algorithm == "tree":
        D = {2: 2, 3: 3}.get(D, 7)
    sc = cluster(D, 2, **fig) if spread else cluster(1, D, **fig)
    devs = [f"n{i}.g0" for i in range(D)] if spread else [f"n0.g{i}" for i in range(D)]
    assert sim_allreduce(sc, devs, nbytes, algorithm) == pytest.approx(closed(sc, devs, nbytes, algorithm),
                                                                       rel=1e-9, abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 4), st.integers(2, 3), sizes, figures)
def test_simpy_ring_with_a_shared_nic_is_within_one_step(N: int, m: int, nbytes: float, fig) -> None:
    # Replicas round-robin over N nodes, m per node: every ring edge leaves through its node's
    # NIC, which carries m of them in every step (the closed form's busiest link direction). The
    # SimPy ring is asynchronous (a device goes on as soon as its chunk is in), the closed form
    # synchronous: they differ by less than one step.
    sc = cluster(N, m, **fig)
    devs = [f"n{r % N}.g{r // N}" for r in range(N * m)]
    want = closed(sc, devs, nbytes, "ring")
    steps = [float(ring_ms(sc, devs, n)) / (2 * (N * m - 1)) for n in (int(nbytes), LOSS_BYTES)]
    assert abs(sim_allreduce(sc, devs, nbytes, "ring") - want) <= sum(steps) * (1 + 1e-9)
    step = steps[0]
    # the NIC really is shared: the closed form charges m chunks per step on it
    chunk = int(nbytes) / (N * m)
    assert step == pytest.approx(m * (fig["inter_latency_us"] * 1e-3 + chunk / (fig["inter_bandwidth_gb_s"] * 1e6)))


@settings(max_examples=20, deadline=None)
@given(cases(max_stages=4, max_units=8), st.sampled_from(["ddg", "ddg-pipelined", "bp", "gpipe"]))
def test_one_replica_per_stage_simulates_exactly_like_today(case, name) -> None:
    profile, split, scenario = case
    m = 2 if name == "gpipe" else 1
    devs = [d.name for d in scenario.devices][: len(split) + 1]
    old = simulate(profile, split, scenario, name, micro_batches=m)
    new = simulate(profile, split, scenario, name, micro_batches=m, layout=Layout.pipeline(devs))
    assert new.timeline == old.timeline and new.iteration_ms == old.iteration_ms
    assert new.memory == old.memory and new.links == old.links and new.replicas == (1,) * len(devs)
    assert new.allreduce_ms == (0.0,) * len(devs)


def mesh(n: int, bw: list[float], lat: list[float]) -> Scenario:
    devs = tuple(Device(name=f"d{i}") for i in range(n))
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    return Scenario(name="mesh", devices=devs, links=tuple(
        Link(src=f"d{i}", dst=f"d{j}", bandwidth_gb_s=bw[p % len(bw)], latency_us=lat[p % len(lat)])
        for p, (i, j) in enumerate(pairs)))


@st.composite
def replicated(draw: st.DrawFn) -> tuple:
    profile, split, _ = draw(cases(max_stages=3, max_units=6))
    K = len(split) + 1
    D = draw(st.lists(st.integers(1, 3), min_size=K, max_size=K))
    n = sum(D)
    uniform = draw(st.booleans())  # a stage of 3 replicas needs equal links along its ring/tree
    bw = draw(st.lists(st.sampled_from([math.inf, 0.5, 2.0, 12.0]), min_size=1, max_size=1 if uniform else 6))
    lat = draw(st.lists(st.sampled_from([0.0, 5.0, 100.0, 2000.0]), min_size=1, max_size=1 if uniform else 6))
    if not uniform:
        D = [min(d, 2) for d in D]
        n = sum(D)
    sc = mesh(n, bw, lat)
    names = iter(d.name for d in sc.devices)
    layout = Layout(tuple(tuple(next(names) for _ in range(d)) for d in D))
    # equal shards, or a small batch that 2 or 3 replicas split into shards a sample apart
    batch = draw(st.sampled_from([BATCH, 3, 4, 5, 7, 11]).filter(lambda b: b >= max(D)))
    prof = make_profile([u.forward_ms for u in profile.units], [u.backward_ms for u in profile.units],
                        [u.output_bytes for u in profile.units], [u.param_bytes for u in profile.units],
                        batch_size=batch)
    return prof, split, sc, layout


@settings(max_examples=40, deadline=None)
@given(replicated(), st.sampled_from(["ddg", "ddg-pipelined", "bp"]), st.sampled_from(["ring", "tree"]))
def test_replicated_sim_equals_recursion_without_shared_links(case, name, algorithm) -> None:
    profile, split, sc, layout = case
    costs = costs_for_splits(profile, [split], sc, layout=layout, allreduce=algorithm)
    assume(not costs.shared_links(sc))
    r = simulate(profile, split, sc, name, layout=layout, allreduce=algorithm)
    # shards a sample apart: pieces of unequal size, each replica priced at its stage's largest shard
    uneven = any(profile.batch_size % d for d in layout.replicas)
    if uneven:
        event("uneven shards")
    overlapped = any(f < 1.0 for stage in costs.grad_buckets or () for f, _ in stage)
    assert r.analytic_exact == (not overlapped) and r.replicas == layout.replicas
    a = float(periods(name, costs)[0])
    assert float(closed_form_period(name, stage_costs(costs))[0]) == pytest.approx(a, rel=1e-9, abs=1e-9)
    if overlapped:
        # gradient buckets that start inside the backward hide some of the all-reduce, which the
        # closed forms add to U whole: an upper bound
        event("buckets overlap the backward")
        assert a >= r.iteration_ms * (1 - 1e-9) - 1e-9
    elif len({(link.bandwidth_gb_s, link.latency_us) for link in sc.links}) <= 1 and not uneven:
        # Symmetric replicas: every piece of a boundary takes as long, so the one representative
        # per stage (its slowest piece) is exact.
        assert a == pytest.approx(r.iteration_ms, rel=1e-9, abs=1e-9)
    else:
        # Replicas on links of different speeds, or pieces of unequal size: the representative adds
        # every boundary's slowest piece, while each replica's chain only takes its own pieces
        # (hypothesis found a layout where the slow pieces lie on different chains): an upper bound.
        assert a >= r.iteration_ms * (1 - 1e-9) - 1e-9
    assert r.allreduce_ms == pytest.approx(costs.allreduce_ms[0].tolist())


def test_shard_costs_allreduce_in_u_and_notes() -> None:
    prof = make_profile([4.0, 8.0], [8.0, 16.0], output_bytes=[1_000_000, 0], param_bytes=[3_000_000, 1_000_000])
    sc = chain(4, bandwidth_gb_s=1.0, latency_us=0.0, mesh=True)
    layout = Layout((("d0", "d1"), ("d2",)))
    c = costs_for_splits(prof, [[1]], sc, layout=layout)
    assert c.forward_ms[0].tolist() == [2.0, 8.0] and c.backward_ms[0].tolist() == [4.0, 16.0]
    # ring of 2 on 1 GB/s: 2·(2−1)·(3e6/2 bytes) = 3 ms
    assert c.allreduce_ms[0].tolist() == pytest.approx([3.0, 0.0])
    assert (c.u_ms - c.update_ms)[0].tolist() == pytest.approx([3.0, 0.0])
    assert c.devices == ("d0", "d2") and c.replicas == (2, 1)
    assert len(c.notes) == 1 and "no measured costs for 1/2 of the batch" in c.notes[0]
    # two pieces of 500 kB, d0->d2 and d1->d2: separate links, the representative is one of them
    assert c.message_bytes[0].tolist() == [500_000.0] and c.act_hop_ms[0, 0].tolist() == [0.5]
    prof.micro_batch_ms["2"] = [[1.5, 3.0], [5.0, 9.0]]  # measured shards win over scaling
    m = costs_for_splits(prof, [[1]], sc, layout=layout)
    assert m.forward_ms[0].tolist() == [1.5, 8.0] and m.notes == ()
    with pytest.raises(UserError, match="not both"):
        costs_for_splits(prof, [[1]], sc, devices=["d0", "d1"], layout=layout)
    with pytest.raises(UserError, match="unknown all-reduce algorithm 'star'"):
        costs_for_splits(prof, [[1]], sc, layout=layout, allreduce="star")
    with pytest.raises(UserError, match="unknown device 'x'"):
        costs_for_splits(prof, [[1]], sc, layout=Layout((("d0", "x"), ("d2",))))


def test_pieces_that_share_a_nic_queue_in_the_representative() -> None:
    # Stage 0 on node 0 (2 replicas), stage 1 on node 1 (2 replicas): both pieces leave
    # through n0's NIC, so the recursion's activation hop takes both (2 × 1 ms).
    prof = make_profile([1.0, 1.0], [1.0, 1.0], output_bytes=[2 * 25_000_000, 0], batch_size=BATCH)
    sc = cluster(2, 2, inter_latency_us=0.0)
    layout = Layout((("n0.g0", "n0.g1"), ("n1.g0", "n1.g1")))
    c = costs_for_splits(prof, [[1]], sc, layout=layout)
    assert c.act_hops == ((("n0.nic", "fabric"),),) and c.act_hop_ms[0, 0].tolist() == pytest.approx([2.0])
    assert ("n0.nic", "fabric") in c.shared_links(sc)
    r = simulate(prof, [1], sc, "bp", layout=layout)
    nic = {(x.src, x.dst): x for x in r.links}[("n0.nic", "fabric")]
    assert nic.bytes_per_iteration == 50_000_000 and nic.busy_ms == pytest.approx(2.0)
    assert not r.analytic_exact and r.samples_per_s == pytest.approx(BATCH * 1e3 / r.iteration_ms)
    assert any(e.cat == "link" and e.row == "n0.nic->fabric" for e in r.timeline)


def test_allreduce_shows_in_the_trace_and_blocks_only_its_stage() -> None:
    prof = make_profile([1.0, 1.0], [1.0, 1.0], param_bytes=[10_000_000, 0], batch_size=BATCH)
    sc = chain(3, bandwidth_gb_s=10.0, latency_us=10.0, mesh=True)
    r = simulate(prof, [1], sc, "ddg-pipelined", layout=Layout((("d0", "d1"), ("d2",))))
    ar = [e for e in r.timeline if e.cat == "allreduce"]
    assert {e.row for e in ar} == {"d0", "d1"} and all(e.end_ms > e.start_ms for e in ar)
    assert r.allreduce_ms[0] == pytest.approx(2 * 1 * (0.01 + 5e6 / 10e6)) and r.allreduce_ms[1] == 0
    s = r.summary()
    assert s["replicas"] == [2, 1] and s["layout"] == [["d0", "d1"], ["d2"]] and s["allreduce"] == "ring"
    # no compute on d0 while its all-reduce runs
    for e in ar:
        assert not any(x.row == "d0" and x.cat in "FBU" and x.start_ms < e.end_ms and x.end_ms > e.start_ms
                       for x in r.timeline if e.row == "d0")


def test_gradient_buckets_overlap_the_backward() -> None:
    """K = 1 × D = 2, the last unit's 100 MB of parameters ready after 2 ms of a 12 ms backward:
    its all-reduce (about 8.3 ms) is hidden behind the first unit's backward, as in the
    executor; the closed form, which adds it to U, is an upper bound by that much. A stage whose
    only parameters come last in the backward (ready at its end) hides nothing."""
    sc = chain(2, bandwidth_gb_s=12.0, latency_us=10.0, mesh=True)
    lay = Layout((("d0", "d1"),))
    hidden = make_profile([1.0, 1.0], [10.0 * 2, 2.0 * 2], param_bytes=[0, 100_000_000], batch_size=BATCH)
    r = simulate(hidden, [], sc, "ddg", layout=lay)
    costs = costs_for_splits(hidden, [[]], sc, layout=lay)
    assert costs.grad_buckets == (((2.0 / 12.0, 100_000_000.0),),)
    ar = float(costs.allreduce_ms[0, 0])
    assert ar == pytest.approx(2 * (0.01 + 50_000_000 / 12e6) + 2 * (0.01 + LOSS_BYTES / 2 / 12e6))
    closed = float(closed_form_period("ddg", stage_costs(costs))[0])
    loss = 2 * (0.01 + LOSS_BYTES / 2 / 12e6)
    assert r.iteration_ms == pytest.approx(closed - ar + loss, rel=1e-9)
    assert not r.analytic_exact
    exposed = make_profile([1.0, 1.0], [10.0 * 2, 2.0 * 2], param_bytes=[100_000_000, 0], batch_size=BATCH)
    e = simulate(exposed, [], sc, "ddg", layout=lay)
    ce = costs_for_splits(exposed, [[]], sc, layout=lay)
    assert ce.grad_buckets == (((1.0, 100_000_000.0),),) and e.analytic_exact
    assert e.iteration_ms == pytest.approx(float(closed_form_period("ddg", stage_costs(ce))[0]), rel=1e-9)


def test_memory_per_replica() -> None:
    prof = make_profile([1] * 3, [1] * 3, output_bytes=[100, 200, 300], param_bytes=[10, 20, 30],
                        activation_bytes=[1200, 2400, 3600], batch_size=BATCH)
    one = simulate(prof, [1, 2], chain(6, mesh=True), "ddg")
    lay = Layout((("d0", "d1"), ("d2", "d3", "d4"), ("d5",)))
    rep = simulate(prof, [1, 2], chain(6, mesh=True), "ddg", layout=lay)
    for k, d in enumerate((2, 3, 1)):
        a, b = one.memory[k], rep.memory[k]
        assert (b.params, b.grads, b.optimizer, b.stashed_weights) == (a.params, a.grads, a.optimizer, a.stashed_weights)
        assert b.activations == round(a.activations / d) and b.buffers == round(a.buffers / d)
        assert b.in_flight == a.in_flight
    assert rep.memory[1].activations == round(2 * (2400 + 100) / 3) and rep.memory[1].buffers == 3 * (100 + 200) // 3
    tight = simulate(prof, [1, 2], chain(6, mesh=True, memory_gib=1e-6), "ddg", layout=lay)
    assert tight.memory_fits == (False, False, False)


def test_every_replica_needs_a_sample() -> None:
    prof = make_profile([1.0, 1.0], [1.0, 1.0], batch_size=2)
    with pytest.raises(UserError, match="stage 0 has 3 replicas but a micro-batch has 2 samples"):
        simulate(prof, [1], chain(4, mesh=True), "ddg", layout=Layout((("d0", "d1", "d2"), ("d3",))))


def test_uneven_shards_are_priced_at_the_largest_shard() -> None:
    """8 samples on 3 replicas: shards of 3, 3 and 2 samples; the stage moves at its 3-sample shards' pace,
    the messages to the next stage's 2 replicas (4 + 4) are pieces of 3, 1 + 2 and 2 samples."""
    prof = make_profile([1.0, 2.0], [3.0, 4.0], output_bytes=[800, 0], activation_bytes=[8000, 16000], batch_size=8)
    layout = Layout((("d0", "d1", "d2"), ("d3", "d4")))
    costs = costs_for_splits(prof, [[1]], chain(5, mesh=True), layout=layout)
    assert costs.forward_ms[0].tolist() == pytest.approx([3 / 8 * 1.0, 4 / 8 * 2.0])
    assert costs.backward_ms[0].tolist() == pytest.approx([3 / 8 * 3.0, 4 / 8 * 4.0])
    assert [(p.src, p.dst, p.lo, p.hi) for p in costs.boundary_pieces(0)] == [
        (0, 0, 0, 3), (1, 0, 3, 4), (1, 1, 4, 6), (2, 1, 6, 8)]
    assert costs.message_bytes[0].tolist() == pytest.approx([800 * 3 / 8])  # the largest piece
    assert any("shards of 3 of a micro-batch's 8 samples" in n for n in costs.notes)
    mem = simulate(prof, [1], chain(5, mesh=True), "ddg", layout=layout).memory
    whole = simulate(prof, [1], chain(5, mesh=True), "ddg", layout=Layout((("d0",), ("d3",)))).memory
    assert whole[0].activations > 0
    assert mem[0].activations == round(whole[0].activations * 3 / 8)  # the largest shard: 3 of 8 samples
    assert mem[1].activations == round(whole[1].activations * 4 / 8)


def test_the_representative_is_an_upper_bound_when_replicas_sit_on_unequal_links() -> None:
    """The case hypothesis found: under bp the slow piece of boundary 0 (d0→d2) and that of boundary 1
    (d1→d3) lie on different replicas' chains, so SimPy adds one of them each way (2 × 1e-6 ms) and
    the one-representative recursion both (4 × 1e-6 ms)."""
    fast = {("d0", "d1"), ("d0", "d3"), ("d1", "d2"), ("d1", "d4"), ("d2", "d4")}
    names = [f"d{i}" for i in range(5)]
    links = tuple(Link(src=a, dst=b, bandwidth_gb_s=math.inf if (a, b) in fast else 0.5)
                  for i, a in enumerate(names) for b in names[i + 1:])
    sc = Scenario(name="mesh", devices=tuple(Device(name=n) for n in names), links=links)
    profile = make_profile([1.0] * 4, [1.0] * 4, [1, 1, 0, 0], [0] * 4, batch_size=BATCH)
    layout = Layout((("d0",), ("d1", "d2"), ("d3", "d4")))
    costs = costs_for_splits(profile, [[1, 2]], sc, layout=layout)
    r = simulate(profile, [1, 2], sc, "bp", layout=layout)
    assert r.iteration_ms == pytest.approx(5 + 2e-6, abs=1e-12)
    assert float(periods("bp", costs)[0]) == pytest.approx(5 + 4e-6, abs=1e-12)


def test_closed_form_bounds_simpy_with_a_bucket_per_latency() -> None:
    """Regression (a hypothesis case from CI): a stage of two replicas on a 2 ms link whose
    gradients fill two buckets runs three all-reduces (two buckets and the loss's). The closed
    form priced the gradients as one all-reduce of their sum (11.52 ms), below SimPy (14.52 ms);
    it now pays every bucket's latency, an upper bound again."""
    prof = make_profile([1.0] * 3, [1.0] * 3, param_bytes=[0, 1, 2**20], batch_size=BATCH)
    sc = mesh(2, [math.inf], [2000.0])
    layout = Layout((("d0", "d1"),))
    costs = costs_for_splits(prof, [[]], sc, layout=layout, allreduce="ring")
    assert [b for _, b in (costs.grad_buckets or ((),))[0]] == [2.0**20, 1.0]
    assert costs.allreduce_ms[0].tolist() == pytest.approx([12.0])  # 3 × 2·(2−1)·2 ms
    r = simulate(prof, [], sc, "ddg", layout=layout, allreduce="ring")
    a = float(periods("ddg", costs)[0])
    assert a >= r.iteration_ms * (1 - 1e-9)
    assert r.allreduce_ms == pytest.approx(costs.allreduce_ms[0].tolist())
