"""Step 1 — profile: cut a model into units and measure what each costs on this machine.

``units`` (torch.fx + dominators: legal cut points) → ``measure`` (per-unit forward,
backward, update times and bytes, from real PyTorch runs) → ``format`` (the
``ddgsim-profile/1`` file) ← ``store`` (bundled and cached profiles). This machine's links
and overheads are measured by :mod:`ddgsim.calibrate`, above the executor.
"""
