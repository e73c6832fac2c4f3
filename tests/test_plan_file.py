"""The ddgsim-plan/1 format: round trip and named errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ddgsim.errors import UserError
from ddgsim.plan import format as plan_file
from ddgsim.plan.records import Prediction, ProfileRef


def _plan() -> plan_file.Plan:
    return plan_file.Plan(
        model="resnet20",
        batch_size=64,
        schedule="ddg",
        split=[5, 12],
        stages=[
            plan_file.StagePlacement(stage=0, device="gpu0", units=(0, 5), first="conv1", last="layer1.1"),
            plan_file.StagePlacement(stage=1, device="gpu1", units=(5, 12)),
            plan_file.StagePlacement(stage=2, device="gpu2", units=(12, 15)),
        ],
        scenario="ideal-3",
        predicted=Prediction(iteration_ms=12.5, staleness=(2, 1, 0)),
        profile_ref=ProfileRef(path="", model="resnet20", batch_size=64, device="cpu", threads=None, source="cache"),
    )


def test_round_trip(tmp_path: Path) -> None:
    p = _plan()
    p.save(tmp_path / "plan.json")
    assert plan_file.load(tmp_path / "plan.json") == p


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.update(format="x"), "format"),
        (lambda d: d.update(batch_size=0), "batch_size"),
        (lambda d: d.update(split=[12, 5]), "split"),
        (lambda d: d.update(micro_batches=-1), "micro_batches"),
        (lambda d: d["stages"].pop(), "stages"),
        (lambda d: d["stages"][1].update(units=[5, 11]), "stages[1].units"),
        (lambda d: d["stages"][0].update(device=""), "stages[0].device"),
        (lambda d: d.update(model=3), "model"),
    ],
)
def test_malformed_field_is_named(tmp_path: Path, mutate, field: str) -> None:
    data = _plan().to_json()
    mutate(data)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match=f"field '{field}'".replace("[", r"\[").replace("]", r"\]")):
        plan_file.load(path)


def test_unreadable_and_not_json(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot read plan"):
        plan_file.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(UserError, match="not JSON"):
        plan_file.load(tmp_path / "bad.json")
