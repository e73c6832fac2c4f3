"""The distributed runner (real processes, gloo, launched by ``ddgsim execute``) computes the engine's result.

Each launch costs ~10 s on the 2-core dev machine (torch import in K+1 processes),
so every launch checks several things.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
from launch_helpers import (
    assert_clean,
    assert_same,
    engine_weights,
    execute,
    final_weights,
    write_plan,
)

from ddgsim.schedule import make_schedule
from ddgsim.trace import load_trace


def test_k2_ddg_equals_pipelined_and_engine_and_writes_metrics(tmp_path: Path) -> None:
    common = ["--steps", "12", "--data", "digits", "--seed", "3"]
    runs = {}
    for sched in ("ddg", "ddg-pipelined"):
        plan = write_plan(tmp_path / f"{sched}.json", "mlp", [2], sched)
        out = tmp_path / sched
        extra = ["--metrics", str(tmp_path / "m.json"), "--trace", str(tmp_path / "t.json")] if sched == "ddg" else []
        r = execute(str(plan), *common, "--final-weights", str(out), *extra)
        assert r.returncode == 0, r.stderr
        assert_clean(r.stderr)
        runs[sched] = final_weights(out, 2)
    assert_same(runs["ddg"], runs["ddg-pipelined"])
    assert_same(runs["ddg"], engine_weights([str(tmp_path / "ddg.json"), *common]))
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["format"] == "ddgsim-metrics/1" and len(m["per_stage"]) == 2
    for st in m["per_stage"]:
        for key in ("step_ms", "forward_ms", "backward_ms", "update_ms", "wait_ms", "comm_ms"):
            assert len(st[key]) == 12
    assert m["summary"]["samples_per_s"] > 0 and 0 <= m["test_accuracy"] <= 1
    assert len(m["losses"]) == 12 and all(isinstance(v, float) for v in m["losses"])
    t = json.loads((tmp_path / "t.json").read_text())
    names = {e["args"]["name"] for e in t["traceEvents"] if e["ph"] == "M" and e["name"] == "thread_name"}
    assert {"cpu0", "cpu1", "cpu0->cpu1", "cpu1->cpu0"} <= names
    assert any(e["ph"] == "X" and e["name"] == "0F0" for e in t["traceEvents"])


@pytest.mark.slow
def test_k1_distributed_equals_plain_sgd(tmp_path: Path) -> None:
    """K = 1 DDG through the launcher = a plain ``loss.backward(); opt.step()`` loop, bit for bit."""
    from ddgsim.execute.data import load_digits
    from ddgsim.models.registry import build_model, get_spec

    plan = write_plan(tmp_path / "p.json", "mlp", [], "ddg")
    r = execute(str(plan), "--steps", "8", "--data", "digits", "--final-weights", str(tmp_path / "w"))
    assert r.returncode == 0, r.stderr
    torch.set_num_threads(1)
    model = build_model(get_spec("mlp"), seed=0)
    ds = load_digits(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    for t in range(8):
        x, y = ds.batch(t, 16)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    ref = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    assert torch.equal(final_weights(tmp_path / "w", 1)[0], ref)


def test_k3_checkpoint_resume_is_bit_identical(tmp_path: Path) -> None:
    """K = 3 smallcnn (BatchNorm): checkpointed run = engine; resume from step 8 = uninterrupted."""
    plan = write_plan(tmp_path / "p.json", "smallcnn", [3, 6], "ddg-pipelined")
    common = ["--steps", "11", "--data", "digits", "--no-eval"]
    ck = tmp_path / "ck"
    r = execute(str(plan), *common, "--checkpoint-dir", str(ck), "--checkpoint-every", "4",
                "--final-weights", str(tmp_path / "a"))
    assert r.returncode == 0, r.stderr
    assert_clean(r.stderr)
    assert json.loads((ck / "manifest.json").read_text())["step"] == 8
    assert sorted(p.name for p in ck.iterdir()) == ["manifest.json", "step-00000008"]
    a = final_weights(tmp_path / "a", 3)
    assert_same(a, engine_weights([str(plan), *common]))
    r = execute(str(plan), *common, "--resume", str(ck), "--final-weights", str(tmp_path / "b"))
    assert r.returncode == 0, r.stderr
    assert_same(a, final_weights(tmp_path / "b", 3))


@pytest.mark.slow
def test_killed_stage_restarts_and_resumes_bit_identically(tmp_path: Path) -> None:
    """SIGKILL stage 1 at step 6; --max-restarts 1 relaunches, resumes from step 4, same final weights."""
    plan = write_plan(tmp_path / "p.json", "mlp", [2, 4], "ddg")
    common = ["--steps", "9", "--data", "digits", "--no-eval", "--checkpoint-dir", str(tmp_path / "ck"),
              "--checkpoint-every", "4"]
    r = execute(str(plan), *common, "--max-restarts", "1", "--final-weights", str(tmp_path / "a"),
                env={"DDGSIM_FAULT": "1:6"})
    assert r.returncode == 0, r.stderr
    assert_same(final_weights(tmp_path / "a", 3), engine_weights([str(plan), *common]))


def test_killed_stage_without_restarts_fails_fast(tmp_path: Path) -> None:
    """Stage 0 is SIGKILLed: stage 1 notices the closed connection at once (not by waiting out
    --timeout-s, which would say "sent nothing for 300 s"), and the job fails naming stage 0."""
    plan = write_plan(tmp_path / "p.json", "mlp", [2], "ddg")
    r = execute(str(plan), "--steps", "50", "--data", "digits", "--timeout-s", "300",
                env={"DDGSIM_FAULT": "0:3"}, timeout=240)
    assert r.returncode == 1
    assert "error: stage 0 failed" in r.stderr and f"exit code -{int(signal.SIGKILL)}" in r.stderr
    assert "error: stage 1: lost contact with stage 0" in r.stderr, r.stderr
    assert "sent nothing" not in r.stderr


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path: Path) -> None:
    plan = write_plan(tmp_path / "p.json", "mlp", [2], "ddg")
    ck = tmp_path / "ck"
    r = execute(str(plan), "--steps", "40", "--data", "digits", "--lr", "1e12", "--momentum", "0",
                "--checkpoint-dir", str(ck), "--checkpoint-every", "1")
    assert r.returncode == 1
    assert "non-finite loss" in r.stderr
    good = json.loads((ck / "manifest.json").read_text())["step"]
    assert f"last good checkpoint: step {good}" in r.stderr


def stage_sequences(trace: Path) -> dict[str, list[tuple[str, float]]]:
    """Each device row's compute events, in the order the stage recorded them: (name, start µs)."""
    events = load_trace(trace)["traceEvents"]
    rows = {e["tid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    out: dict[str, list[tuple[str, float]]] = {}
    for e in events:
        if e["ph"] == "X" and e["cat"] != "link":
            out.setdefault(rows[e["tid"]], []).append((e["name"], e["ts"]))
    return out


@pytest.mark.parametrize(("schedule", "micro"), [("bp", 1), ("ddg", 1), ("gpipe", 2), ("1f1b", 2)])
def test_distributed_trace_runs_exactly_the_schedule(tmp_path: Path, schedule: str, micro: int) -> None:
    """Every stage process runs exactly ``actions[k]`` of the schedule, in that order, and ends
    with the engine's weights: the runner's receives and sends are the schedule's needs/delivered."""
    steps = 5
    plan = write_plan(tmp_path / "p.json", "mlp", [2, 4], schedule, micro=micro)
    common = ["--steps", str(steps), "--data", "digits", "--seed", "1", "--no-eval"]
    r = execute(str(plan), *common, "--trace", str(tmp_path / "t.json"), "--final-weights", str(tmp_path / "w"))
    assert r.returncode == 0, r.stderr
    assert_clean(r.stderr)
    seqs = stage_sequences(tmp_path / "t.json")
    sched = make_schedule(schedule, 3, steps, micro)
    for k, acts in enumerate(sched.actions):
        names = [n for n, _ in seqs[f"cpu{k}"]]
        assert names == [repr(a) for a in acts], f"stage {k}"
        starts = [ts for _, ts in seqs[f"cpu{k}"]]
        assert starts == sorted(starts)
    assert_same(final_weights(tmp_path / "w", 3), engine_weights([str(plan), *common]))
