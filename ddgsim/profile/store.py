"""Where profiles come from: bundled with the package, cached, or measured once and cached.

Every profile records the machine it describes (:mod:`ddgsim.profile.machine`) and
how it was measured. Commands that compare with this machine (``profile``,
``validate``) reuse a file only when both match and measure otherwise; commands that
only predict (``plan``, ``simulate``) take the best file for the request from any
machine and say whose figures they are.

Torch-free at import time: planning on a bundled profile never imports torch; the
profiler is imported only when a measurement is needed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from ddgsim.errors import UserError
from ddgsim.profile import format as profile_format
from ddgsim.profile.format import Profile

DEFAULT_REPS = 5
"""Timed repetitions per unit when a profile has to be measured."""


def profile_name(model: str, batch_size: int, device: str = "cpu", threads: int | None = 1,
                 input_shape: Sequence[int] | None = None, vocab: int | None = None) -> str:
    """File name ``{model}-b{batch}-{device}-t{threads}.json`` (no ``-t`` when threads is None).

    A model given as an import path is made file-name safe; a non-default input shape
    adds ``-i{C}x{H}x{W}`` and a non-default vocabulary ``-v{vocab}``, so they never
    collide with the model's own declaration.
    """
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", model)
    name = f"{safe}-b{batch_size}-{device}"
    if threads is not None:
        name += f"-t{threads}"
    if input_shape is not None:
        name += "-i" + "x".join(str(int(d)) for d in input_shape)
    if vocab is not None:
        name += f"-v{vocab}"
    return name + ".json"


def bundled_dir() -> Path:
    """``ddgsim/scenarios/profiles`` inside the installed ``scenarios`` package."""
    return Path(str(files("ddgsim.scenarios"))) / "profiles"


def cache_dir() -> Path:
    """``$DDGSIM_CACHE_DIR`` if set, else ``~/.cache/ddgsim/profiles``."""
    env = os.environ.get("DDGSIM_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "ddgsim" / "profiles"


def _load(path: Path) -> Profile | None:
    try:
        return profile_format.load(path) if path.is_file() else None
    except UserError:
        return None


@dataclass(frozen=True)
class Inputs:
    """A command line's override of the model's input declaration (``--input-shape``, ``--vocab``);
    only what differs from the model's own is kept, so the default request has no override."""

    shape: tuple[int, ...] | None = None
    vocab: int | None = None

    @classmethod
    def of(cls, model: str, input_shape: Sequence[int] | None, vocab: int | None) -> Inputs:
        from ddgsim.models.registry import zoo_spec

        spec = zoo_spec(model)
        shape = tuple(int(d) for d in input_shape) if input_shape is not None else None
        if spec is not None and shape == spec.input_shape:
            shape = None
        if spec is not None and vocab is not None and vocab == spec.io.vocab:
            vocab = None
        return cls(shape, vocab)

    def name(self, model: str, batch_size: int, device: str, threads: int | None) -> str:
        return profile_name(model, batch_size, device, threads, self.shape, self.vocab)

    def matches(self, prof: Profile) -> bool:
        if self.shape is not None and list(prof.input_shape) != list(self.shape):
            return False
        return self.vocab is None or prof.vocab == self.vocab


def _settings_match(prof: Profile, model: str, batch_size: int, device: str, threads: int | None,
                    inputs: Inputs) -> bool:
    """Same model, batch size, device, threads and (when overridden) sample shape and vocabulary."""
    if not inputs.matches(prof):
        return False
    return (prof.model, prof.batch_size, prof.device, prof.threads) == (model, batch_size, device, threads)


