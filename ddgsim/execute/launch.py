"""Launch a run: one process per stage (per replica of a stage), through PyTorch's elastic launcher.

Launches ``python -m ddgsim.execute`` once per process of the plan (``plan.world_size``:
K, or D_0 + … + D_{K-1} with replicated stages; ranks are stage-major) through PyTorch's elastic launcher
(``torch.distributed.launcher.api.elastic_launch``, the machinery behind
``torchrun``), so what runs here is exactly what ``torchrun --nproc-per-node K -m
ddgsim.execute ...`` runs (each stage gets the :class:`RunConfig` as JSON). Several nodes: run the same command on each with ``--nnodes N
--node-rank R --rdzv-endpoint HOST:PORT`` (a c10d rendezvous hosted by node 0); each
node starts world_size/N processes (ranks spread as the rendezvous assigns nodes).

SIGTERM to this process (preemption) is passed to the stages, which stop at one
common iteration boundary, checkpoint there (``--checkpoint-dir``) and exit; the
command then exits 0 and the run continues with ``--resume DIR``.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from ddgsim.errors import ParameterError
from ddgsim.execute.childlog import ENV, LaunchFailed, explain
from ddgsim.execute.config import RunConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Nodes:
    """Where the stage processes run: this launcher's share of a (multi-node) job."""

    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str | None = None
    """HOST:PORT of the c10d rendezvous (node 0 hosts it); needed with ``nnodes`` > 1."""
    rdzv_id: str | None = None
    max_restarts: int = 0
    """Restart the whole job up to this many times after a failure (it resumes from a checkpoint)."""


def _placement(nodes: Nodes, world: int) -> tuple[str, str, int]:
    """(rendezvous endpoint, run id, processes on this node), a ParameterError naming a bad field."""
    n = nodes.nnodes
    if n < 1:
        raise ParameterError("nnodes", f" must be >= 1, got {n}")
    if not 0 <= nodes.node_rank < n:
        raise ParameterError("node_rank", f" must be in 0..{n - 1}, got {nodes.node_rank}")
    if world % n:
        raise ParameterError("nnodes", f" {n}: the plan's {world} processes (one per stage replica) cannot be "
                                       f"spread evenly over {n} nodes; use a {{nnodes}} that divides {world}")
    if n == 1:
        return nodes.rdzv_endpoint or "localhost:0", nodes.rdzv_id or f"ddgsim-{uuid.uuid4().hex[:8]}", world
    endpoint = nodes.rdzv_endpoint or ""
    host, _, port = endpoint.rpartition(":")
    if not host or not port.isdigit() or int(port) == 0:
        raise ParameterError("nnodes", f" {n} needs {{rdzv_endpoint}} HOST:PORT with a fixed port, got "
                                       f"{nodes.rdzv_endpoint!r}", others=("rdzv_endpoint",))
    return endpoint, nodes.rdzv_id or f"ddgsim-{host}-{port}", world // n


def worker_environment(threads: int) -> None:
    """Set this process's environment for the worker processes the elastic launcher spawns: this
    checkout importable, ``threads`` OpenMP threads unless set, huge pages for malloc."""
    from ddgsim.malloc import hugepage_env

    root = str(Path(__file__).resolve().parents[2])
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    os.environ.update(hugepage_env(dict(os.environ)))


_SHARED_WARNED: set[int] = set()
"""World sizes already warned about sharing the CPU cores."""


