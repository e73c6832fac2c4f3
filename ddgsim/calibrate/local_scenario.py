"""This machine's calibrated scenario, measured once and cached beside the profiles.

``validate`` compares predictions with runs on this machine, so the links, the measured
all-reduce and the contention factor it predicts with must be this machine's too, not a
bundled file's: without ``--scenario`` it takes this machine's calibrated scenario from the
cache (``<cache>/scenarios/local-<machine key>-t<threads>.toml``), calibrating it first
(``ddgsim calibrate``, about a minute on CPU, the executor's overheads included) when there is
none, and says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ddgsim.profile.store import cache_dir, here_key

CAL_REPS = 20
"""Repetitions per measurement of the automatic calibration."""


def cached_path(threads: int = 1, device: str = "cpu") -> Path:
    """Where this machine's calibrated scenario is cached (it may not exist yet)."""
    # -o1: with the executor's overheads (files from before them are calibrated again)
    return cache_dir() / "scenarios" / f"local-{device}-{here_key(device)}-t{threads}-o1.toml"


def local_scenario(threads: int = 1, device: str = "cpu", *, recalibrate: bool = False,
                   sizes: Sequence[int] | None = None, reps: int = CAL_REPS) -> tuple[Path, bool]:
    """(path, calibrated now): this machine's cached scenario, calibrated first if missing or
    ``recalibrate``."""
    from ddgsim.calibrate.measure import SIZES, measure, write_scenario

    path = cached_path(threads, device)
    if path.is_file() and not recalibrate:
        return path, False
    cal = measure(device, SIZES if sizes is None else sizes, reps, threads)
    write_scenario(cal, path, name="local",
                   command=f"ddgsim validate (automatic calibration of this machine, {reps} reps)")
    return path, True
