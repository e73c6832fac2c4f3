"""Compute time on the GPU itself: CUDA events around each action's compute.

The executor times every action on the host (``time.perf_counter`` around the compute and a
synchronisation of the current stream), which on a GPU includes the launch overhead and the
synchronisation. :class:`ComputeTimer` also records a pair of CUDA events on the stage's
compute stream around each action; after the run their elapsed times are the GPU's own
compute per action (``device_forward_ms`` … in the metrics). On CPU it records nothing.
"""

from __future__ import annotations

from typing import Any

import torch


class ComputeTimer:
    """CUDA events around each action's compute (none on CPU)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.pairs: list[tuple[int, str, Any, Any]] = []

    def start(self) -> Any:
        if not self.cuda:
            return None
        ev = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        ev.record()
        return ev

    def stop(self, it: int, kind: str, start: Any) -> None:
        if start is None:
            return
        ev = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        ev.record()
        self.pairs.append((it, kind, start, ev))

    def per_iteration(self, its: list[int]) -> dict[str, list[float]] | None:
        """``{"device_forward_ms": [...], "device_backward_ms": [...], "device_update_ms": [...]}``
        summed per iteration of ``its``; ``None`` on CPU. Waits for the last event."""
        if not self.cuda:
            return None
        sums: dict[tuple[int, str], float] = {}
        for it, kind, a, b in self.pairs:
            b.synchronize()
            sums[(it, kind)] = sums.get((it, kind), 0.0) + float(a.elapsed_time(b))
        names = {"F": "device_forward_ms", "B": "device_backward_ms", "U": "device_update_ms"}
        return {name: [sums.get((i, k), 0.0) for i in its] for k, name in names.items()}
