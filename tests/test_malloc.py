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


def _profile_via(cmd: list[str], out: str, env: dict[str, str]) -> dict[str, object]:
    import json

    subprocess.run([*cmd, "profile", "mlp", "--batch-size", "2", "--reps", "1", "--no-cache", "--no-progress",
                    "--out", out], check=True, capture_output=True, env=env)
    with open(out) as fh:
        data: dict[str, object] = json.load(fh)
    return data


@pytest.mark.slow
def test_both_entry_points_set_up_the_allocator_the_same_way(tmp_path: os.PathLike[str]) -> None:
    """The ``ddgsim`` console script and ``python -m ddgsim`` measure with the same malloc settings."""
    import shutil
    from pathlib import Path

    script = Path(sys.executable).with_name("ddgsim")
    if not script.is_file():
        found = shutil.which("ddgsim")
        if found is None:
            pytest.skip("the ddgsim console script is not installed")
        script = Path(found)
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "DDGSIM_NO_HUGEPAGES")}
    env["DDGSIM_CACHE_DIR"] = str(Path(tmp_path) / "cache")
    a = _profile_via([str(script)], str(Path(tmp_path) / "a.json"), env)
    b = _profile_via([sys.executable, "-m", "ddgsim"], str(Path(tmp_path) / "b.json"), env)
    machine_a, machine_b = a["machine"], b["machine"]
    assert isinstance(machine_a, dict) and isinstance(machine_b, dict)
    keys = ("hugepages", "malloc_tuned")
    assert {k: machine_a[k] for k in keys} == {k: machine_b[k] for k in keys}
    meta_a, meta_b = a["meta"], b["meta"]
    assert isinstance(meta_a, dict) and isinstance(meta_b, dict)
    assert meta_a["malloc_env"] == meta_b["malloc_env"]
    assert machine_a["malloc_tuned"] is True or not sys.platform.startswith("linux")
    if sys.platform.startswith("linux") and malloc._thp_available():
        assert machine_a["hugepages"] is True
