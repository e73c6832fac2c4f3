"""The memory model counts each tensor once: boundary tensors two units save, the received
input, the receive window and the sends — and the planner's tables use the same model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sim_helpers import chain, make_profile
from test_mixed import memory_profiles

from ddgsim.models.registry import build_model, get_spec
from ddgsim.plan import band
from ddgsim.predict.memory import message_buffers, stage_memory, unit_bytes
from ddgsim.profile.isolated import saved_tensors, state_ptrs
from ddgsim.profile.measure import profile_model
from ddgsim.profile.units import split_units
from ddgsim.replicas import Layout
from ddgsim.schedule import RECEIVE_WINDOW, Steady


def test_a_boundary_tensor_two_units_save_counts_once() -> None:
    """Unit 0 saves its output (a ReLU), unit 1 saves that as its input (a convolution): a stage
    holding both keeps one tensor of 100 bytes, a stage starting at unit 1 keeps its own copy."""
    p = make_profile([1] * 3, [1] * 3, output_bytes=[100, 50, 10], activation_bytes=[300, 180, 70],
                     saved_input=[0, 100, 0], saved_output=[100, 0, 10])
    ub = unit_bytes(p)
    assert ub.own == [300, 80, 70]
    assert ub.entry == [0, 100, 50]  # unit 1 saves its input; unit 2 does not: the executor holds it
    both = stage_memory(p, [(0, 2), (2, 3)], Steady("bp"))
    assert both[0].activations == 300 + 180 - 100
    assert both[1].activations == 70 + 50
    apart = stage_memory(p, [(0, 1), (1, 3)], Steady("bp"))
    assert apart[1].activations == 180 + 70
    # the sent activation of unit 0 is saved (not extra); unit 1's is not
    assert apart[0].buffers == RECEIVE_WINDOW * 100
    assert both[0].buffers == RECEIVE_WINDOW * 50 + 50


def test_unknown_fields_never_under_count() -> None:
    """Without the saved-input/output fields (older profiles) every boundary counts fully."""
    known = make_profile([1] * 3, [1] * 3, output_bytes=[100, 50, 10], activation_bytes=[300, 180, 70],
                         saved_input=[0, 100, 50], saved_output=[100, 50, 0])
    unknown = make_profile([1] * 3, [1] * 3, output_bytes=[100, 50, 10], activation_bytes=[300, 180, 70])
    for ranges in ([(0, 3)], [(0, 1), (1, 3)], [(0, 1), (1, 2), (2, 3)]):
        for a, b in zip(stage_memory(known, ranges, Steady("ddg")), stage_memory(unknown, ranges, Steady("ddg")),
                        strict=True):
            assert a.total <= b.total


def test_message_buffers() -> None:
    assert message_buffers(10, 0, 0) == (RECEIVE_WINDOW + 1) * 10
    assert message_buffers(0, 10, 4) == RECEIVE_WINDOW * 10 + 4


@pytest.mark.parametrize("model,cuts", [("resnet20", [(0, 5), (5, 8), (8, 15), (3, 12)]), ("mlp", [(0, 3), (1, 4)])])
def test_the_rows_add_up_to_what_a_stage_saves(model: str, cuts: list[tuple[int, int]]) -> None:
    """Real units run in sequence under saved-tensor hooks: the storages a stage [u, v) saves,
    each once, are the sum of its rows' ``own`` bytes plus what it saves of its input — what the
    profiler's new fields say, checked against the whole stage (no timing: one counting pass)."""
    spec = get_spec(model)
    net = build_model(spec).train()
    batch = 4
    prof = profile_model(net, name=model, batch_size=batch, io=spec.io, reps=1, warmup=0, progress=False)
    ub = unit_bytes(prof)
    units = split_units(net, spec.io, batch_size=2)
    x0 = spec.io.example_input(batch, torch.Generator().manual_seed(0))
    for u, v in cuts:
        x = x0
        with torch.no_grad():
            for unit in units[:u]:
                x = unit.module(x)
        saved: dict[int, int] = {}
        x = x.detach().requires_grad_(u > 0)
        exclude = set().union(*(state_ptrs(unit.module) for unit in units[u:v]))
        with saved_tensors(exclude, saved):
            for unit in units[u:v]:
                x = unit.module(x)
        held_input = ub.entry[u] - (ub.message[u] - (prof.units[u].saved_input_bytes or 0)) if u else 0
        assert sum(saved.values()) == sum(ub.own[u:v]) + held_input, (u, v)


@st.composite
def band_cases(draw: st.DrawFn):
    n = draw(st.integers(1, 6))
    profile = draw(memory_profiles(n, 1000, 300, draw(st.lists(st.integers(0, 500), min_size=n, max_size=n))))
    K = draw(st.integers(1, n))
    name = draw(st.sampled_from(["bp", "ddg", "ddg-pipelined", "gpipe", "1f1b"]))
    M = draw(st.sampled_from([1, 2, 4])) if name in ("gpipe", "1f1b") else 1
    return profile, K, name, M


@settings(max_examples=120, deadline=None)
@given(band_cases())
def test_the_planner_tables_use_the_same_model(case) -> None:
    """Every stage [u, v) of the band tables overflows by stage_memory's total less the limit."""
    profile, K, name, M = case
    sched = Steady(name, M)
    sc = chain(K, memory_gib=1.0)
    layout = Layout(tuple((d.name,) for d in sc.devices[:K]))
    T = band.tables(profile, sc, layout, sched, None, 10.0, 1, "ring")
    limit = sc.memory_limit([sc.devices[0].name])
    n = profile.num_units
    for k in range(K):
        for u in range(n):
            for v in range(u + 1, n + 1):
                want = stage_memory(profile, [(u, v)] * K, sched)[k].total
                assert T.overflow[k][u, v - u - 1] + limit == pytest.approx(want, abs=1.0), (k, u, v)
    assert np.isfinite(T.overflow[0]).any()
