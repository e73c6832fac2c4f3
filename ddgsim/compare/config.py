"""What one validation is asked for (:class:`ValidateConfig`), checked once, by value."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ddgsim.compare.selection import MICRO_BATCHED
from ddgsim.errors import ParameterError, choices
from ddgsim.schedule import SCHEDULES

DEFAULT_SCHEDULES: tuple[str, ...] = SCHEDULES
RUNTIMES = ("ddgsim", "torch")
MAX_WARMUP_MS = 60_000


class ConfigError(ParameterError):
    """A bad value of one :class:`ValidateConfig` field: the message is the field's name, then ``detail``."""

    def __init__(self, field: str, detail: str, others: Sequence[str] = ()) -> None:
        super().__init__(field, detail, others)

    @property
    def field(self) -> str:
        """The field: :attr:`ParameterError.param`."""
        return self.param


@dataclass(frozen=True, kw_only=True)
class ValidateConfig:
    """Everything a validation depends on; validated once, when built."""

    model: str
    """Model name (``ddgsim models``)."""
    out: Path
    """Folder of ``validation.csv``, ``summary.json``, ``report.html`` and ``runs/`` (made if missing)."""
    stages: tuple[int, ...] = (1, 2)
    """Numbers of stages K to run (K = 1: the one-process bp run)."""
    schedules: tuple[str, ...] = DEFAULT_SCHEDULES
    """Schedules of the runs with K ≥ 2."""
    micro_batches: tuple[int, ...] = (2,)
    """M for gpipe and 1f1b; each must divide ``batch_size``."""
    replicas: tuple[int, ...] = (1,)
    """D: every K is also run with each stage on D replicas (K·D processes), for each D."""
    runtimes: tuple[str, ...] = ("ddgsim",)
    """Who runs the splits: ``ddgsim`` (the executor) and/or ``torch`` (the gpipe and 1f1b runs under
    ``torch.distributed.pipelining``)."""
    splits: int = 3
    """Splits per K and schedule: planned, even, then unbalanced ones."""
    repeats: int = 3
    """Executions per run, interleaved over the runs; their median is compared."""
    reference_every: int = 4
    """The one-process run, the reference of the speedups, is measured again after every this many
    other executions of a round (0: only at the start of each round)."""
    speed_probe: bool = True
    """Time the model's whole step in this process before every one-process execution and at the end:
    the machine's speed over the session against the profile's (:mod:`ddgsim.compare.session`)."""
    steps: int = 10
    """Iterations per execution, at least (short steps run longer: ``warmup_ms``, ``window_ms``)."""
    warmup: int | None = None
    """Iteration gaps dropped before the median; ``None``: K, and at least ``warmup_ms``."""
    warmup_ms: float = 300.0
    """With ``warmup`` None, the dropped gaps last at least this long."""
    window_ms: float = 500.0
    """The measured gaps last at least this long (0: exactly ``steps``)."""
    batch_size: int = 128
    """Samples per batch."""
    scenario: str | None = None
    """Hardware scenario, a name or a file; ``None``: on cpu this machine's (calibrated once and cached),
    on cuda ``ideal-<K·D>``."""
    profile: str | Path | None = None
    """Profile file to predict with; ``None``: this machine's, cached or measured now."""
    max_steal_pct: float = 3.0
    """An execution during which the hypervisor stole more than this % of the CPU time is measured again."""
    reprofile: bool = False
    """Measure the profile (and, without ``scenario``, calibrate) now even if this machine's are cached."""
    device: str = "cpu"
    """``cpu`` (gloo) or ``cuda`` (NCCL)."""
    threads: int = 1
    """Torch threads per stage process."""
    tolerance_pct: float = 5.0
    """Predictions closer than this are ties for the ranking, and errors within it are a pass."""
    trace: bool = True
    """Write the measured traces (and draw the timeline figures)."""
    figures: Path | None = None
    """Also export the figures as PNG here (kaleido + Chromium; skipped with a warning without)."""
    command: str = ""
    """How the validation was asked for: the report's first header line (empty: none)."""

    def __post_init__(self) -> None:
        if not self.stages or any(k < 1 for k in self.stages):
            raise ConfigError("stages", f" must be one or more numbers >= 1, got {list(self.stages)}")
        for s in self.schedules:
            if s not in SCHEDULES:
                raise ConfigError("schedules", f": '{s}' is not one of {choices(SCHEDULES)}")
        if not self.runtimes or any(r not in RUNTIMES for r in self.runtimes):
            raise ConfigError("runtimes", f" must be one or both of {choices(RUNTIMES)}, got {list(self.runtimes)}")
        if self.micro_schedules:
            from ddgsim.profile.format import check_micro_batches

            check_micro_batches(self.batch_size, self.micro_batches)
        if not self.replicas or any(d < 1 for d in self.replicas):
            raise ConfigError("replicas", f" must be one or more numbers >= 1, got {list(self.replicas)}")
        for name in ("splits", "batch_size", "threads", "repeats"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f" must be > 0, got {getattr(self, name)}")
        if self.reference_every < 0:
            raise ConfigError("reference_every", f" must be >= 0 (0: only at the start of each round), "
                                                 f"got {self.reference_every}")
        if self.steps < max(self.stages) + 2:
            raise ConfigError("steps", f" must be >= K+2 = {max(self.stages) + 2} (fill, then at least 2 steady "
                                       f"gaps), got {self.steps}")
        if self.warmup is not None and not 0 <= self.warmup < self.steps - 1:
            raise ConfigError("warmup", f" must be in 0..{self.steps - 2}, got {self.warmup}")
        for name in ("warmup_ms", "window_ms"):
            ms = getattr(self, name)
            if not 0 <= ms < MAX_WARMUP_MS:
                raise ConfigError(name, f" must be in 0..{MAX_WARMUP_MS} ms, got {ms:g}")
        if self.out.exists() and not self.out.is_dir():
            raise ConfigError("out", f" {self.out} is not a folder")
        if self.device not in ("cpu", "cuda"):
            raise ConfigError("device", f" must be cpu or cuda, got '{self.device}'")

    @property
    def micro_schedules(self) -> bool:
        """Whether a schedule asked for splits the batch into micro-batches (gpipe, 1f1b)."""
        return any(s in MICRO_BATCHED for s in self.schedules)

    @property
    def processes(self) -> int:
        """Processes of the largest run: the most stages × the most replicas."""
        return max(self.stages) * max(self.replicas)
