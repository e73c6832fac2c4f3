"""Allocator settings shared by the profiler and the executor processes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ddgsim import malloc


def test_hugepage_env_adds_the_tunable_once() -> None:
    env = malloc.hugepage_env({})
    assert env["GLIBC_TUNABLES"] == malloc.HUGEPAGE_TUNABLE
    assert malloc.hugepage_env(env) == env
    both = malloc.hugepage_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert both["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{malloc.HUGEPAGE_TUNABLE}"
    assert "GLIBC_TUNABLES" not in malloc.hugepage_env({"DDGSIM_NO_HUGEPAGES": "1"})


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_cli_reexecs_with_huge_pages() -> None:
    """``python -m ddgsim`` restarts itself once with the tunable (when THP is available)."""
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "DDGSIM_NO_HUGEPAGES")}
    out = subprocess.run(
        [sys.executable, "-c", "import sys; sys.argv=['ddgsim']; "
         "from ddgsim.malloc import reexec_with_hugepages as r; r('ddgsim_probe')"],
        capture_output=True, text=True, env=env, check=False,
    )
    # The re-exec target module does not exist: a re-exec shows up as that import error.
    if malloc._thp_available():
        assert "No module named ddgsim_probe" in out.stderr
    else:
        assert out.returncode == 0


def test_tune_malloc_is_idempotent() -> None:
    first = malloc.tune_malloc()
    assert malloc.tune_malloc() == first