@dataclass(frozen=True, kw_only=True)
class Measurement:
    """How a profile is measured: everything besides the request and the machine that changes its figures."""

    method: str = "in-situ"
    clock: str = "wall"
    reps: int = DEFAULT_REPS
    micro_batches: tuple[int, ...] = ()
    """Micro-batch counts whose per-micro-batch costs the profile must hold (a superset will do)."""

    def satisfied_by(self, prof: Profile) -> bool:
        """Same method and clock, at least as many reps, every micro-batch count asked for."""
        got = prof.measurement or {}
        same = (got.get("method"), got.get("clock")) == (self.method, self.clock)
        reps = got.get("reps")
        enough = isinstance(reps, int) and reps >= self.reps
        return same and enough and all(prof.micro_costs(m) is not None for m in self.micro_batches)


def here_key(device: str = "cpu") -> str:
    """:func:`ddgsim.profile.machine.machine_key` of this machine (the GPU's when ``device`` is cuda)."""
    from ddgsim.profile.machine import fingerprint, machine_key

    return machine_key(fingerprint(device))


def is_exact(prof: Profile, how: Measurement, key: str) -> bool:
    """Measured on the machine with ``key``, the way ``how`` asks (a profile to reuse instead of measuring)."""
    return prof.machine_key == key and prof.dtype == "float32" and how.satisfied_by(prof)


def _cache_name(model: str, batch_size: int, device: str, threads: int | None, inputs: Inputs,
                how: Measurement, key: str) -> str:
    """``{profile_name}-{12 hex}`` with a hash of the machine and the measurement settings."""
    import hashlib

    tag = f"{key}|{how.method}|{how.clock}|{how.reps}|{','.join(map(str, how.micro_batches))}"
    digest = hashlib.sha256(tag.encode()).hexdigest()[:12]
    return inputs.name(model, batch_size, device, threads).removesuffix(".json") + f"-{digest}.json"


def _cached(model: str, batch_size: int, device: str, threads: int | None,
            inputs: Inputs) -> list[tuple[Path, Profile]]:
    """Valid cached profiles for the request, newest first (any machine, any measurement)."""
    stem = inputs.name(model, batch_size, device, threads).removesuffix(".json")
    found = []
    folder = cache_dir()
    named = re.compile(re.escape(stem) + r"(-[0-9a-f]{12})?\.json")
    paths = sorted((p for p in folder.glob(f"{stem}*.json") if named.fullmatch(p.name)),
                   key=lambda p: p.stat().st_mtime, reverse=True) if folder.is_dir() else []
    for path in paths:
        prof = _load(path)
        if prof is not None and _settings_match(prof, model, batch_size, device, threads, inputs):
            found.append((path, prof))
    return found


def bundled_profile(model: str, batch_size: int, device: str, threads: int | None,
                    inputs: Inputs | None = None) -> tuple[Path, Profile] | None:
    """The profile shipped with ddgsim for this request (any machine), or ``None``."""
    inputs = inputs or Inputs()
    path = bundled_dir() / inputs.name(model, batch_size, device, threads)
    prof = _load(path)
    if prof is None or not _settings_match(prof, model, batch_size, device, threads, inputs):
        return None
    return path, prof


def find_profile(model: str, batch_size: int, device: str = "cpu", threads: int | None = 1, *,
                 input_shape: Sequence[int] | None = None, vocab: int | None = None) -> Path | None:
    """A profile for this request to predict with, from any machine: this machine's newest cached one,
    else the bundled one, else any cached one; ``None`` if there is none. Malformed files are skipped."""
    found = lookup(model, batch_size, device, threads, input_shape=input_shape, vocab=vocab)
    return found[0] if found else None


def lookup(model: str, batch_size: int, device: str = "cpu", threads: int | None = 1, *,
           input_shape: Sequence[int] | None = None, vocab: int | None = None, how: Measurement | None = None,
           key: str | None = None) -> tuple[Path, Profile, str] | None:
    """``(path, profile, source)`` without measuring.

    With ``how``: only a profile measured on this machine (``key``, default this one's) that
    way — an exact match, cached or bundled. Without: what :func:`find_profile` describes.
    """
    inputs = Inputs.of(model, input_shape, vocab)
    key = key or here_key(device)
    cached = _cached(model, batch_size, device, threads, inputs)
    bundled = bundled_profile(model, batch_size, device, threads, inputs)
    pool = [(p, prof, "cache") for p, prof in cached] + ([(*bundled, "bundled")] if bundled else [])
    if how is not None:
        return next((c for c in pool if is_exact(c[1], how, key)), None)
    ours = [c for c in pool if c[1].machine_key == key]
    ordered = ours + [c for c in pool if c[2] == "bundled"] + pool
    return ordered[0] if ordered else None


