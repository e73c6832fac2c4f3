"""A stage process's peak memory, measured: what its device's allocator handed out at most.

* **CUDA**: the caching allocator's own peak, ``torch.cuda.max_memory_allocated`` after a reset
  when the run starts — every tensor of the process on that device, temporaries included (not
  the allocator's cached-but-free blocks, nor the CUDA/NCCL context).
* **CPU**: glibc's count of bytes in allocated chunks (``mallinfo2``: ``uordblks + hblkhd``),
  read after every action (about half a microsecond a read). The stage's peak is the largest
  reading minus the one when the run started, plus the stage's parameter bytes (allocated
  before, with the whole model that every process builds). It sees everything malloc hands
  out during the run — gradients, optimizer state, saved activations, stashed weights,
  message buffers, gloo's buffers, Python objects — but not a temporary freed inside one
  action (it lives between two readings). ``None`` off glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import torch


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]


def _mallinfo2() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.mallinfo2
    except (OSError, AttributeError):  # not glibc, or glibc < 2.33
        return None
    fn.restype = _MallInfo2
    fn.argtypes = []
    return fn


_MALLINFO2 = _mallinfo2()


def malloc_in_use() -> int | None:
    """Bytes in chunks glibc's malloc has handed out and not got back (``None`` where unknown)."""
    if _MALLINFO2 is None:
        return None
    info = _MALLINFO2()
    return int(info.uordblks + info.hblkhd)


class PeakMemory:
    """Watch one process's memory from :meth:`start` on; :attr:`peak_bytes` once it ran."""

    def __init__(self, device: torch.device, base_bytes: int = 0) -> None:
        self.device = device
        self.base_bytes = base_bytes
        """Bytes the run holds from before the start (CPU: the stage's parameters)."""
        self.cuda = device.type == "cuda"
        self.start_in_use: int | None = None
        self.most: int | None = None

    @property
    def method(self) -> str:
        if self.cuda:
            return "torch.cuda.max_memory_allocated (caching allocator's peak, reset at the start of the run)"
        return ("glibc mallinfo2 bytes in use, read after every action: peak minus the reading at the start, "
                "plus the stage's parameters")

    def start(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        self.start_in_use = self.most = malloc_in_use()

    def sample(self) -> None:
        if self.cuda or self.most is None:
            return
        now = malloc_in_use()
        if now is not None and now > self.most:
            self.most = now

    @property
    def peak_bytes(self) -> int | None:
        if self.cuda:
            return int(torch.cuda.max_memory_allocated(self.device))
        if self.most is None or self.start_in_use is None:
            return None
        return self.base_bytes + self.most - self.start_in_use
