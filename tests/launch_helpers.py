"""Launching ``ddgsim execute`` from tests: plan files, the run, its final weights, the engine's."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from ddgsim.execute.job import run_inprocess_job
from ddgsim.execute.options import parse_run_args
from ddgsim.plan.format import Plan
from ddgsim.replicas import Layout

ROOT = Path(__file__).resolve().parents[1]
UNITS = {"mlp": 6, "smallcnn": 9}


def write_plan(path: Path, model: str, split: list[int], schedule: str, batch: int = 16, micro: int = 1,
               replicas: tuple[int, ...] = ()) -> Path:
    """A plan file; ``replicas`` (D_k per stage) places replica r of stage k on ``cpu{rank}``."""
    layout = None
    if replicas:
        ranks = iter(range(sum(replicas)))
        layout = Layout(tuple(tuple(f"cpu{next(ranks)}" for _ in range(d)) for d in replicas))
    Plan.for_split(model=model, split=split, num_units=UNITS[model], schedule=schedule, batch_size=batch,
                   micro_batches=micro, layout=layout).save(path)
    return path


def execute(*argv: str, timeout: float = 180, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    e = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
    backend = [] if "--backend" in argv else ["--backend", "gloo"]  # CPU unless a test asks for NCCL
    return subprocess.run([sys.executable, "-m", "ddgsim", "execute", *argv, "--no-progress", *backend], cwd=ROOT,
                          env=e, capture_output=True, text=True, timeout=timeout)


def final_weights(d: Path, k_total: int) -> list[torch.Tensor]:
    return [torch.load(d / f"stage-{k}.pt", weights_only=True)["weights"] for k in range(k_total)]


def engine_weights(argv: list[str]) -> list[torch.Tensor]:
    torch.set_num_threads(1)  # the stage processes run with 1 thread: same kernels, same bits
    res, _job, _ds = run_inprocess_job(parse_run_args(argv))
    return res.weights[-1]


def assert_same(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b)
    for k, (x, y) in enumerate(zip(a, b, strict=True)):
        assert torch.equal(x, y), f"stage {k}: max diff {(x - y).abs().max().item()}"


CLEAN_EXIT = ("terminate called", "Fatal Python error", "Traceback", "warning: stage")
"""Lines that must never appear in a stage's stderr (an abort at exit, a crash, a leaked group)."""


def assert_clean(stderr: str) -> None:
    bad = [line for line in stderr.splitlines() if any(s in line for s in CLEAN_EXIT)]
    assert not bad, "\n".join(bad)


def preempted_run(plan: Path, common: list[str], ck: Path, fault: str) -> tuple[subprocess.CompletedProcess[str],
                                                                              str, dict[str, Any]]:
    """Run ``plan`` with checkpoints in ``ck`` until ``DDGSIM_FAULT=fault`` sends SIGTERM to the
    launcher; check it exits 0, cleanly, with exactly one "stopped on SIGTERM" note; return the
    run, that note and the checkpoint manifest."""
    r = execute(str(plan), *common, "--checkpoint-dir", str(ck), env={"DDGSIM_FAULT": fault})
    assert r.returncode == 0, r.stderr
    assert_clean(r.stderr)
    notes = [line for line in r.stderr.splitlines() if line.startswith("note: stopped on SIGTERM")]
    assert len(notes) == 1, r.stderr
    return r, notes[0], json.loads((ck / "manifest.json").read_text())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def execute_on_two_nodes(plan: Path, common: list[str], weights: Path) -> list[str]:
    """``execute`` as two launchers (``--nnodes 2 --node-rank 0|1``, a c10d rendezvous on localhost),
    both exiting 0 with a clean stderr; their stdouts."""
    endpoint = f"localhost:{free_port()}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "ddgsim", "execute", str(plan), *common, "--no-progress", "--backend", "gloo",
         "--final-weights", str(weights), "--nnodes", "2", "--node-rank", str(r),
         "--rdzv-endpoint", endpoint], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True) for r in (0, 1)]
    outs = [n.communicate(timeout=300) for n in nodes]
    for n, (_out, err) in zip(nodes, outs, strict=True):
        assert n.returncode == 0, err
        assert_clean(err)
    return [out for out, _ in outs]
