"""``python -m ddgsim simulate``: JSON and table output, traces, plans, and clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sim_helpers import make_profile

from ddgsim.cli import main


@pytest.fixture
def profile_file(tmp_path: Path) -> str:
    prof = make_profile([1.0] * 10, [2.0] * 10, output_bytes=[10**6] * 10, param_bytes=[1000] * 10,
                        activation_bytes=[10**5] * 10)
    path = tmp_path / "prof.json"
    prof.save(path)
    return str(path)


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["simulate", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_even_split_and_fields(capsys: pytest.CaptureFixture[str], profile_file: str) -> None:
    out = run_json(capsys, "--profile", profile_file, "--gpus", "4")
    assert out["split"] == [3, 6, 9]  # ceil(10/4) = 3 units per stage
    assert out["scenario"] == "ideal-4" and out["scenario_assumed"] is True
    assert out["schedule"] == "ddg-pipelined"  # the same default as plan
    for key in ("iteration_ms", "samples_per_s", "speedup_vs_1_device", "speedup_vs_bp", "staleness",
                "peak_memory_bytes", "busy_ms", "bubble_fraction", "links"):
        assert key in out
    assert out["staleness"] == [3, 2, 1, 0]
    # Stage 0 holds 3 units of 1 + 2 ms each (plus a tiny update).
    assert out["busy_ms"][0] == pytest.approx(9.0, rel=1e-3)
    assert out["speedup_vs_bp"] >= 1.0


def test_split_schedule_scenario_options(capsys: pytest.CaptureFixture[str], profile_file: str) -> None:
    out = run_json(capsys, "--profile", profile_file, "--split", "5", "--schedule", "1f1b",
                   "--micro-batches", "4", "--scenario", "pcie-4gpu", "--iterations", "12")
    assert (out["split"], out["micro_batches"], out["iterations"]) == ([5], 4, 12)
    assert out["devices"] == ["gpu0", "gpu1"] and out["scenario_assumed"] is False
    assert [(x["src"], x["dst"]) for x in out["links"]] == [("gpu0", "gpu1"), ("gpu1", "gpu0")]
    out = run_json(capsys, "--profile", profile_file, "--split", "5", "--scenario", "pcie-4gpu",
                   "--devices", "gpu3,gpu1")
    assert out["devices"] == ["gpu3", "gpu1"]


def test_human_table_and_trace(capsys: pytest.CaptureFixture[str], profile_file: str, tmp_path: Path) -> None:
    trace = tmp_path / "t.json"
    assert main(["simulate", "--profile", profile_file, "--gpus", "2", "--trace", str(trace)]) == 0
    text = capsys.readouterr().out
    assert "ideal-2" in text and "assumed" in text and "speedup vs 1 device" in text
    data = json.loads(trace.read_text())
    names = {e["args"]["name"] for e in data["traceEvents"] if e["ph"] == "M" and e["name"] == "thread_name"}
    assert names == {"dev0", "dev1", "dev0->dev1", "dev1->dev0"}
    xs = [e for e in data["traceEvents"] if e["ph"] == "X"]
    assert xs and all(e["dur"] >= 0 and e["ts"] >= 0 for e in xs)
    first = next(e for e in xs if e["name"] == "0F0")
    assert (first["ts"], first["dur"]) == (0, 5000.0)  # 5 units x 1 ms forward, in µs


def test_plan_file(capsys: pytest.CaptureFixture[str], profile_file: str, tmp_path: Path) -> None:
    plan = {"format": "ddgsim-plan/1", "model": "synthetic", "batch_size": 8,
            "profile": {"path": profile_file}, "scenario": "pcie-4gpu", "schedule": "ddg-pipelined",
            "micro_batches": 1, "split": [4, 7],
            "stages": [{"stage": 0, "device": "gpu1", "units": [0, 4]}, {"stage": 1, "device": "gpu2", "units": [4, 7]},
                       {"stage": 2, "device": "gpu3", "units": [7, 10]}]}
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    out = run_json(capsys, "--plan", str(path))
    assert (out["split"], out["schedule"], out["devices"]) == ([4, 7], "ddg-pipelined", ["gpu1", "gpu2", "gpu3"])
    # A plan for another model is refused.
    code = main(["simulate", "resnet56", "--plan", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and "is for model 'synthetic', not 'resnet56'" in err
    # So is another batch size (the plan's profile, split and shards are for its own).
    code = main(["simulate", "--plan", str(path), "--batch-size", "16"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--batch-size 16 but plan" in err and "is for batch 8" in err
    assert run_json(capsys, "--plan", str(path), "--batch-size", "8")["split"] == [4, 7]


def test_bundled_model(capsys: pytest.CaptureFixture[str]) -> None:
    from ddgsim.profile.store import find_profile

    if find_profile("resnet110", 128) is None:
        pytest.skip("bundled resnet110 profile not present")
    out = run_json(capsys, "resnet110", "--gpus", "4", "--scenario", "pcie-4gpu")
    assert out["split"] == [15, 30, 45] and out["staleness"] == [3, 2, 1, 0]


@pytest.mark.parametrize(("args", "message"), [
    (["--gpus", "3", "--split", "6,2"], "must be strictly increasing"),
    (["--gpus", "2", "--split", "10"], "entry 10 is out of range"),
    (["--gpus", "3", "--split", "4"], "has 1 cut\\(s\\); 3 stages need 2"),
    (["--split", "a,b"], "comma-separated unit indices"),
    (["--gpus", "11"], "more stages than the 10 units"),
    (["--gpus", "5", "--scenario", "pcie-4gpu"], "needs 5 devices but scenario 'pcie-4gpu' has 4"),
    (["--gpus", "2", "--schedule", "nope"], "unknown schedule 'nope'"),
    (["--gpus", "2", "--scenario", "nope"], "unknown scenario 'nope'"),
    (["--gpus", "2", "--iterations", "5"], "--iterations must be >= 6"),
    (["--gpus", "2", "--micro-batches", "0"], "--micro-batches must be > 0"),
    (["--gpus", "2", "--micro-batches", "-2", "--schedule", "gpipe"], "--micro-batches must be > 0"),
    (["--gpus", "0"], "--gpus must be > 0"),
    (["--gpus", "2", "--devices", "dev0,dev0"], "used by two stages"),
    ([], "give --gpus K or --split CUTS"),
])
def test_errors(capsys: pytest.CaptureFixture[str], profile_file: str, tmp_path: Path, args: list[str], message: str) -> None:
    trace = tmp_path / "t.json"
    assert main(["simulate", "--profile", profile_file, *args, "--trace", str(trace)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert pytest.importorskip("re").search(message, err), err
    assert not trace.exists()  # nothing half-written


def test_scenario_file_errors(capsys: pytest.CaptureFixture[str], profile_file: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[devices]]\nname = "a"\n[[devices]]\nname = "b"\n')
    assert main(["simulate", "--profile", profile_file, "--gpus", "2", "--scenario", str(bad)]) == 2
    assert "disconnected: no route from 'a' to 'b'" in capsys.readouterr().err
    bad.write_text('[[devices]]\nname = "a"\nspeed = 0\n')
    assert main(["simulate", "--profile", profile_file, "--gpus", "1", "--scenario", str(bad)]) == 2
    assert "field 'speed' of device 'a'" in capsys.readouterr().err


def test_missing_inputs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["simulate", "--gpus", "2"]) == 2
    assert "give a MODEL, --profile FILE or --plan PLAN" in capsys.readouterr().err
    assert main(["simulate", "no-such-model", "--gpus", "2"]) == 2
    assert "no bundled or cached profile for model 'no-such-model'" in capsys.readouterr().err
    (tmp_path / "p.json").write_text("{}")
    assert main(["simulate", "--plan", str(tmp_path / "p.json")]) == 2
    assert "field 'format' is missing" in capsys.readouterr().err
    (tmp_path / "p.json").write_text('{"format": "ddgsim-plan/0"}')
    assert main(["simulate", "--plan", str(tmp_path / "p.json")]) == 2
    assert "field 'format' must be 'ddgsim-plan/1', got 'ddgsim-plan/0'" in capsys.readouterr().err


def test_add_parser_does_not_import_torch() -> None:
    code = ("import argparse, sys; from ddgsim.commands import simulate; p = argparse.ArgumentParser(); "
            "simulate.add_parser(p.add_subparsers()); assert 'torch' not in sys.modules, 'torch imported'; "
            "assert 'simpy' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)
