"""Checkpoints that lose nothing: per-stage state files plus a manifest written after all stages.

Layout of ``--checkpoint-dir DIR`` (must be visible to every stage process)::

    DIR/manifest.json          {"format": "ddgsim-checkpoint/1", "step": 40, "stages": 2, "job": {...}}
    DIR/step-00000040/stage-0.pt
    DIR/step-00000040/stage-1.pt

With replicated stages every process writes its own file: replica r of a stage with
D > 1 replicas writes ``stage-K-replica-R.pt`` (a stage with one replica keeps the name
``stage-K.pt``), and the job key names the replicas of every stage.

Each stage writes its file atomically (temp file + ``os.replace``); after a barrier
rank 0 replaces the manifest, and only then removes older step directories — so
the manifest always names a complete step. Files are read with
``torch.load(weights_only=True)``; anything unreadable is a :class:`~ddgsim.errors.FileError`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ddgsim.errors import FileError, ParameterError, UserError
from ddgsim.fileio import atomic_open, write_json_atomic

FORMAT = "ddgsim-checkpoint/1"


def step_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:08d}"


def file_name(stage: int, replica: int = 0, replicas: int = 1) -> str:
    """The state file of one process: ``stage-K.pt``, or ``stage-K-replica-R.pt`` when the stage has replicas."""
    return f"stage-{stage}.pt" if replicas == 1 else f"stage-{stage}-replica-{replica}.pt"


def save_stage(root: Path, step: int, stage: int, state: dict[str, Any],
               fault: Callable[[], None] | None = None, *, replica: int = 0, replicas: int = 1) -> Path:
    """Write one process's state for ``step`` atomically (``fault``: a test hook run half-way)."""
    d = step_dir(root, step)
    d.mkdir(parents=True, exist_ok=True)
    path = d / file_name(stage, replica, replicas)
    with atomic_open(path, "wb", fsync=True, before_replace=fault) as f:
        # fault (tests) may SIGKILL this process with the file written but not yet in place
        torch.save(state, f)
    return path


def write_manifest(root: Path, step: int, stages: int, job: dict[str, Any], preempted: bool = False) -> None:
    """Mark ``step`` complete (``preempted``: written on the way out after a SIGTERM), then drop older steps."""
    write_json_atomic(root / "manifest.json", {"format": FORMAT, "step": step, "stages": stages, "job": job,
                                               "preempted": preempted})
    for old in root.glob("step-*"):
        if old.is_dir() and old.name != step_dir(root, step).name:
            shutil.rmtree(old, ignore_errors=True)


def read_manifest(root: Path) -> dict[str, Any] | None:
    """The manifest of ``root``; ``None`` if there is none; UserError if it is unreadable."""
    path = root / "manifest.json"
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise FileError(f"corrupt checkpoint manifest {path}: {exc}", kind="checkpoint", where=str(path)) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("step"), int):
        raise FileError(f"corrupt checkpoint manifest {path}: expected format {FORMAT} with an integer step",
                        kind="checkpoint", where=str(path))
    return data


def check_resumable(root: Path, job: dict[str, Any], steps: int, replicas: Sequence[int],
                    load_all: bool = False) -> dict[str, Any]:
    """The manifest of ``root`` if it fits this job (``replicas``: D_k of every stage); UserError
    naming the mismatch otherwise."""
    stages = len(replicas)
    if not root.is_dir():
        raise ParameterError("resume", f" {root}: no such directory")
    man = read_manifest(root)
    if man is None:
        raise ParameterError("resume", f" {root}: no manifest.json (no complete checkpoint there)")
    for key in sorted({*job, "replicas"}):
        want, have = job.get(key), man.get("job", {}).get(key)
        if have != want:
            raise UserError(f"checkpoint {root} was written for {key}={have!r}, this run has {key}={want!r}")
    if man["step"] > steps:
        raise ParameterError("resume", f" {root}: the checkpoint is at step {man['step']}, beyond {{steps}} {steps}",
                             others=("steps",))
    if man.get("stages") != stages:
        raise UserError(f"checkpoint {root} has {man.get('stages')!r} stages, this plan has {stages}")
    for k, d in enumerate(replicas):
        for r in range(d):
            name = file_name(k, r, d)
            if not (step_dir(root, man["step"]) / name).is_file():
                raise FileError(f"corrupt checkpoint {root}: step {man['step']} lacks {name}", kind="checkpoint",
                                where=str(root))
            if load_all:
                load_stage(root, man["step"], k, r, d)
    return man


def load_stage(root: Path, step: int, stage: int, replica: int = 0, replicas: int = 1) -> dict[str, Any]:
    path = step_dir(root, step) / file_name(stage, replica, replicas)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise FileError(f"corrupt checkpoint {path}: {type(exc).__name__}: {first}", kind="checkpoint",
                        where=str(path)) from None
    if (not isinstance(state, dict) or state.get("format") != FORMAT or state.get("stage") != stage
            or state.get("replica", 0) != replica):
        raise FileError(f"corrupt checkpoint {path}: not a {FORMAT} file of stage {stage}"
                        + (f" replica {replica}" if replicas > 1 else ""), kind="checkpoint", where=str(path))
    return state
