"""Atomic output files with the permissions any other tool would give them.

Every file ddgsim writes goes to a temporary file in the target's folder and is renamed
into place (``os.replace``), so a crash or a full disk never leaves a half-written plan,
profile, trace or checkpoint. ``tempfile.mkstemp`` creates its file 0600; the result is
set to ``0666 & ~umask`` (0644 under the usual umask 022), as ``open(path, "w")`` would.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


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

