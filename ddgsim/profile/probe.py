"""The machine's speed now against a profile's: the whole model's forward and backward, timed as the
profile timed its ``whole_model_ms``.

A profile is measured in seconds; on a VM whose speed moves between levels over minutes it is one
sample of the machine, and a validation that runs for minutes after it meets the machine at other
speeds. :class:`SpeedProbe` times the same whole-model step again whenever asked — between a
validation's executions, in the validating process, independent of every run it judges — and
:mod:`ddgsim.compare.session` turns the readings into how much slower (> 1) or faster the machine ran
over the session than when the profile was measured.
"""

from __future__ import annotations

import functools

import torch

from ddgsim.profile.format import Profile
from ddgsim.profile.timing import MAX_ROUNDS, Rounds, Samples, Timer

WARMUP = 1
"""Untimed steps before a reading (and at least :data:`~ddgsim.profile.timing.MIN_WARMUP_S`)."""
REPS = 3
"""Timed steps of a reading at least (and at least :data:`~ddgsim.profile.timing.MIN_TIMED_S`)."""


class SpeedProbe:
    """Reads the whole-model step time of ``profile``'s model, batch, device, threads and clock."""

    def __init__(self, profile: Profile, seed: int = 0) -> None:
        from ddgsim.models.registry import build_model, get_spec

        self.profile = profile
        self.clock = str((profile.measurement or {}).get("clock", "wall"))
        spec = get_spec(profile.model)
        io = spec.io.with_overrides(input_shape=profile.input_shape, vocab=profile.vocab)
        self.device = torch.device(profile.device)
        self.model = build_model(spec).to(self.device).train()
        dtype = getattr(torch, profile.dtype, None)
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            dtype = None
        if dtype is not None:  # as the profile's model was measured
            self.model = self.model.to(dtype)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        x = io.example_input(profile.batch_size, gen)
        self.x = (x.to(dtype) if dtype is not None and x.is_floating_point() else x).to(self.device)
        with torch.no_grad():
            out = self.model(self.x)
        self.grad_out = torch.randn(out.shape, generator=gen).to(device=self.device, dtype=out.dtype)
        self.timer = Timer(self.device)

    def read(self) -> float:
        """The median whole-model step now, in ms of the profile's clock."""
        from ddgsim.profile.measure import _whole_step

        threads = self.profile.threads
        old = torch.get_num_threads()
        if threads is not None and self.device.type == "cpu":
            torch.set_num_threads(threads)
        samples = Samples()
        rounds = Rounds(WARMUP, REPS, cap=MAX_ROUNDS)
        step = functools.partial(_whole_step, self.model, self.x, self.grad_out)
        try:
            while (r := rounds.next()) is not None:
                self.model.zero_grad(set_to_none=True)
                wall, cpu, _ = self.timer(step)
                if r >= rounds.warm:
                    samples.add(wall, cpu)
        finally:
            self.model.zero_grad(set_to_none=True)
            torch.set_num_threads(old)
            if self.device.type == "cuda":  # the stage processes that run next need the GPU's memory
                torch.cuda.empty_cache()
        return samples.median(self.clock)

