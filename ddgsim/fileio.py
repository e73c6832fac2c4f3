"""Atomic output files with the permissions any other tool would give them; JSON files in and out.

Every file ddgsim writes goes to a temporary file in the target's folder and is renamed
into place (``os.replace``), so a crash or a full disk never leaves a half-written plan,
profile, trace or checkpoint. ``tempfile.mkstemp`` creates its file 0600; the result is
set to ``0666 & ~umask`` (0644 under the usual umask 022), as ``open(path, "w")`` would.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from ddgsim.errors import FileError, malformed


def default_mode() -> int:
    """``0o666`` minus the process's umask (read without changing it for long)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", *, fsync: bool = False,
                before_replace: Callable[[], None] | None = None, **kwargs: Any) -> Iterator[IO[Any]]:
    """``with atomic_open(p) as f: f.write(...)``: ``p`` appears complete or not at all.

    ``mode`` is ``"w"`` or ``"wb"``; ``kwargs`` go to :func:`os.fdopen` (``newline=""`` for CSV).
    ``fsync`` flushes to disk before the rename (checkpoints). ``before_replace`` runs with the
    data written but not yet in place (tests' fault injection).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, default_mode())
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            if before_replace is not None:
                before_replace()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise



def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    """Write JSON to ``path`` atomically (:func:`atomic_open`), mode 0644 under umask 022."""
    with atomic_open(path) as fh:
        json.dump(data, fh, indent=1)
        fh.write("\n")


def read_json(path: str | os.PathLike[str], kind: str) -> Any:
    """Decode a JSON file; an unreadable or non-JSON file is a :class:`~ddgsim.errors.FileError` naming ``kind``."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise FileError(f"cannot read {kind} {p}: {exc.strerror or exc}", kind=kind, where=str(p)) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise malformed(kind, str(p), f"not JSON ({exc.msg} at line {exc.lineno})") from None