def get_profile(model: str, batch_size: int, device: str = "cpu", threads: int | None = 1,
                reps: int = DEFAULT_REPS, progress: bool = True, *,
                input_shape: Sequence[int] | None = None, vocab: int | None = None, cache: bool = True,
                command: str | None = None, clock: str = "wall", method: str = "in-situ",
                micro_batches: Sequence[int] = (), this_machine: bool = False,
                remeasure: bool = False) -> tuple[Profile, Path | None, str]:
    """Return ``(profile, path, source)``; source is ``"bundled"``, ``"cache"`` or ``"measured"``.

    ``this_machine=True`` (profile, validate: a measurement of this machine is needed): reuse
    only a profile measured here with the same method and clock, at least ``reps`` repetitions
    and (at least) the micro-batch counts asked for; otherwise measure, write the result to the cache
    (atomically, under a name that hashes all of that) and return it.
    ``this_machine=False`` (plan, simulate: figures to predict with): the best profile for
    the request from any machine (:func:`lookup`), measuring only when there is none; the
    caller says whose machine it describes (:func:`ddgsim.profile.machine.provenance_note`).
    ``cache=False`` always measures and writes nothing (path is then ``None``); ``remeasure``
    always measures and writes the cache.
    ``input_shape`` and ``vocab`` (token ids in ``[0, vocab)``) override the model's own
    declaration (user models); they are part of the key.
    """
    inputs = Inputs.of(model, input_shape, vocab)
    how = Measurement(method=method, clock=clock, reps=reps, micro_batches=tuple(sorted(set(micro_batches))))
    key = here_key(device)
    kind = device.split(":", 1)[0]  # cuda:1 measures on that GPU; the profile is a "cuda" one
    if cache and not remeasure:
        found = lookup(model, batch_size, kind, threads, input_shape=input_shape, vocab=vocab,
                       how=how if this_machine else None, key=key)
        if found is not None:
            return found[1], found[0], found[2]
    prof = measure(model, batch_size, device, threads, reps, progress, input_shape=input_shape, vocab=vocab,
                   command=command, clock=clock, method=method, micro_batches=how.micro_batches)
    if not cache:
        return prof, None, "measured"
    path = cache_dir() / _cache_name(model, batch_size, kind, threads, inputs, how, prof.machine_key or key)
    try:
        prof.save(path)
    except OSError as exc:
        raise UserError(f"cannot write profile cache {path}: {exc.strerror or exc}") from None
    return prof, path, "measured"


def measure(model: str, batch_size: int, device: str = "cpu", threads: int | None = 1,
            reps: int = DEFAULT_REPS, progress: bool = True, *,
            input_shape: Sequence[int] | None = None, vocab: int | None = None, command: str | None = None,
            clock: str = "wall", method: str = "in-situ", micro_batches: Sequence[int] = ()) -> Profile:
    """Build the model (seed 0) and profile it; imports torch and the profiler lazily."""
    from ddgsim.models.registry import build_model, get_spec
    from ddgsim.profile import measure as profiler

    spec = get_spec(model)
    io = spec.io.with_overrides(input_shape=input_shape, vocab=vocab)
    return profiler.profile_model(
        build_model(spec), name=model, io=io, batch_size=batch_size,
        device=device, threads=threads, reps=reps, progress=progress, command=command, clock=clock,
        method=method, micro_batches=micro_batches,
    )
