"""The foundation commands through ``ddgsim.cli.main``: output, and one-line errors that write nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from ddgsim.cli import main
from ddgsim.profile.format import load


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """One thread, seeded, and the profile cache in a temp dir."""
    monkeypatch.setenv("DDGSIM_CACHE_DIR", str(tmp_path / "cache"))
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(old)


def test_models_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("resnet20", "resnet110", "resnet1202", "mlp", "smallcnn"):
        assert name in out
    assert "1,727,962" in out and "19,421,274" in out


def test_units_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["units", "resnet20"]) == 0
    out = capsys.readouterr().out
    assert "15 units" in out and "layer3.2" in out and "64x8x8" in out
    assert main(["units", "ddgsim.models.small:smallcnn", "--input-shape", "1,8,8"]) == 0
    assert "9 units" in capsys.readouterr().out


def test_profile_writes_out_and_cache(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p.json"
    args = ["profile", "mlp", "--batch-size", "4", "--reps", "1", "--no-progress", "--out", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "sum of rows" in text and "whole model" in text and "sum/whole" in text
    prof = load(out)
    assert (prof.model, prof.batch_size, prof.threads, prof.num_units) == ("mlp", 4, 1, 6)
    (cached,) = (tmp_path / "cache").glob("mlp-b4-cpu-t1-*.json")
    assert load(cached) == prof
    # Second time: served from the cache, same numbers.
    out2 = tmp_path / "p2.json"
    assert main([*args[:-1], str(out2)]) == 0
    assert "(cache, in-situ timing)" in capsys.readouterr().out
    assert json.loads(out2.read_text()) == json.loads(out.read_text())


def test_profile_no_cache_writes_only_out(tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    assert main(["profile", "smallcnn", "--batch-size", "2", "--reps", "1", "--no-progress",
                 "--no-cache", "--out", str(out)]) == 0
    assert load(out).num_units == 9
    assert not (tmp_path / "cache").exists()


def _bad_cases(tmp_path: Path) -> list[tuple[list[str], str]]:
    out = str(tmp_path / "out" / "p.json")
    cases = [
        (["profile", "resnet111", "--batch-size", "4"], "unknown model 'resnet111'"),
        (["profile", "mlp", "--batch-size", "0"], "--batch-size must be > 0"),
        (["profile", "mlp", "--batch-size", "-3"], "--batch-size must be > 0"),
        (["profile", "mlp", "--batch-size", "4", "--threads", "0"], "--threads must be > 0"),
        (["profile", "mlp", "--batch-size", "4", "--reps", "0"], "--reps must be > 0"),
        (["profile", "mlp", "--batch-size", "4", "--clock", "thread", "--threads", "2"], "--clock thread"),
        (["profile", "no_such_pkg_ddgsim:f", "--batch-size", "4"], "cannot import module"),
        (["profile", "ddgsim.models.small:nope", "--batch-size", "4"], "has no attribute 'nope'"),
        (["profile", "os:getcwd", "--batch-size", "4"], "must return a torch.nn.Module"),
        (["profile", "mlp", "--batch-size", "4", "--out", str(tmp_path / "missing" / "p.json")],
         "does not exist"),
        (["profile", "mlp", "--batch-size", "4", "--out", str(tmp_path)], "is a directory"),
        (["profile", "mlp", "--batch-size", "4", "--input-shape", "1,x,8"], "--input-shape"),
        (["units", "resnet111"], "unknown model"),
        (["units", "mlp", "--input-shape", "0,8,8"], "--input-shape"),
        (["units", "smallcnn", "--input-shape", "1,16,16"], "fails on input shape"),
    ]
    if not torch.cuda.is_available():
        cases.append((["profile", "mlp", "--batch-size", "4", "--device", "cuda", "--out", out],
                      "CUDA is not available"))
    return cases


def test_bad_inputs_exit_2_one_line_nothing_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "out").mkdir()
    for argv, fragment in _bad_cases(tmp_path):
        if "--out" not in argv and argv[0] == "profile":
            argv = [*argv, "--out", str(tmp_path / "out" / "p.json")]
        assert main([*argv, "--no-progress"] if argv[0] == "profile" else argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.endswith("\n") and err.count("\n") == 1, (argv, err)
        assert fragment in err, (argv, err)
        assert list((tmp_path / "out").iterdir()) == [], argv
        assert not (tmp_path / "cache").exists(), argv


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_out_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert main(["profile", "mlp", "--batch-size", "4", "--out", str(locked / "p.json")]) == 2
        assert "not writable" in capsys.readouterr().err
    finally:
        locked.chmod(0o700)


def test_out_under_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["profile", "mlp", "--batch-size", "4", "--out", str(afile / "p.json")]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_usage_errors_exit_2() -> None:
    with pytest.raises(SystemExit) as info:
        main(["profile", "mlp", "--batch-size", "4", "--device", "tpu"])
    assert info.value.code == 2
