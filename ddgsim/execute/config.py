"""The configuration of one run of a plan: a typed, keyword-only value (torch-free).

The command line builds it (:func:`ddgsim.execute.options.config_from_args`), a library user
builds it directly, and the launcher hands it to every stage process as JSON; nothing
downstream reads command-line options. A bad value is a :class:`~ddgsim.errors.ParameterError`
naming its field; field names are the options' names (``timeout_s`` is ``--timeout-s``), so the
command line names the option a user would change.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ddgsim.errors import ParameterError, choices

BACKENDS = ("auto", "gloo", "nccl")
DATASETS = ("digits", "cifar10", "text", "synthetic")
_PATHS = ("plan", "data_dir", "checkpoint_dir", "resume", "metrics", "trace", "final_weights", "tensorboard")


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Everything one run of a plan needs besides the plan file itself."""

    plan: Path
    """The ``ddgsim-plan/1`` file to run."""
    steps: int
    """Iterations N (> 0)."""
    model: str | None = None
    """Refuse the plan unless it is for this model."""
    data: str = "synthetic"
    """Training data: one of :data:`DATASETS`."""
    data_dir: Path | None = None
    """CIFAR-10 python batches (``data_batch_1..5``, ``test_batch``)."""
    augment: bool = False
    """CIFAR random crop (pad 4) and horizontal flip."""
    seed: int = 0
    """Model initialisation, data order and per-stage RNG seed."""
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    lr_decay_epochs: tuple[int, ...] = ()
    """Epochs where the learning rate is multiplied by ``lr_decay_factor``."""
    lr_decay_factor: float = 0.1
    warmup_steps: int = 0
    """Staleness compensation: linear learning-rate warm-up over this many steps (0: none)."""
    lr_delay_scale: bool = False
    """Staleness compensation: each stage's rate times its stability limit over BP's, cos(τπ/(2τ+1))."""
    weight_prediction: bool = False
    """Staleness compensation: forward with the weights extrapolated along the momentum by the stage's delay."""
    backend: str = "auto"
    """``gloo`` (CPU), ``nccl`` (CUDA) or ``auto`` (nccl when CUDA is available)."""
    threads: int = 1
    """Torch threads per stage process."""
    timeout_s: float = 60.0
    """Point-to-point and collective timeout."""
    checkpoint_dir: Path | None = None
    checkpoint_every: int = 0
    """Checkpoint every N steps (0: never; > 0 needs ``checkpoint_dir``)."""
    resume: Path | None = None
    """Continue from the last complete checkpoint in this directory."""
    metrics: Path | None = None
    """Write per-stage timings (``ddgsim-metrics/1`` JSON) here."""
    trace: Path | None = None
    """Write a Chrome trace of the run here."""
    final_weights: Path | None = None
    """Each stage writes its final flat weights and losses to ``DIR/stage-K.pt``."""
    tensorboard: Path | None = None
    """Write TensorBoard scalars (loss, samples/s, per stage busy, bubble, staleness) to this folder."""
    evaluate: bool = True
    """Measure test accuracy at the end."""
    progress: bool = True
    """Show a progress bar (only on a terminal)."""

    def __post_init__(self) -> None:
        if self.steps <= 0:
            raise ParameterError("steps", f" must be > 0, got {self.steps}")
        if self.threads <= 0:
            raise ParameterError("threads", f" must be > 0, got {self.threads}")
        if not self.timeout_s > 0:
            raise ParameterError("timeout_s", f" must be > 0, got {self.timeout_s}")
        if self.checkpoint_every < 0:
            raise ParameterError("checkpoint_every", f" must be >= 0 (0: never), got {self.checkpoint_every}")
        if self.checkpoint_every > 0 and self.checkpoint_dir is None:
            raise ParameterError("checkpoint_every", f" {self.checkpoint_every} needs {{checkpoint_dir}}, the "
                                                     "folder to write the checkpoints to", others=("checkpoint_dir",))
        if any(e <= 0 for e in self.lr_decay_epochs):
            raise ParameterError("lr_decay_epochs", f" must be positive integers, got {list(self.lr_decay_epochs)}")
        if self.data not in DATASETS:
            raise ParameterError("data", f" '{self.data}' is not one of {choices(DATASETS)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ParameterError("lr", f" must be a finite number > 0, got {self.lr}")
        if not (math.isfinite(self.momentum) and 0 <= self.momentum < 1):
            raise ParameterError("momentum", f" must be in [0, 1), got {self.momentum}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ParameterError("weight_decay", f" must be a finite number >= 0, got {self.weight_decay}")
        if not (math.isfinite(self.lr_decay_factor) and self.lr_decay_factor > 0):
            raise ParameterError("lr_decay_factor", f" must be a finite number > 0, got {self.lr_decay_factor}")
        if self.warmup_steps < 0:
            raise ParameterError("warmup_steps", f" must be >= 0, got {self.warmup_steps}")
        if self.weight_prediction and self.momentum <= 0:
            raise ParameterError("weight_prediction", " extrapolates along the momentum: it needs {momentum} > 0",
                                 others=("momentum",))
        if self.backend not in BACKENDS:
            raise ParameterError("backend", f" '{self.backend}' is not one of {choices(BACKENDS)}")

    def to_json(self) -> str:
        """The whole configuration as one JSON object (what the launcher passes to each stage)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for key in _PATHS:
            data[key] = None if data[key] is None else str(data[key])
        data["lr_decay_epochs"] = list(self.lr_decay_epochs)
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        data: dict[str, Any] = json.loads(text)
        for key in _PATHS:
            if data.get(key) is not None:
                data[key] = Path(data[key])
        data["lr_decay_epochs"] = tuple(data.get("lr_decay_epochs", ()))
        return cls(**data)
