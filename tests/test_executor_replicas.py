"""Replicated stages (``ddgsim.replicas``): data parallel inside a stage × DDG pipeline across stages.

The distributed runner (real gloo processes, one per replica of every stage) against the
in-process engine, which sums each stage's gradients in replica order 0..D-1. For D = 2 the
all-reduce's sum a + b is the engine's bit for bit (IEEE addition is commutative), so those
runs are compared with ``torch.equal``. Each launch of 3-4 processes costs ~15 s on the
2-core dev machine, so every launch checks several things.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from launch_helpers import (
    assert_clean,
    assert_same,
    engine_weights,
    execute,
    execute_on_two_nodes,
    final_weights,
    preempted_run,
    write_plan,
)

from ddgsim.cli import main
from ddgsim.execute.checkpoint import step_dir
from ddgsim.execute.measure import load_metrics
from ddgsim.execute.options import parse_run_args
from ddgsim.execute.runner import run_inprocess_job


def engine_run(argv: list[str]):  # type: ignore[no-untyped-def]
    torch.set_num_threads(1)
    res, _job, _ds = run_inprocess_job(parse_run_args(argv))
    return res


@pytest.mark.slow
def test_k2_d2_equals_engine_and_replicas_agree(tmp_path: Path) -> None:
    """K = 2 × D = 2 (4 processes), ddg, digits: every stage's final weights are the engine's bit
    for bit, both replicas of a stage end with the same weights, the losses are the batch's
    (the engine's), metrics and trace have one row per process, checkpoints one file per process."""
    plan = write_plan(tmp_path / "p.json", "mlp", [2], "ddg", replicas=(2, 2))
    common = ["--steps", "10", "--data", "digits", "--seed", "2"]
    ck = tmp_path / "ck"
    r = execute(str(plan), *common, "--final-weights", str(tmp_path / "w"), "--metrics", str(tmp_path / "m.json"),
                "--trace", str(tmp_path / "t.json"), "--checkpoint-dir", str(ck), "--checkpoint-every", "4")
    assert r.returncode == 0, r.stderr
    assert_clean(r.stderr)
    assert r.stdout.count("ddg K=2 D=(2,2):") == 1
    ref = engine_run([str(plan), *common])
    assert_same(final_weights(tmp_path / "w", 2), ref.weights[-1])
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["stage-0.pt", "stage-1.pt"]
    for k in range(2):  # the engine's replicas, too, end identical
        assert_same(ref.replica_weights[k][1:], ref.replica_weights[k][:1])
    m = load_metrics(tmp_path / "m.json")  # validates against the schema
    assert m["replicas"] == [2, 2]
    rows = [(st["stage"], st["replica"], st["device"]) for st in m["per_stage"]]
    assert rows == [(0, 0, "cpu0"), (0, 1, "cpu1"), (1, 0, "cpu2"), (1, 1, "cpu3")]
    digests = [st["weights_sha256"] for st in m["per_stage"]]
    assert digests[0] == digests[1] and digests[2] == digests[3] and digests[0] != digests[2]
    assert all(len(st["step_ms"]) == 10 for st in m["per_stage"])
    assert m["losses"] == ref.losses  # the batch's mean loss: the shards' shares summed
    assert m["test_accuracy"] is not None and 0 <= m["test_accuracy"] <= 1
    assert len(m["summary"]["per_stage_median_ms"]["step_ms"]) == 2
    t = json.loads((tmp_path / "t.json").read_text())
    names = {e["args"]["name"] for e in t["traceEvents"] if e["ph"] == "M" and e["name"] == "thread_name"}
    assert {"cpu0->cpu2", "cpu1->cpu3", "cpu2->cpu0", "cpu3->cpu1"} <= names
    assert "cpu0->cpu3" not in names  # equal D: replica r talks to replica r only
    files = sorted(p.name for p in step_dir(ck, 8).iterdir())
    assert files == [f"stage-{k}-replica-{r}.pt" for k in range(2) for r in range(2)]


@pytest.mark.slow
def test_k2_d2_preempted_and_resumed_gives_the_same_weights(tmp_path: Path) -> None:
    """SIGTERM to the launcher (sent by rank 3, stage 1 replica 1): all four processes stop at one
    boundary and checkpoint there; the resumed run ends with the uninterrupted run's weights.
    A pure-pipeline plan cannot resume that checkpoint."""
    plan = write_plan(tmp_path / "p.json", "mlp", [2], "ddg", replicas=(2, 2))
    ck = tmp_path / "ck"
    common = ["--steps", "24", "--data", "digits", "--no-eval"]
    _, _, man = preempted_run(plan, common, ck, "3:4:term-launcher")
    assert man["preempted"] and 4 < man["step"] < 24 and man["job"]["replicas"] == [2, 2]
    assert len(list(step_dir(ck, man["step"]).iterdir())) == 4
    pure = write_plan(tmp_path / "pure.json", "mlp", [2], "ddg")
    bad = execute(str(pure), *common, "--resume", str(ck), timeout=60)
    assert bad.returncode == 2 and "replicas=[2, 2]" in bad.stderr, bad.stderr
    r = execute(str(plan), *common, "--resume", str(ck), "--final-weights", str(tmp_path / "w"))
    assert r.returncode == 0, r.stderr
    assert_clean(r.stderr)
    assert_same(final_weights(tmp_path / "w", 2), engine_weights([str(plan), *common]))


@pytest.mark.slow
def test_k2_d2_on_two_launchers(tmp_path: Path) -> None:
    """K = 2 × D = 2 across two launchers (``--nnodes 2``, two processes each): the engine's weights."""
    plan = write_plan(tmp_path / "p.json", "mlp", [2], "ddg", replicas=(2, 2))
    common = ["--steps", "8", "--data", "digits", "--seed", "1", "--no-eval"]
    outs = execute_on_two_nodes(plan, common, tmp_path / "w")
    assert sum("ddg K=2 D=(2,2):" in out for out in outs) == 1
    assert_same(final_weights(tmp_path / "w", 2), engine_weights([str(plan), *common]))


@pytest.mark.parametrize(("model", "split", "replicas", "schedule", "micro", "batch"), [
    ("smallcnn", [], (2,), "ddg", 1, 16),      # pure data parallel, BatchNorm statistics per replica
    ("mlp", [2], (2, 1), "gpipe", 2, 16),      # unequal D: re-sharded at the boundary, micro-batches
    ("mlp", [2], (1, 2), "ddg", 1, 15),        # 15 samples on 2 replicas: shards of 8 and 7
])
def test_data_parallel_and_resharding_equal_the_engine(tmp_path: Path, model: str, split: list[int],
                                                       replicas: tuple[int, ...], schedule: str, micro: int,
                                                       batch: int) -> None:
    plan = write_plan(tmp_path / "p.json", model, split, schedule, batch=batch, micro=micro, replicas=replicas)
    common = ["--steps", "6", "--data", "digits", "--seed", "4"]
    r = execute(str(plan), *common, "--final-weights", str(tmp_path / "w"), "--metrics", str(tmp_path / "m.json"))
    assert r.returncode == 0, r.stderr
    assert_clean(r.stderr)
    ref = engine_run([str(plan), *common])
    assert_same(final_weights(tmp_path / "w", len(replicas)), ref.weights[-1])
    m = load_metrics(tmp_path / "m.json")
    assert m["losses"] == ref.losses and m["test_accuracy"] is not None


@pytest.mark.slow
def test_three_replicas_agree_with_the_engine_to_rounding(tmp_path: Path) -> None:
    """K = 1 × D = 3 on a batch of 25 (shards of 9, 8 and 8 samples). With more than two replicas the
    all-reduce adds in its own order (gloo's ring: each rank's chunk is summed starting from a
    different replica), which rounds differently from the engine's (g0 + g1) + g2, so the weights
    agree to rounding, not bit for bit."""
    plan = write_plan(tmp_path / "p.json", "mlp", [], "ddg", batch=25, replicas=(3,))
    common = ["--steps", "6", "--data", "digits", "--no-eval"]
    r = execute(str(plan), *common, "--final-weights", str(tmp_path / "w"), "--metrics", str(tmp_path / "m.json"))
    assert r.returncode == 0, r.stderr
    assert_clean(r.stderr)
    (got,) = final_weights(tmp_path / "w", 1)
    (want,) = engine_weights([str(plan), *common])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    digests = {st["weights_sha256"] for st in load_metrics(tmp_path / "m.json")["per_stage"]}
    assert len(digests) == 1  # every replica applied the same summed gradient


@pytest.mark.parametrize(("schedule", "micro", "split", "replicas"), [
    ("ddg", 1, [2], (2, 2)), ("ddg", 1, [2], (2, 1)), ("ddg-pipelined", 1, [1, 3], (1, 4, 2)),
    ("gpipe", 2, [2], (1, 2)), ("1f1b", 2, [2, 4], (2, 1, 2)),
    # replica counts that do not divide the batch of 16: shards a sample apart (6, 5, 5; 3, 3, 2; ...)
    ("ddg", 1, [2], (3, 2)), ("ddg-pipelined", 1, [1, 3], (5, 1, 3)), ("gpipe", 2, [2], (3, 1)),
    ("1f1b", 2, [2, 4], (1, 3, 5)),
])
def test_engine_replicated_mlp_matches_unreplicated(tmp_path: Path, schedule: str, micro: int, split: list[int],
                                                    replicas: tuple[int, ...]) -> None:
    """Without BatchNorm a replicated run computes the unreplicated run's math (shards' losses scaled
    by their share of the batch, gradients summed, batches re-sharded at the boundaries) in another
    summation order: the same weights and losses to float tolerance, with shards of unequal size too."""
    common = ["--steps", "8", "--data", "digits", "--seed", "5"]
    plain = write_plan(tmp_path / "a.json", "mlp", split, schedule, micro=micro)
    repl = write_plan(tmp_path / "b.json", "mlp", split, schedule, micro=micro, replicas=replicas)
    a, b = engine_run([str(plain), *common]), engine_run([str(repl), *common])
    for x, y in zip(a.weights[-1], b.weights[-1], strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
        assert not torch.equal(x, a.weights[0][0]) or x.numel() == 0
    torch.testing.assert_close(torch.tensor(a.losses), torch.tensor(b.losses), rtol=1e-5, atol=1e-6)
    for k, d in enumerate(replicas):
        assert len(b.replica_weights[k]) == d
        assert_same(b.replica_weights[k], [b.replica_weights[k][0]] * d)


def test_a_batch_that_does_not_shard_is_one_line(tmp_path: Path) -> None:
    plan = write_plan(tmp_path / "p.json", "mlp", [2], "ddg", micro=1, replicas=(2, 2))
    data = json.loads(plan.read_text())
    data["batch_size"] = 1
    plan.write_text(json.dumps(data))
    r = execute(str(plan), "--steps", "3", "--data", "digits", timeout=60)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: malformed plan"), r.stderr
    assert "stage 0 has 2 replicas but a micro-batch has 1 sample" in lines[0] and "batch of at least 2" in lines[0]


def test_processes_that_do_not_spread_over_the_nodes_are_one_line(tmp_path: Path) -> None:
    plan = write_plan(tmp_path / "p.json", "mlp", [2], "ddg", replicas=(2, 1))
    r = execute(str(plan), "--steps", "3", "--nnodes", "2", "--rdzv-endpoint", "localhost:29999", timeout=60)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "3 processes" in lines[0] and "--nnodes 2" in lines[0], r.stderr


def test_more_processes_than_cuda_devices_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """NCCL needs a GPU per process: 2 × 2 replicas on a node with 2 GPUs is refused before any start."""
    plan = write_plan(tmp_path / "p.json", "mlp", [2], "ddg", replicas=(2, 2))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    code = main(["execute", str(plan), "--steps", "3", "--backend", "nccl", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "plan has 4 processes (replicas 2+2) but this node has 2 CUDA devices" in err
