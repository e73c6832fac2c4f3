"""Where profiles come from: bundled with the package, cached, or measured once and cached.

Torch-free at import time: planning on a bundled profile never imports torch; the
profiler is imported only when a measurement is needed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path

from ddgsim.errors import UserError
from ddgsim.profile import format as profile_format
from ddgsim.profile.format import Profile

DEFAULT_REPS = 5
"""Timed repetitions per unit when a profile has to be measured."""


def profile_name(model: str, batch_size: int, device: str = "cpu", threads: int | None = 1,
                 input_shape: Sequence[int] | None = None) -> str:
    """File name ``{model}-b{batch}-{device}-t{threads}.json`` (no ``-t`` when threads is None).

    A model given as an import path is made file-name safe; a non-default input shape
    adds ``-i{C}x{H}x{W}`` so it never collides with the default one.
    """
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", model)
    name = f"{safe}-b{batch_size}-{device}"
    if threads is not None:
        name += f"-t{threads}"
    if input_shape is not None:
        name += "-i" + "x".join(str(int(d)) for d in input_shape)
    return name + ".json"


def bundled_dir() -> Path:
    """``ddgsim/scenarios/profiles`` inside the installed ``scenarios`` package."""
    return Path(str(files("ddgsim.scenarios"))) / "profiles"


def cache_dir() -> Path:
    """``$DDGSIM_CACHE_DIR`` if set, else ``~/.cache/ddgsim/profiles``."""
    env = os.environ.get("DDGSIM_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "ddgsim" / "profiles"


def _load_matching(path: Path, model: str, batch_size: int, device: str,
                   threads: int | None, input_shape: Sequence[int] | None = None) -> Profile | None:
    """The profile at ``path`` if it exists, is valid and answers this request."""
    if not path.is_file():
        return None
    try:
        prof = profile_format.load(path)
    except UserError:
        return None
    key = (prof.model, prof.batch_size, prof.device, prof.threads)
    if input_shape is not None and list(prof.input_shape) != list(input_shape):
        return None
    return prof if key == (model, batch_size, device, threads) else None


def _candidates(model: str, batch_size: int, device: str, threads: int | None,
                input_shape: Sequence[int] | None) -> list[tuple[Path, str]]:
    name = profile_name(model, batch_size, device, threads, input_shape)
    return [(bundled_dir() / name, "bundled"), (cache_dir() / name, "cache")]


def _default_shape(model: str, input_shape: Sequence[int] | None) -> tuple[int, ...] | None:
    """``None`` when ``input_shape`` is the model's own (the file name then omits it)."""
    if input_shape is None:
        return None
    from ddgsim.models.registry import MODELS

    spec = MODELS.get(model)
    if spec is not None and tuple(input_shape) == spec.input_shape:
        return None
    return tuple(int(d) for d in input_shape)


def find_profile(model: str, batch_size: int, device: str = "cpu", threads: int | None = 1, *,
                 input_shape: Sequence[int] | None = None) -> Path | None:
    """The bundled profile for this request, else the cached one, else ``None``.

    A file whose content does not match the request (or is malformed) is skipped.
    """
    shape = _default_shape(model, input_shape)
    for path, _source in _candidates(model, batch_size, device, threads, shape):
        if _load_matching(path, model, batch_size, device, threads, shape) is not None:
            return path
    return None


def get_profile(model: str, batch_size: int, device: str = "cpu", threads: int | None = 1,
                reps: int = DEFAULT_REPS, progress: bool = True, *,
                input_shape: Sequence[int] | None = None, cache: bool = True,
                command: str | None = None, clock: str = "wall") -> tuple[Profile, Path | None, str]:
    """Return ``(profile, path, source)``; source is ``"bundled"``, ``"cache"`` or ``"measured"``.

    The same (model, batch size, device, threads) request is measured once: a
    measurement is written to the cache (atomically) and found there next time.
    ``cache=False`` always measures and writes nothing (path is then ``None``).
    ``input_shape`` overrides the model's own (user models); it is part of the cache key.
    ``reps`` and ``clock`` only matter when measuring; they are not part of the key.
    """
    shape = _default_shape(model, input_shape)
    if cache:
        for path, source in _candidates(model, batch_size, device, threads, shape):
            found = _load_matching(path, model, batch_size, device, threads, shape)
            if found is not None:
                return found, path, source
    prof = measure(model, batch_size, device, threads, reps, progress,
                   input_shape=input_shape, command=command, clock=clock)
    if not cache:
        return prof, None, "measured"
    path = cache_dir() / profile_name(model, batch_size, device, threads, shape)
    try:
        prof.save(path)
    except OSError as exc:
        raise UserError(f"cannot write profile cache {path}: {exc.strerror or exc}") from None
    return prof, path, "measured"


def measure(model: str, batch_size: int, device: str = "cpu", threads: int | None = 1,
            reps: int = DEFAULT_REPS, progress: bool = True, *,
            input_shape: Sequence[int] | None = None, command: str | None = None,
            clock: str = "wall") -> Profile:
    """Build the model (seed 0) and profile it; imports torch and the profiler lazily."""
    from ddgsim.models.registry import build_model, get_spec
    from ddgsim.profile import measure as profiler

    spec = get_spec(model)
    shape = tuple(input_shape) if input_shape is not None else spec.input_shape
    return profiler.profile_model(
        build_model(spec), name=model, input_shape=shape, batch_size=batch_size,
        device=device, threads=threads, reps=reps, progress=progress, command=command, clock=clock,
    )
