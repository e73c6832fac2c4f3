"""The CUDA paths that can be checked without a GPU: which device a rank takes, GPU counts checked before
any launch with one-line errors, and the NCCL groups' watchdog timeout."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from launch_helpers import write_plan

from ddgsim.compare.torch_pipelining import launch as launch_torch
from ddgsim.errors import UserError
from ddgsim.execute.comm import WINDOW, group_timeout
from ddgsim.execute.job import check_devices, stage_device
from ddgsim.plan.format import Plan
from ddgsim.plan.format import load as load_plan
from ddgsim.replicas import Layout


def _job(tmp_path: Path, devices: list[str], backend: str = "nccl") -> SimpleNamespace:
    path = tmp_path / "p.json"
    Plan.for_split(model="mlp", split=list(range(1, len(devices))), num_units=6, schedule="ddg", batch_size=16,
                   layout=Layout.pipeline(devices)).save(path)
    plan = load_plan(path)
    return SimpleNamespace(backend=backend, plan=plan, config=SimpleNamespace(plan=path),
                           world_size=len(devices), num_stages=len(devices), replicated=False)


def test_a_rank_takes_the_plans_cuda_device_or_its_local_rank(tmp_path: Path) -> None:
    named = _job(tmp_path, ["cuda:1", "cuda:0"])
    assert stage_device(named, 0, 0) == torch.device("cuda", 1)  # type: ignore[arg-type]
    assert stage_device(named, 1, 1) == torch.device("cuda", 0)  # type: ignore[arg-type]
    scenario_names = _job(tmp_path, ["dev0", "dev2"])
    assert stage_device(scenario_names, 1, 1) == torch.device("cuda", 1)  # type: ignore[arg-type]
    assert stage_device(_job(tmp_path, ["cuda:1", "cuda:0"], "gloo"), 0, 0) == torch.device("cpu")  # type: ignore[arg-type]


def test_gpus_are_counted_before_any_launch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_devices(_job(tmp_path, ["cuda:1", "cuda:0"]), 2)  # type: ignore[arg-type]
    with pytest.raises(UserError, match=r"puts a stage on cuda:3, but this node has 2 CUDA device\(s\)"):
        check_devices(_job(tmp_path, ["cuda:0", "cuda:3"]), 2)  # type: ignore[arg-type]
    with pytest.raises(UserError, match="plan has 3 stages but this node has 2 CUDA devices"):
        check_devices(_job(tmp_path, ["dev0", "dev1", "dev2"]), 3)  # type: ignore[arg-type]


@pytest.mark.skipif(torch.cuda.device_count() >= 2, reason="this machine has the GPUs")
def test_the_torch_runtime_and_validate_refuse_missing_gpus(tmp_path: Path) -> None:
    plan = write_plan(tmp_path / "p.json", "mlp", [3], "gpipe", micro=2)
    with pytest.raises(UserError, match=r"the plan has 2 stages but this machine has \d+ CUDA devices"):
        launch_torch(plan, 3, tmp_path / "m.json", device="cuda")
    from ddgsim.cli import main

    out = tmp_path / "v"
    assert main(["validate", "mlp", "--gpus", "1,2", "--device", "cuda", "--steps", "4", "--out", str(out)]) == 2
    assert not out.exists()


def test_nccl_groups_outlive_a_receive_posted_early() -> None:
    assert group_timeout(60, "gloo", 4) == timedelta(seconds=60)
    # a receive posted WINDOW messages ahead waits through every action until its use, each bounded by the timeout
    assert group_timeout(60, "nccl", 1) == timedelta(seconds=60 * (WINDOW + 1) * 5)
    assert group_timeout(60, "nccl", 4) > group_timeout(60, "nccl", 1)


def test_profile_takes_any_cuda_device_or_says_why_not(capsys: pytest.CaptureFixture[str]) -> None:
    """``profile --device`` accepts cpu, cuda and cuda:N; anything else, or a GPU this machine
    lacks, is one line and exit status 2 before anything is measured."""
    from ddgsim.cli import main
    from ddgsim.commands.profile import device_arg

    assert [device_arg(d) for d in ("cpu", "cuda", "cuda:3")] == ["cpu", "cuda", "cuda:3"]
    with pytest.raises(SystemExit) as bad:
        main(["profile", "mlp", "--device", "gpu0"])
    assert bad.value.code == 2
    assert "'gpu0' is not a device (accepted: cpu, cuda, cuda:N)" in capsys.readouterr().err
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert main(["profile", "mlp", "--device", f"cuda:{n}", "--no-cache"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--device cuda:{n}" in err


def test_cuda_event_timing_is_absent_on_cpu() -> None:
    """On CPU the compute timer records nothing and adds no keys to the report (the CUDA test checks it on a GPU)."""
    from ddgsim.execute.devtime import ComputeTimer

    t = ComputeTimer(torch.device("cpu"))
    t.stop(0, "F", t.start())
    assert t.pairs == [] and t.per_iteration([0]) is None
