"""Run a plan's split under PyTorch's own pipeline runtime, ``torch.distributed.pipelining``.

An independent check on the predictions: the same stage modules (:mod:`ddgsim.plan.export`),
the same batch, micro-batches and optimizer as the ddgsim executor, but PyTorch's
``ScheduleGPipe`` or ``Schedule1F1B`` deciding what runs when and moving the tensors.
One process per stage, started by PyTorch's elastic launcher (as ``torchrun`` would),
gloo on CPU or NCCL on CUDA, synthetic data. Each rank records when each of its steps
(``schedule.step`` and the optimizer step) ended; the metrics file has the executor's
``per_stage`` layout, so :func:`ddgsim.execute.measure.step_times` reads both alike.

    python -m ddgsim.compare.torch_pipelining PLAN --steps 12 --metrics m.json   # launcher
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from ddgsim.errors import DdgsimError, UserError, command_line_message, flag_names
from ddgsim.schedule import ScheduleKind

RUNTIME = "torch.distributed.pipelining"
"""The metrics' ``runtime`` of these runs."""
SCHEDULES: dict[str, str] = {ScheduleKind.GPIPE: "ScheduleGPipe", ScheduleKind.ONE_F_ONE_B: "Schedule1F1B"}
"""ddgsim schedule name -> the torch.distributed.pipelining schedule class that runs it."""


def check_plan(plan: Any, device: str = "cpu") -> None:
    if device == "cuda":
        import torch

        have = torch.cuda.device_count()
        if have < plan.num_stages:
            raise UserError(f"the plan has {plan.num_stages} stages but this machine has {have} CUDA devices "
                            "(torch.distributed.pipelining runs one stage per GPU)")
    if plan.schedule not in SCHEDULES:
        raise UserError(f"torch.distributed.pipelining runs {', '.join(SCHEDULES)}, not '{plan.schedule}'")
    if plan.num_stages < 2:
        raise UserError("torch.distributed.pipelining needs at least 2 stages")
    if plan.batch_size % plan.micro_batches:
        raise UserError(f"batch {plan.batch_size} does not split into {plan.micro_batches} micro-batches")


def launch(plan_path: Path, steps: int, metrics: Path, threads: int = 1, device: str = "cpu",
           log_dir: Path | None = None) -> int:
    """Run the plan for ``steps`` iterations, one process per stage; 0 when the metrics are written.

    :class:`~ddgsim.execute.childlog.LaunchFailed` naming the failing stage, its first error line and
    its log (in ``log_dir``, else a temporary folder removed after a run without failures).
    """
    from ddgsim.plan.format import load

    plan = load(plan_path)
    check_plan(plan, device)
    from ddgsim.plan.export import stage_modules

    stage_modules(plan)  # a plan that does not fit the model fails here, before any process starts
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from ddgsim.execute.childlog import LaunchFailed, explain
    from ddgsim.execute.launch import child_logs, worker_environment

    worker_environment(threads)  # as the executor's stage processes
    logs, own_logs = child_logs(log_dir)
    metrics.unlink(missing_ok=True)
    parts = [metrics.with_name(f"{metrics.name}.rank{k}") for k in range(plan.num_stages)]
    for p in parts:
        p.unlink(missing_ok=True)
    cfg = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=plan.num_stages, run_id=f"ddgsim-pp-{os.getpid()}",
                       rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1,
                       start_method="spawn")
    try:
        elastic_launch(cfg, sys.executable)("-u", "-m", "ddgsim.compare.torch_pipelining", "--worker",
                                            str(plan_path), "--steps", str(steps), "--threads", str(threads),
                                            "--device", device, "--metrics", str(metrics))
    except ChildFailedError as exc:
        raise LaunchFailed(f"torch.distributed.pipelining {explain(exc.failures, logs).describe('stage')}") from None
    if own_logs:
        import shutil

        shutil.rmtree(logs, ignore_errors=True)
    reports = [json.loads(p.read_text()) for p in parts]
    from ddgsim.execute.measure import build_metrics
    from ddgsim.fileio import write_json_atomic

    # the first step gap (a warm-up) left out of the median
    write_json_atomic(metrics, build_metrics(plan, plan_path, steps, reports, data="synthetic", runtime=RUNTIME,
                                             skip=1).to_json())
    for p in parts:
        p.unlink(missing_ok=True)
    return 0


def _worker(plan_path: Path, steps: int, threads: int, device: str, metrics: Path) -> None:
    from ddgsim.execute.childlog import keep_stderr

    keep_stderr()  # before torch: a copy of this process's stderr for the launcher to explain a failure
    import torch
    import torch.distributed as dist
    from torch.distributed import pipelining

    from ddgsim.execute.groups import import_before_group
    from ddgsim.execute.runner import fault_hook
    from ddgsim.malloc import tune_malloc
    from ddgsim.models.io import loss_for
    from ddgsim.models.registry import get_spec
    from ddgsim.plan.export import pipeline_stage
    from ddgsim.plan.format import load

    tune_malloc()
    torch.set_num_threads(threads)
    plan = load(plan_path)
    rank = int(os.environ["RANK"])
    cuda = device == "cuda"
    dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(dev)
    import_before_group()  # the optimizer below would import torch._dynamo with the group alive
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        spec = get_spec(plan.model)
        stage = pipeline_stage(plan, rank, dev)
        schedule_cls = getattr(pipelining, SCHEDULES[plan.schedule])
        schedule = schedule_cls(stage, n_microbatches=plan.micro_batches, loss_fn=loss_for(spec.io.target))
        params = list(stage.submod.parameters())
        # a stage may hold no parameters (a flatten, a ReLU): it forwards and backwards, nothing to update
        opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4) if params else None
        gen = torch.Generator().manual_seed(0)
        x = spec.io.example_input(plan.batch_size, gen).to(dev)
        y = spec.io.example_labels(plan.batch_size, gen).to(dev)
        last = plan.num_stages - 1
        step_ms: list[float] = []
        dist.barrier()
        t = time.perf_counter()
        for it in range(steps):
            fault_hook(rank, it, "step")  # the executor's testing hook (DDGSIM_FAULT)
            if opt is not None:
                opt.zero_grad(set_to_none=True)
            if rank == 0:
                schedule.step(x)
            elif rank == last:
                schedule.step(target=y, losses=[])
            else:
                schedule.step()
            if opt is not None:
                opt.step()
            if cuda:
                torch.cuda.synchronize(dev)
            now = time.perf_counter()
            step_ms.append((now - t) * 1e3)
            t = now
        Path(f"{metrics}.rank{rank}").write_text(json.dumps(
            {"stage": rank, "device": str(dev), "iterations": list(range(steps)), "step_ms": step_ms}))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ddgsim.compare.torch_pipelining",
                                 description="Run a gpipe or 1f1b plan under torch.distributed.pipelining.")
    ap.add_argument("plan", type=Path)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        _worker(args.plan, args.steps, args.threads, args.device, args.metrics)
        return 0
    from ddgsim.logs import log_to_stderr

    log_to_stderr()
    try:
        return launch(args.plan, args.steps, args.metrics, args.threads, args.device)
    except DdgsimError as exc:  # a bad input (exit 2) or a failed stage (its exit status)
        sys.stderr.write(f"error: {command_line_message(exc, flag_names(ap))}\n")
        return exc.exit_code


if __name__ == "__main__":
    from ddgsim.malloc import reexec_with_hugepages

    if "--worker" not in sys.argv:
        reexec_with_hugepages("ddgsim.compare.torch_pipelining")
    sys.exit(main())
