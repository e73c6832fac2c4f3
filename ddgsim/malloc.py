"""glibc malloc tuning: keep freed tensor memory in the process instead of returning it to the OS.

A training step frees and re-allocates the same activation buffers every iteration.
By default glibc serves large blocks with ``mmap`` and trims the heap top, so each
step page-faults its activations back in; on the development VM this made a
whole-model ResNet-110 step ~25% slower than the sum of its per-layer parts. The
profiler and every executor process call :func:`tune_malloc` so that both pay the
same (lower) allocation cost. Equivalent to starting Python with
``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=2147483647``.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20
"""glibc's largest allowed mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)."""
TRIM_THRESHOLD = 2**31 - 1
"""mallopt takes an int: the largest value means "practically never trim"."""

_state: dict[str, bool] = {}


def tune_malloc() -> bool:
    """Apply the settings once per process; return whether they are in effect (glibc only)."""
    if "done" in _state:
        return _state["done"]
    ok = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6")
            ok = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
                libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
            )
        except (OSError, AttributeError):
            ok = False
    _state["done"] = ok
    return ok
