"""Helpers for the executor tests: small models, batches, and the schedule to run.

``schedule_for`` uses ``ddgsim.schedule.make_schedule`` when that module exists and
otherwise a local copy of the action lists of docs/architecture.md (bp, ddg,
ddg-pipelined, gpipe), so the executor tests run before and after it lands.
"""

from __future__ import annotations

import importlib.util
import itertools
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn


class _Action(NamedTuple):
    stage: int
    kind: str
    batch: int
    micro: int = 0


@dataclass(frozen=True)
class _Schedule:
    name: str
    stages: int
    iterations: int
    micro_batches: int
    actions: tuple[tuple[_Action, ...], ...]

    def delay(self, stage: int) -> int:
        return self.stages - 1 - stage if self.name.startswith("ddg") else 0


def _stub_schedule(name: str, stages: int, iterations: int, micro_batches: int = 1) -> _Schedule:
    per: list[tuple[_Action, ...]] = []
    for k in range(stages):
        d = stages - 1 - k
        acts: list[_Action] = []
        for t in range(iterations):
            if name == "bp":
                acts += [_Action(k, "F", t), _Action(k, "B", t), _Action(k, "U", t)]
            elif name == "gpipe":
                acts += [_Action(k, "F", t, m) for m in range(micro_batches)]
                acts += [_Action(k, "B", t, m) for m in reversed(range(micro_batches))]
                acts.append(_Action(k, "U", t))
            else:
                acts.append(_Action(k, "F", t))
                if t >= d:
                    acts += [_Action(k, "B", t - d), _Action(k, "U", t - d)]
                s = t - d + 1
                if name == "ddg" and k < stages - 1 and 0 <= s <= iterations - 1 - d:
                    acts.append(_Action(k, "W", s))
        per.append(tuple(acts))
    return _Schedule(name, stages, iterations, micro_batches, tuple(per))


def schedule_for(name: str, stages: int, iterations: int, micro_batches: int = 1):  # type: ignore[no-untyped-def]
    if importlib.util.find_spec("ddgsim.schedule") is not None:
        from ddgsim.schedule import make_schedule

        return make_schedule(name, stages, iterations, micro_batches)
    return _stub_schedule(name, stages, iterations, micro_batches)


def mlp(widths: list[int], seed: int = 0) -> nn.Sequential:
    """Linear/Tanh chain (smooth, so reference gradients agree tightly)."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


def split_sequential(model: nn.Sequential, split: list[int]) -> list[nn.Sequential]:
    edges = [0, *split, len(model)]
    return [nn.Sequential(*list(model)[a:b]) for a, b in itertools.pairwise(edges)]


def batches(n_in: int, n_out: int, batch: int = 8, seed: int = 0):  # type: ignore[no-untyped-def]
    def fn(t: int) -> tuple[Tensor, Tensor]:
        g = torch.Generator().manual_seed(seed * 100003 + t)
        return torch.randn(batch, n_in, generator=g), torch.randint(0, n_out, (batch,), generator=g)

    return fn
