"""Replica arithmetic (ddgsim.replicas) and replicated stages in plan files."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ddgsim.errors import UserError
from ddgsim.plan import format as plan_file
from ddgsim.plan.format import Plan
from ddgsim.predict.overheads import messages
from ddgsim.replicas import (
    Layout,
    check_batch,
    holder,
    largest_shard,
    piece_counts,
    pieces,
    shard,
    useful_replicas,
)


@given(st.integers(1, 60), st.data())
def test_pieces_cover_every_sample_once_from_its_holder_to_its_holder(n: int, data: st.DataObject) -> None:
    da = data.draw(st.integers(1, n), label="da")
    db = data.draw(st.integers(1, n), label="db")
    got = pieces(n, da, db)
    assert [p.lo for p in got] == sorted(p.lo for p in got)
    covered = [i for p in got for i in range(p.lo, p.hi)]
    assert covered == list(range(n))
    for p in got:
        a, b = shard(n, da, p.src)
        c, e = shard(n, db, p.dst)
        assert a <= p.lo < p.hi <= b and c <= p.lo and p.hi <= e
    # every (sender, receiver) pair whose shards overlap has exactly one piece
    overlapping = {(s, d) for s in range(da) for d in range(db)
                   if max(shard(n, da, s)[0], shard(n, db, d)[0]) < min(shard(n, da, s)[1], shard(n, db, d)[1])}
    assert sorted((p.src, p.dst) for p in got) == sorted(overlapping)
    if da == db:
        assert [(p.src, p.dst) for p in got] == [(r, r) for r in range(da)]
    recv = max(sum(1 for p in got if p.dst == r) for r in range(db))
    send = max(sum(1 for p in got if p.src == r) for r in range(da))
    assert piece_counts(n, da, db) == (recv, send)
    assert messages([da, db], n) == ([0, recv], [send, 0])


@given(st.integers(1, 200), st.data())
def test_shards_are_tensor_splits_sizes(n: int, data: st.DataObject) -> None:
    """Contiguous, in order, sizes ⌈n/D⌉ then ⌊n/D⌋ (torch.tensor_split's), the largest first."""
    import torch

    d = data.draw(st.integers(1, n), label="replicas")
    ranges = [shard(n, d, r) for r in range(d)]
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    sizes = [hi - lo for lo, hi in ranges]
    assert sizes == [len(t) for t in torch.arange(n).tensor_split(d)]
    assert max(sizes) == largest_shard(n, d) and max(sizes) - min(sizes) <= 1
    assert all(holder(n, d, i) == r for r, (lo, hi) in enumerate(ranges) for i in range(lo, hi))


@given(st.integers(1, 300), st.integers(1, 400))
def test_useful_replicas_are_the_fewest_for_each_largest_shard(n: int, most: int) -> None:
    got = useful_replicas(n, most)
    every = range(1, min(n, most) + 1)
    assert got[0] == 1 and set(got) <= set(every)
    # each count not tried has a tried one no larger with a largest shard no larger
    for d in every:
        assert any(g <= d and largest_shard(n, g) <= largest_shard(n, d) for g in got)
    sizes = [largest_shard(n, g) for g in got]
    assert sizes == sorted(set(sizes), reverse=True)


def test_shard_gives_the_first_replicas_the_extra_samples() -> None:
    assert shard(12, 3, 2) == (8, 12)
    assert [shard(10, 3, r) for r in range(3)] == [(0, 4), (4, 7), (7, 10)]
    with pytest.raises(ValueError, match="2 samples do not give each of 3 replicas a sample"):
        shard(2, 3, 0)


def test_check_batch_names_the_stage_and_a_batch_that_works() -> None:
    check_batch(32, 2, [2, 4])
    check_batch(30, 2, [4, 3])  # 15 samples per micro-batch: shards of 4, 4, 4, 3 and 5, 5, 5
    with pytest.raises(UserError, match=r"batch size 36 does not split into 5 equal micro-batches; use a multiple of 5"):
        check_batch(36, 5, [1])
    with pytest.raises(UserError, match=r"stage 1 has 20 replicas but a micro-batch has 18 samples \(batch size 36 / 2 "
                                        r"micro-batch\(es\)\); use at most 18 replicas or a batch of at least 40"):
        check_batch(36, 2, [2, 20])


@given(st.lists(st.integers(1, 4), min_size=1, max_size=5))
def test_ranks_are_stage_major_and_invertible(reps: list[int]) -> None:
    layout = Layout(tuple(tuple(f"d{k}.{r}" for r in range(d)) for k, d in enumerate(reps)))
    ranks = [layout.rank(k, r) for k, d in enumerate(reps) for r in range(d)]
    assert ranks == list(range(layout.world_size))
    assert [layout.place(i) for i in ranks] == [(k, r) for k, d in enumerate(reps) for r in range(d)]
    assert layout.flat == [f"d{k}.{r}" for k, d in enumerate(reps) for r in range(d)]


@given(st.lists(st.integers(1, 4), min_size=1, max_size=5), st.integers(0, 3))
def test_packed_gives_each_stage_the_next_devices_in_order(reps: list[int], spare: int) -> None:
    names = [f"d{i}" for i in range(sum(reps) + spare)]
    layout = Layout.packed(names, reps)
    assert layout.replicas == tuple(reps) and layout.flat == names[:sum(reps)]
    with pytest.raises(UserError, match=f"need {sum(reps)} devices, got {sum(reps) - 1}"):
        Layout.packed(names[:sum(reps) - 1], reps)


def test_a_device_cannot_hold_two_replicas() -> None:
    with pytest.raises(UserError, match="device 'a' is used by two replicas"):
        Layout((("a", "b"), ("a",)))


def test_plan_with_replicas_round_trips_and_a_pipeline_plan_is_unchanged(tmp_path) -> None:
    layout = Layout((("gpu0", "gpu1"), ("gpu2",)))
    plan = Plan.for_split(model="mlp", split=[2], num_units=4, schedule="ddg", batch_size=32, layout=layout,
                          allreduce="tree")
    path = tmp_path / "p.json"
    plan.save(path)
    data = json.loads(path.read_text())
    assert data["stages"][0]["replicas"] == ["gpu0", "gpu1"] and "replicas" not in data["stages"][1]
    back = plan_file.load(path)
    assert back.layout == layout and back.replicas == (2, 1) and back.world_size == 3 and back.allreduce == "tree"
    pipe = Plan.for_split(model="mlp", split=[2], num_units=4, schedule="ddg", batch_size=32)
    pipe_json = pipe.to_json()
    assert "allreduce" not in pipe_json and all("replicas" not in s for s in pipe_json["stages"])
    assert pipe.layout == Layout.pipeline(["cpu0", "cpu1"])


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["stages"][0].update(replicas=["gpu9", "gpu1"]), "field 'stages\\[0\\].replicas' must start with the stage's device 'gpu0'"),
    (lambda d: d.update(batch_size=1), "stage 0 has 2 replicas but a micro-batch has 1 sample "),
    (lambda d: d["stages"][1].update(device="gpu1"), "device 'gpu1' is used by two replicas"),
    (lambda d: d.update(allreduce="butterfly"), "field 'allreduce' must be one of 'ring', 'tree', got 'butterfly'"),
])
def test_malformed_replicas_are_refused_in_one_line(tmp_path, edit, message) -> None:
    layout = Layout((("gpu0", "gpu1"), ("gpu2",)))
    data = Plan.for_split(model="mlp", split=[2], num_units=4, schedule="ddg", batch_size=32, layout=layout).to_json()
    edit(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match=message) as info:
        plan_file.load(path)
    assert "\n" not in str(info.value)
