"""The conventions people expect of a command-line tool: --version, the usage line on a usage
error, a quiet exit when the reader of stdout goes away, examples in every --help that parse,
plain text (no markup) in help, files created with the usual permissions."""

from __future__ import annotations

import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ddgsim.cli import build_parser, main
from ddgsim.commands._help import EXAMPLES

ROOT = Path(__file__).resolve().parents[1]


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ddgsim", *argv], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)


def test_version() -> None:
    r = run("--version")
    assert r.returncode == 0 and r.stderr == ""
    assert re.fullmatch(r"ddgsim \d+\.\d+\.\d+ \(Python 3\.\d+\.\d+, torch \S+ [^)]+\)\n", r.stdout), r.stdout


def test_usage_error_shows_the_usage_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["plan", "resnet20"])
    assert info.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert err[0] == "error: ddgsim plan: the following arguments are required: --gpus"
    assert err[1].startswith("usage: ddgsim plan [-h]") and err[1].endswith("(more: ddgsim plan --help)")


def test_no_command_is_a_usage_error() -> None:
    r = run()
    assert r.returncode == 2 and r.stderr.startswith("error: ddgsim: ") and "usage: ddgsim" in r.stderr


@pytest.mark.parametrize("argv", [["plan", "resnet20", "--gpus", "2", "--json"], ["models"]],
                         ids=["json", "rich-table"])
def test_a_closed_stdout_ends_quietly(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """``ddgsim plan ... --json | head -1``: the reader is gone before the output is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    saved = os.dup(1)
    try:
        out = os.fdopen(write_end, "w")
        monkeypatch.setattr(sys, "stdout", out)
        assert main(argv) == 141
    finally:
        os.dup2(saved, 1)
        os.close(saved)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_help_has_examples_that_parse(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([name, "--help"])
    text = capsys.readouterr().out
    assert "examples:" in text and "``" not in text and ":class:" not in text
    parser = build_parser()
    for cmd, _what in EXAMPLES[name]:
        words = [w for w in shlex.split(cmd) if "=" not in w.split("/")[0]]  # drop PYTHONPATH=. etc.
        assert words[0] == "ddgsim", cmd
        args = parser.parse_args(words[1:])  # a usage error would raise SystemExit
        assert args.func is not None


def test_top_level_help_is_for_users(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "examples:" in text and "ddgsim plan resnet110 --gpus 4" in text
    assert "subcommand" not in text and "dispatcher" not in text  # no developer docstring


def test_output_files_get_the_usual_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        plan = tmp_path / "plan.json"
        trace = tmp_path / "t.json"
        assert main(["plan", "resnet20", "--gpus", "2", "--out", str(plan), "--trace", str(trace)]) == 0
        for f in (plan, trace):
            assert stat.S_IMODE(f.stat().st_mode) == 0o644, f
        os.umask(0o077)
        private = tmp_path / "private.json"
        assert main(["plan", "resnet20", "--gpus", "2", "--out", str(private)]) == 0
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_json_wherever_a_table_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert main(["models", "--json"]) == 0
    zoo = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert zoo["resnet110"]["params"] == 1_727_962 and zoo["gpt-mini"]["target"] == "token"
    assert main(["units", "resnet20", "--json"]) == 0
    units = json.loads(capsys.readouterr().out)
    assert len(units["units"]) == 15 and units["units"][-1] == {"index": 14, "name": "fc", "output_shape": [10],
                                                               "params": 650}


def test_every_output_is_announced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    plan, trace = tmp_path / "p.json", tmp_path / "t.json"
    assert main(["plan", "resnet20", "--gpus", "2", "--json", "--out", str(plan), "--trace", str(trace)]) == 0
    cap = capsys.readouterr()
    json.loads(cap.out)  # stdout stays JSON
    assert f"wrote {plan}" in cap.err and f"wrote {trace}" in cap.err
    sim = tmp_path / "s.json"
    assert main(["simulate", "resnet20", "--gpus", "2", "--trace", str(sim)]) == 0
    assert f"wrote {sim}" in capsys.readouterr().out
