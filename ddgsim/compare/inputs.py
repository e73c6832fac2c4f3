"""What a validation predicts with: the profile and the scenario (this machine's, cached or measured
now), the contention of two processes training the model, and what is doubtful about the profile."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ddgsim.compare.config import ConfigError, ValidateConfig
from ddgsim.plan.records import ProfileRef
from ddgsim.predict.scenario import Scenario, load_scenario
from ddgsim.profile.format import Profile


@dataclass(frozen=True, kw_only=True)
class Inputs:
    """The profile and the scenario of one validation, and where they came from."""

    profile: Profile
    profile_path: Path | None
    """The profile's file (``None``: measured now and not cached)."""
    source: str
    """``file`` (given), ``cache`` or ``measured`` (now, on this machine)."""
    scenario: Scenario
    scenario_ref: str
    """How the plans name the scenario: the name or file asked for, or this machine's cached one."""
    contention: str = ""
    """How fast two processes training the model run at once, as predicted with (empty: not measured)."""
    warning: str | None = None
    """:func:`profile_warning`'s line, if any."""

    @property
    def profile_ref(self) -> ProfileRef:
        """How the plans name the profile."""
        return ProfileRef.of(self.profile, self.profile_path)


def measured_counts(config: ValidateConfig) -> tuple[int, ...]:
    """The micro-batch counts whose costs the profile needs: every M asked for, and the share of
    a replica (one of D, or of M·D, micro-batches; measured like micro-batches)."""
    micro = config.micro_batches if config.micro_schedules else ()
    replicas = config.replicas
    shards = sorted({D for D in replicas if D > 1} | {m * D for m in micro for D in replicas if D > 1})
    return tuple(sorted(set(micro) | set(shards)))


def gather(config: ValidateConfig, warn: Callable[[str], None]) -> Inputs:
    """The scenario, then the profile (a :class:`ConfigError` when a given one is for another model or
    batch), their warning and, on CPU without a scenario asked for, the model's own contention."""
    scenario_ref = config.scenario or default_scenario(config.device, config.processes, config.threads,
                                                       config.reprofile, warn)
    scenario = load_scenario(scenario_ref)
    if config.device == "cpu" and not config.scenario and config.processes > len(scenario.devices):
        from ddgsim.calibrate.local_scenario import widened

        scenario = widened(scenario, config.processes)
        warn(f"{config.processes} stage processes on this machine's {os.cpu_count() or 1} CPUs "
             f"({config.threads} thread(s) each) share its cores: the simulator runs at most "
             f"{scenario.host_slots or config.processes} at full speed at once (the scenario's host_slots)")
    counts = measured_counts(config)
    prof, path, source = _profile(config, counts, warn)
    warning = profile_warning(prof, str(path or config.profile or ""), counts)
    if warning:
        warn(warning)
    contention = ""
    if config.device == "cpu" and not config.scenario and config.processes > 1:
        # cached beside this machine's profile in the cache, never beside a file the user gave
        scenario, contention = with_model_contention(scenario, config.model, config.batch_size, config.threads,
                                                     path if source != "file" else None, config.reprofile, warn)
    return Inputs(profile=prof, profile_path=path, source=source, scenario=scenario, scenario_ref=scenario_ref,
                  contention=contention, warning=warning)


def _profile(config: ValidateConfig, counts: Sequence[int],
             warn: Callable[[str], None]) -> tuple[Profile, Path | None, str]:
    """(profile, its file, source): the file given, else this machine's (cached, or measured now)."""
    if config.profile:
        from ddgsim.profile import format as profile_format

        prof = profile_format.load(config.profile)
        if prof.model != config.model or prof.batch_size != config.batch_size:
            raise ConfigError("profile", f" {config.profile} is for {prof.model} at batch {prof.batch_size}, "
                                         f"not {config.model} at batch {config.batch_size}")
        return prof, Path(config.profile), "file"
    from ddgsim.profile.store import get_profile

    # A measurement of this machine is compared with, so only its own profile will do. On CPU with
    # one thread it is timed with the thread's CPU clock: time the hypervisor steals is not in it.
    cpu = config.device == "cpu"
    prof, path, source = get_profile(config.model, config.batch_size, config.device,
                                     threads=config.threads if cpu else None, micro_batches=counts,
                                     this_machine=True, remeasure=config.reprofile,
                                     clock="thread" if cpu and config.threads == 1 else "wall")
    if source == "measured":
        warn(f"profiled {config.model} at batch {config.batch_size} on this machine"
             + (f" (and {', '.join(map(str, counts))} micro-batches)" if counts else "") + f"; cached as {path}")
    return prof, path, source


