"""Replica arithmetic (ddgsim.replicas) and replicated stages in plan files."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ddgsim.errors import UserError
from ddgsim.plan import format as plan_file
from ddgsim.plan.format import Plan
from ddgsim.replicas import Layout, check_batch, pieces, shard


@given(st.integers(1, 8), st.integers(1, 8), st.integers(1, 6))
def test_pieces_cover_every_sample_once_from_its_holder_to_its_holder(da: int, db: int, mult: int) -> None:
    import math

    n = math.lcm(da, db) * mult
    got = pieces(n, da, db)
    assert [p.lo for p in got] == sorted(p.lo for p in got)
    covered = [i for p in got for i in range(p.lo, p.hi)]
    assert covered == list(range(n))
    for p in got:
        a, b = shard(n, da, p.src)
        c, e = shard(n, db, p.dst)
        assert a <= p.lo < p.hi <= b and c <= p.lo and p.hi <= e
    if da == db:
        assert [(p.src, p.dst) for p in got] == [(r, r) for r in range(da)]


def test_shard_refuses_uneven_splits() -> None:
    assert shard(12, 3, 2) == (8, 12)
    with pytest.raises(ValueError, match="equal shards"):
        shard(10, 3, 0)


def test_check_batch_names_the_stage_and_a_batch_that_works() -> None:
    check_batch(32, 2, [2, 4])
    with pytest.raises(UserError, match=r"batch size 36 does not split into 2 micro-batch\(es\) × 4 replicas of stage 1; use a multiple of 8"):
        check_batch(36, 2, [2, 4])


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
    (lambda d: d.update(batch_size=31), "batch size 31 does not split into 1 micro-batch\\(es\\) × 2 replicas of stage 0"),
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
