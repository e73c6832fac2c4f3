"""glibc malloc tuning: keep freed tensor memory in the process instead of returning it to the OS.

A training step frees and re-allocates the same activation buffers every iteration.
By default glibc serves large blocks with ``mmap`` and trims the heap top, so each
step page-faults its activations back in; on the development VM this made a
whole-model ResNet-110 step ~25% slower than the sum of its per-layer parts. The
profiler and every executor process call :func:`tune_malloc` so that both pay the
same (lower) allocation cost. Equivalent to starting Python with
``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=-1``.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20
"""glibc's largest allowed mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)."""
TRIM_THRESHOLD = -1
"""-1 turns heap trimming off (mallopt(3)): freed activations stay mapped for the next step."""

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


HUGEPAGE_TUNABLE = "glibc.malloc.hugetlb=1"
"""glibc ≥ 2.35: malloc asks for transparent huge pages (madvise) for its heap and mmaps."""


def _thp_available() -> bool:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as fh:
            mode = fh.read()
    except OSError:
        return False
    return "[never]" not in mode


def hugepage_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with :data:`HUGEPAGE_TUNABLE` added to ``GLIBC_TUNABLES`` (for child processes)."""
    out = dict(env)
    current = out.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb" not in current and not out.get("DDGSIM_NO_HUGEPAGES"):
        out["GLIBC_TUNABLES"] = f"{current}:{HUGEPAGE_TUNABLE}" if current else HUGEPAGE_TUNABLE
    return out


def reexec_with_hugepages(module: str) -> None:
    """Restart this interpreter as ``python -m module ...`` with huge pages for malloc, once.

    On the development VM a ResNet-110 training step ran 3× faster with them (TLB
    misses on 4 KiB pages dominated memory-bound ops such as ReLU and BatchNorm), so
    profiles and executor runs are both measured this way. glibc reads tunables only
    at process start, hence the re-exec; it happens before anything heavy is imported.
    Set ``DDGSIM_NO_HUGEPAGES=1`` to opt out. No-op off Linux or where THP is off.
    """
    import os

    if not sys.platform.startswith("linux") or os.environ.get("DDGSIM_NO_HUGEPAGES"):
        return
    if "glibc.malloc.hugetlb" in os.environ.get("GLIBC_TUNABLES", "") or not _thp_available():
        return
    env = hugepage_env(dict(os.environ))
    try:
        os.execve(sys.executable, [sys.executable, "-m", module, *sys.argv[1:]], env)
    except OSError:
        return