def default_scenario(device: str, processes: int, threads: int, recalibrate: bool,
                     warn: Callable[[str], None]) -> str:
    """On CPU this machine's calibrated scenario (calibrated now if not cached); on CUDA ideal-K."""
    if device != "cpu":
        return f"ideal-{processes}"
    from ddgsim.calibrate.local_scenario import local_scenario

    path, measured = local_scenario(threads, recalibrate=recalibrate)
    if measured:
        warn(f"calibrated this machine (links, all-reduce, contention); cached as {path}")
    return str(path)


def with_model_contention(scenario: Scenario, model: str, batch_size: int, threads: int, profile_path: Path | None,
                          remeasure: bool, warn: Callable[[str], None]) -> tuple[Scenario, str]:
    """This machine's scenario with the concurrent speed of two processes training ``model``
    (:mod:`ddgsim.calibrate.corun`; cached beside ``profile_path`` when given), and a line saying so; where
    the measurement fails, the scenario as it is and a warning."""
    from ddgsim.calibrate.corun import cached_corun

    cache = profile_path.with_name(profile_path.stem + ".corun.json") if profile_path is not None else None
    try:
        corun, measured = cached_corun(model, batch_size, threads, cache, remeasure=remeasure)
    except RuntimeError as exc:  # a side measurement: the calibration's figure stands in
        line = (f"warning: {exc}; predicting with the calibration's concurrent_speed "
                f"{scenario.concurrent_speed:g}")
        warn(line)
        return scenario, line
    speed = min(1.0, round(corun.speed, 3))
    line = (f"two processes training {model} at batch {batch_size} at once: each at {corun.speed:.3f} of its speed "
            f"alone (rounds {', '.join(f'{x:.3f}' for x in corun.speeds)}; the calibration's reference kernel: "
            f"{scenario.concurrent_speed:.3f}); predicting with concurrent_speed {speed:g}")
    if measured:
        warn(line + (f"; cached as {cache}" if cache is not None else ""))
    return replace(scenario, concurrent_speed=speed), line


LOADED_CPUS = 0.25
"""A profile during which other processes kept more than this many CPUs busy, on average, was
measured under load (:func:`ddgsim.profile.machine.other_load`)."""


def profile_warning(profile: Profile, where: str = "", micro_batches: Sequence[int] = ()) -> str | None:
    """A line when the profile describes another machine, was measured under load or not with 1 thread,
    or lacks measured costs for a micro-batch count to validate."""
    from ddgsim.profile.machine import provenance_note

    meta = profile.meta
    load = meta.get("loadavg_before") or meta.get("loadavg_after")
    cpus = os.cpu_count() or 1
    notes = []
    foreign = provenance_note(profile, where or profile.model)
    if foreign:
        notes.append(foreign.removeprefix("note: "))
    other = meta.get("other_load")
    if isinstance(other, (int, float)):  # measured over the profile itself
        if other > LOADED_CPUS:
            notes.append(f"measured under load (other processes kept {other:.1f} of {cpus} CPUs busy)")
    elif isinstance(load, list) and load and float(load[0]) > 0.5 * cpus:  # profiles from before: the load average
        notes.append(f"measured under load (load average {load[0]} on {cpus} CPUs)")
    if profile.threads != 1:
        notes.append(f"measured with {profile.threads} threads, the executor runs 1 per stage")
    off = profile.rows_disagree()
    if off:
        notes.append(off)
    missing = [m for m in micro_batches if profile.micro_costs(m) is None]
    if missing:
        notes.append(f"no measured costs for {', '.join(map(str, missing))} micro-batches (1/M of the batch is used)")
    if not notes:
        return None
    return (f"warning: profile of {profile.model} at batch {profile.batch_size}: " + "; ".join(notes)
            + ". Re-profile on a quiet machine: "
            f"python -m ddgsim profile {profile.model} --batch-size {profile.batch_size} --threads 1 --no-cache "
            + (f"--micro-batches {','.join(map(str, micro_batches))} " if micro_batches else "")
            + "--out FILE, then --profile FILE")