def launch(config: RunConfig, nodes: Nodes | None = None, log_dir: Path | None = None) -> int:
    """Run ``config`` with one process per stage of its plan on this node; the exit status
    (0 also after a preemption that checkpointed). UserError before anything starts;
    :class:`~ddgsim.execute.childlog.LaunchFailed` naming the failing process, its first error
    line and its log when one fails.

    Each process keeps a copy of its stderr in ``log_dir/rank<R>.log``; without ``log_dir``,
    in a temporary folder that is removed after a run in which no process failed.
    """
    nodes = nodes or Nodes()
    if nodes.max_restarts < 0:
        raise ParameterError("max_restarts", f" must be >= 0, got {nodes.max_restarts}")
    from ddgsim.execute.job import check_devices, prepare

    job = prepare(config)  # every UserError before anything starts or is written
    world = job.world_size
    endpoint, run_id, nproc = _placement(nodes, world)
    check_devices(job, nproc)
    if job.backend == "gloo" and world > (os.cpu_count() or 1) and world not in _SHARED_WARNED:
        _SHARED_WARNED.add(world)  # once per process: validate launches the same job many times
        log.warning("%d stage processes on %d CPU cores: stages will share cores (a prediction knows it from "
                    "a calibrated scenario's host_slots)", world, os.cpu_count() or 1)
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    worker_environment(config.threads)
    logs, own_logs = child_logs(log_dir)
    launch_config = LaunchConfig(
        min_nodes=nodes.nnodes, max_nodes=nodes.nnodes, nproc_per_node=nproc, run_id=run_id,
        rdzv_backend="c10d", rdzv_endpoint=endpoint, max_restarts=nodes.max_restarts,
        rdzv_configs={"is_host": nodes.node_rank == 0} if nodes.nnodes > 1 else {},
        monitor_interval=0.1, start_method="spawn",
        # time for the stages to agree on a stop, reach it and checkpoint after a SIGTERM
        shutdown_timeout=int(max(30.0, 2 * config.timeout_s)),
    )
    started = time.time()
    try:
        elastic_launch(launch_config, sys.executable)("-u", "-m", "ddgsim.execute", "--config-json", config.to_json())
    except SignalException as exc:
        code = _after_signal(config, exc.sigval, started)
        if own_logs and code == 0:
            shutil.rmtree(logs, ignore_errors=True)
        return code
    except ChildFailedError as exc:
        failure = explain(exc.failures, logs)
        after = f" after {nodes.max_restarts} restart(s)" if nodes.max_restarts else ""
        raise LaunchFailed(f"{failure.describe('stage')}; the job was stopped{after}",
                           2 if failure.exitcode == 2 else 1) from None
    if own_logs:
        shutil.rmtree(logs, ignore_errors=True)
    return 0


class ExecutionFailed(RuntimeError):
    """The executor ran and failed (non-zero exit status); the message is the one-line reason."""


def run_plan(plan: Path, steps: int, threads: int, metrics: Path, trace: Path | None, device: str,
             log_dir: Path | None = None) -> None:
    """Run ``plan`` for ``steps`` steps on synthetic data, to be measured: no evaluation, no
    progress, its metrics (and trace) written, the device's backend (NCCL on CUDA, else gloo).

    Raises :class:`ExecutionFailed` when the executor fails, naming the failing stage, its first
    error line and its log (kept in ``log_dir``).
    """
    try:
        code = launch(RunConfig(plan=plan, steps=steps, threads=threads, data="synthetic", evaluate=False,
                                progress=False, metrics=metrics, trace=trace,
                                backend="nccl" if device == "cuda" else "gloo"), log_dir=log_dir)
    except LaunchFailed as exc:
        raise ExecutionFailed(f"executor: {exc}") from None
    if code != 0:
        raise ExecutionFailed(f"executor exit status {code}")


def child_logs(log_dir: Path | None) -> tuple[Path, bool]:
    """Point the processes about to be launched at ``log_dir`` (a new temporary folder without it) for
    their stderr logs (:mod:`ddgsim.execute.childlog`); (the folder, whether it is a temporary one)."""
    own = log_dir is None
    folder = Path(tempfile.mkdtemp(prefix="ddgsim-logs-")) if log_dir is None else log_dir
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ParameterError("log_dir", f" {folder}: cannot make the folder ({exc.strerror or exc})") from None
    for old in folder.glob("rank*.log"):  # an earlier run's, which would be appended to
        old.unlink()
    os.environ[ENV] = str(folder.resolve())
    return folder, own


def _after_signal(config: RunConfig, sig: signal.Signals, started: float) -> int:
    """0 when the stages checkpointed on the way out (they print the note), 128 + signal otherwise."""
    from ddgsim.execute.checkpoint import read_manifest

    root = config.checkpoint_dir
    man = read_manifest(root) if root is not None else None
    if root is not None and man is not None and man.get("preempted") and (
            root / "manifest.json").stat().st_mtime >= started:
        return 0
    log.error("stopped by %s before a checkpoint was written%s", sig.name, "" if root else " (no --checkpoint-dir)")
    return 128 + int(sig)
