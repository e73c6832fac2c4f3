"""On CUDA (skipped without): K = 1 execute with a checkpoint and a bit-identical resume, peak memory
measured by the caching allocator, and two real NCCL ranks exchanging activations and gradients on their
per-direction groups (skipped with fewer than two GPUs). ``benchmarks/gpu_acceptance.sh`` runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from launch_helpers import assert_clean, assert_same, execute, final_weights, write_plan

pytestmark = pytest.mark.cuda

two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")


def test_k1_on_cuda_resumes_bit_identically_and_measures_its_memory(tmp_path: Path) -> None:
    plan = write_plan(tmp_path / "p.json", "mlp", [], "bp")
    common = ["--steps", "8", "--data", "digits", "--seed", "3", "--backend", "nccl"]
    whole = execute(str(plan), *common, "--final-weights", str(tmp_path / "a"), "--metrics", str(tmp_path / "m.json"))
    assert whole.returncode == 0, whole.stderr
    assert_clean(whole.stderr)
    stage = json.loads((tmp_path / "m.json").read_text())["per_stage"][0]
    assert stage["peak_memory_bytes"] > 0 and "max_memory_allocated" in stage["memory_method"]
    for key, host in (("device_forward_ms", "forward_ms"), ("device_backward_ms", "backward_ms")):
        # the GPU's own compute (CUDA events) exists for every iteration and is within the host's figure
        assert len(stage[key]) == len(stage[host]) and all(0 < d <= h * 1.05 + 0.05
                                                            for d, h in zip(stage[key], stage[host], strict=True))
    ck = tmp_path / "ck"
    first = execute(str(plan), *common[:1], "4", *common[2:], "--checkpoint-dir", str(ck), "--checkpoint-every", "4")
    assert first.returncode == 0, first.stderr
    again = execute(str(plan), *common, "--resume", str(ck), "--final-weights", str(tmp_path / "b"))
    assert again.returncode == 0, again.stderr
    assert_same(final_weights(tmp_path / "b", 1), final_weights(tmp_path / "a", 1))


@two_gpus
@pytest.mark.parametrize("schedule,micro", [("ddg-pipelined", 1), ("ddg", 1), ("gpipe", 2), ("1f1b", 2)])
def test_two_nccl_ranks_run_every_schedule(schedule: str, micro: int, tmp_path: Path) -> None:
    """Receives posted early, sends on their own stream, one group per direction: no hang, the run ends."""
    plan = write_plan(tmp_path / "p.json", "mlp", [3], schedule, micro=micro)
    r = execute(str(plan), "--steps", "6", "--data", "digits", "--backend", "nccl", "--metrics", str(tmp_path / "m.json"),
                timeout=300)
    assert r.returncode == 0, r.stderr
    assert_clean(r.stderr)
    per_stage = json.loads((tmp_path / "m.json").read_text())["per_stage"]
    assert [s["stage"] for s in per_stage] == [0, 1] and all(s["peak_memory_bytes"] > 0 for s in per_stage)
