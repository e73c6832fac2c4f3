"""This machine's calibrated scenario, measured once and cached beside the profiles.

``validate`` compares predictions with runs on this machine, so the links, the measured
all-reduce and the contention factor it predicts with must be this machine's too, not a
bundled file's: without ``--scenario`` it takes this machine's calibrated scenario from the
cache (``<cache>/scenarios/local-<machine key>-t<threads>.toml``), calibrating it first
(``ddgsim calibrate``, about a minute on CPU, the executor's overheads included) when there is
none, and says so.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from ddgsim.predict.scenario import Scenario
from ddgsim.profile.store import cache_dir, here_key

CAL_REPS = 20
"""Repetitions per measurement of the automatic calibration."""


def cached_path(threads: int = 1, device: str = "cpu") -> Path:
    """Where this machine's calibrated scenario is cached (it may not exist yet)."""
    # -o2: with the executor's overheads and host_slots (files from before them are calibrated again)
    return cache_dir() / "scenarios" / f"local-{device}-{here_key(device)}-t{threads}-o2.toml"


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


def widened(scenario: Scenario, devices: int) -> Scenario:
    """This machine's calibrated ``scenario`` with at least ``devices`` devices: the ones added are
    copies of its first, on the same host, joined to every other by a copy of its first link. A
    calibration lists a device per CPU (at least two); a job of more stage processes than its
    ``host_slots`` shares the cores, which the simulator models."""
    have = list(scenario.devices)
    if devices <= len(have) or not scenario.links:
        return scenario
    first, link = have[0], scenario.links[0]
    stem = first.name.rstrip("0123456789") or first.name
    taken = {d.name for d in have}
    fresh = (name for name in (f"{stem}{i}" for i in itertools.count(len(have))) if name not in taken)
    added = [replace(first, name=next(fresh)) for _ in range(devices - len(have))]
    links = list(scenario.links)
    names = [d.name for d in have]
    for d in added:
        links += [replace(link, src=other, dst=d.name) for other in names]
        names.append(d.name)
    return replace(scenario, devices=(*have, *added), links=tuple(links))
