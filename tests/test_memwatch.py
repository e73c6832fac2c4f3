"""Peak memory as a stage process measures it (ddgsim.execute.memwatch)."""

from __future__ import annotations

import pytest
import torch

from ddgsim.execute.memwatch import PeakMemory, malloc_in_use

pytestmark = pytest.mark.skipif(malloc_in_use() is None, reason="needs glibc's mallinfo2")


def test_the_peak_between_readings_is_what_was_allocated_since_the_start() -> None:
    watch = PeakMemory(torch.device("cpu"), base_bytes=1000)
    watch.start()
    assert watch.peak_bytes is not None and abs(watch.peak_bytes - 1000) < 2**20
    big = torch.ones(10 * 2**20 // 4)  # 10 MiB
    watch.sample()
    del big
    small = torch.ones(2**20 // 4)  # 1 MiB, after the 10 MiB were freed
    watch.sample()
    assert watch.peak_bytes is not None
    assert abs(watch.peak_bytes - 1000 - 10 * 2**20) < 2**20  # the largest reading, not the last
    del small
    assert "mallinfo2" in watch.method


def test_a_temporary_freed_between_two_readings_is_not_seen() -> None:
    watch = PeakMemory(torch.device("cpu"))
    watch.start()
    tmp = torch.ones(10 * 2**20 // 4)
    del tmp
    watch.sample()
    assert watch.peak_bytes is not None and watch.peak_bytes < 2**20
