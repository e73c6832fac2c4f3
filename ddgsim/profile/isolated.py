"""Each unit alone: its forward and backward timed on a detached copy of its real input (the
profile's ``isolated`` rows), and what autograd saves for its backward, counted.

``activation_bytes`` counts what autograd saves for backward, seen through
``torch.autograd.graph.saved_tensors_hooks``: unique storages (a tensor saved twice,
or two views of one buffer, count once), their full ``nbytes``. Parameters and
buffers that autograd saves (a conv's weight) are excluded: they are already counted
in ``param_bytes`` and are not per-batch memory. The unit's input is included when
autograd saves it, so summing over units can count a boundary tensor twice when both
the producer (say, a ReLU saving its result) and the consumer save it: each row records
which of its bytes are its input (``saved_input_bytes``) and its output
(``saved_output_bytes``), and the memory model (:mod:`ddgsim.predict.memory`) counts such
a tensor once.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from ddgsim.models.io import ModelIO
from ddgsim.profile.format import UnitProfile
from ddgsim.profile.timing import Samples, Timer
from ddgsim.profile.units import Unit, split_units


@contextmanager
def saved_tensors(exclude: set[int], into: dict[int, int]) -> Iterator[None]:
    """Record ``data_ptr -> nbytes`` of each storage autograd saves, except ``exclude``."""

    def pack(t: torch.Tensor) -> torch.Tensor:
        try:
            storage = t.untyped_storage()
            ptr, nbytes = storage.data_ptr(), storage.nbytes()
        except (RuntimeError, NotImplementedError):  # opaque tensors (e.g. mkldnn) have no storage
            ptr, nbytes = storage_ptr(t), t.numel() * t.element_size()
        if ptr not in exclude and nbytes > 0:
            into[ptr] = max(into.get(ptr, 0), nbytes)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield


def storage_ptr(t: torch.Tensor) -> int:
    """What :func:`saved_tensors` keys ``t`` by."""
    try:
        return int(t.untyped_storage().data_ptr())
    except (RuntimeError, NotImplementedError):
        return id(t)


def state_ptrs(module: nn.Module) -> set[int]:
    tensors = [*module.parameters(), *module.buffers()]
    return {t.untyped_storage().data_ptr() for t in tensors}


def tensor_bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


class UnitRunner:
    """Runs one unit's forward and backward on a detached copy of its input."""

    def __init__(self, unit: Unit, needs_input_grad: bool) -> None:
        self.unit = unit
        self.needs_input_grad = needs_input_grad
        self.params = list(unit.module.parameters())
        self.fwd = Samples()
        self.bwd = Samples()
        self.out_shape: list[int] | None = None
        self.out_bytes = 0
        self.saved: dict[int, int] = {}
        self.saved_input = 0
        self.saved_output = 0

    def step(self, x: torch.Tensor, timer: Timer, record: bool) -> torch.Tensor:
        """Time forward and backward on ``x``; return the (detached) output."""
        for p in self.params:
            p.grad = None
        x_in = x.detach().requires_grad_(self.needs_input_grad)
        wall_f, cpu_f, out = timer(functools.partial(self.unit.module, x_in))
        wall_b, cpu_b = 0.0, 0.0 if cpu_f is not None else None  # nothing upstream needs a gradient
        if out.requires_grad:
            # A fresh (untimed) error gradient each time: keeping one per unit would hold
            # as much memory as all the activations of the model.
            grad_out = torch.randn_like(out)
            wall_b, cpu_b, _ = timer(functools.partial(torch.autograd.backward, out, grad_out))
            del grad_out
        if record:
            self.fwd.add(wall_f, cpu_f)
            self.bwd.add(wall_b, cpu_b)
        self.out_shape = list(out.shape)
        self.out_bytes = tensor_bytes(out)
        detached: torch.Tensor = out.detach()
        return detached

    def count_saved(self, x: torch.Tensor) -> torch.Tensor:
        """One untimed forward under saved-tensor hooks (see the module docstring); its detached output."""
        self.saved = {}
        x_in = x.detach().requires_grad_(self.needs_input_grad)
        with saved_tensors(state_ptrs(self.unit.module), self.saved):
            out = self.unit.module(x_in)
        # The boundary tensors among them: a stage holds a tensor that two units (or a unit and a
        # message buffer) share only once (ddgsim.predict.memory).
        self.saved_input = self.saved.get(storage_ptr(x_in), 0)
        self.saved_output = self.saved.get(storage_ptr(out), 0)
        detached: torch.Tensor = out.detach()
        del out
        return detached

    def row(self, clock: str) -> UnitProfile:
        assert self.out_shape is not None
        unique = {id(p): p for p in self.params}.values()
        return UnitProfile(
            name=self.unit.name,
            forward_ms=self.fwd.median(clock),
            backward_ms=self.bwd.median(clock),
            output_bytes=self.out_bytes,
            param_bytes=sum(tensor_bytes(p) for p in unique),
            activation_bytes=sum(self.saved.values()),
            output_shape=self.out_shape,
            saved_input_bytes=self.saved_input,
            saved_output_bytes=self.saved_output,
        )


def unit_runners(units: Sequence[Unit]) -> list[UnitRunner]:
    runners: list[UnitRunner] = []
    upstream_params = False  # the input gradient is needed only if something upstream learns
    for unit in units:
        runners.append(UnitRunner(unit, needs_input_grad=upstream_params))
        upstream_params = upstream_params or any(p.requires_grad for p in unit.module.parameters())
    return runners


def saved_rows(model: nn.Module, io: ModelIO, batch_size: int, seed: int = 0) -> list[tuple[int, int, int]]:
    """Per unit, as :func:`profile_model` counts them (one untimed forward, on CPU):
    ``(activation_bytes, saved_input_bytes, saved_output_bytes)``."""
    model = model.train()
    runners = unit_runners(split_units(model, io, batch_size=2))
    x = io.example_input(batch_size, torch.Generator(device="cpu").manual_seed(seed))
    for runner in runners:
        x = runner.count_saved(x)
    return [(sum(r.saved.values()), r.saved_input, r.saved_output) for r in runners]
