"""Helpers for the executor tests: small models, batches, and the schedule to run."""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn

from ddgsim.schedule import Schedule, make_schedule


def schedule_for(name: str, stages: int, iterations: int, micro_batches: int = 1) -> Schedule:
    return make_schedule(name, stages, iterations, micro_batches)


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
