"""A failed child process is explained: its first error line and where its full log is.

Unit tests of the parsing and of which process is blamed, then real launches (the executor,
torch.distributed.pipelining, validate) whose stage raises through ``DDGSIM_FAULT=S:T:raise``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from launch_helpers import ROOT, execute, write_plan

from ddgsim.compare.torch_pipelining import launch as launch_torch
from ddgsim.execute.childlog import ChildFailure, LaunchFailed, error_line, explain

EXIT = r"(?:1|-15, SIGTERM)"
"""A stage that raised exits 1, or is stopped by the launcher's SIGTERM while it is still on its way out."""

TRACEBACK = """\
[rank0]: Traceback (most recent call last):
[rank0]:   File "x.py", line 3, in <module>
[rank0]:     opt = torch.optim.SGD(params)
[rank0]:           ^^^^^^^^^^^^^^^^^^^^^^^
[rank0]: ValueError: optimizer got an empty parameter list
"""


def test_error_line_is_the_first_error_or_the_exception_of_the_first_traceback() -> None:
    assert error_line(TRACEBACK) == "ValueError: optimizer got an empty parameter list"
    assert error_line("warning: slow\nerror: stage 1: lost contact with stage 0\nerror: later\n") == \
        "stage 1: lost contact with stage 0"
    chained = ("Traceback (most recent call last):\n  File \"a\", line 1\nKeyError: 'x'\n\n"
               "During handling of the above exception, another exception occurred:\n\n"
               "Traceback (most recent call last):\n  File \"b\", line 2\nRuntimeError: outer\n")
    assert error_line(chained) == "KeyError: 'x'"
    assert error_line("W1204 some launcher chatter\nwarning: 3 processes on 2 cores\n") is None
    assert error_line("") is None


def _failure(exitcode: int) -> SimpleNamespace:
    return SimpleNamespace(exitcode=exitcode)


def test_the_cause_is_blamed_not_the_processes_that_lost_it(tmp_path: Path) -> None:
    (tmp_path / "rank0.log").write_text("error: stage 0: lost contact with stage 1 (Connection closed by peer)\n")
    (tmp_path / "rank1.log").write_text(TRACEBACK)
    (tmp_path / "rank2.log").write_text("")
    got = explain({0: _failure(1), 1: _failure(1), 2: _failure(-int(signal.SIGTERM))}, tmp_path)
    assert got == ChildFailure(rank=1, exitcode=1, reason="ValueError: optimizer got an empty parameter list",
                               log=tmp_path / "rank1.log")
    # a stage killed by SIGKILL says nothing, yet it is the cause of the others' lost contact
    (tmp_path / "rank1.log").write_text("")
    got = explain({0: _failure(1), 1: _failure(-int(signal.SIGKILL))}, tmp_path)
    assert got.rank == 1 and got.describe("stage") == f"stage 1 failed (exit code -9, SIGKILL); full log: {tmp_path / 'rank1.log'}"
    # without logs, a SIGTERM from the launcher is blamed last
    got = explain({0: _failure(-int(signal.SIGTERM)), 1: _failure(3)}, None)
    assert got.rank == 1 and got.describe("stage") == "stage 1 failed (exit code 3)"


def test_describe_names_the_reason_and_the_log() -> None:
    f = ChildFailure(rank=2, exitcode=1, reason="ValueError: bad " + "x" * 400, log=Path("/l/rank2.log"))
    text = f.describe("stage")
    assert text.startswith("stage 2 failed (exit code 1): ValueError: bad xxx") and text.endswith("; full log: /l/rank2.log")
    assert len(text) < 320 and "\n" not in text


@pytest.mark.slow
def test_execute_names_the_failing_stage_its_exception_and_its_log(tmp_path: Path) -> None:
    plan = write_plan(tmp_path / "p.json", "mlp", [3], "ddg-pipelined")
    logs = tmp_path / "logs"
    r = execute(str(plan), "--steps", "5", "--data", "synthetic", "--log-dir", str(logs),
                env={"DDGSIM_FAULT": "1:2:raise"})
    assert r.returncode == 1, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    # the stage's exit code is 1, or SIGTERM where the launcher stopped it before it was out
    assert re.fullmatch(re.escape("error: stage 1 failed (exit code ") + EXIT + re.escape(
        f"): ddgsim.execute.faults.InjectedFault: DDGSIM_FAULT=1:2:raise: rank 1 raised at step 2; "
        f"full log: {logs.resolve() / 'rank1.log'}; the job was stopped"), last), r.stderr
    log = (logs / "rank1.log").read_text()
    assert "Traceback (most recent call last)" in log and "fault_hook" in log


@pytest.mark.slow
def test_execute_without_log_dir_keeps_a_temporary_log_only_on_failure(tmp_path: Path) -> None:
    plan = write_plan(tmp_path / "p.json", "mlp", [3], "ddg")
    env = {"TMPDIR": str(tmp_path)}
    ok = execute(str(plan), "--steps", "3", "--data", "synthetic", env=env)
    assert ok.returncode == 0, ok.stderr
    assert not list(tmp_path.glob("ddgsim-logs-*"))  # removed after a clean run
    bad = execute(str(plan), "--steps", "3", "--data", "synthetic", env={**env, "DDGSIM_FAULT": "0:1:raise"})
    assert bad.returncode == 1
    path = Path(bad.stderr.strip().splitlines()[-1].split("full log: ")[1].split(";")[0])
    assert path.parent.parent == tmp_path and path.is_file() and "InjectedFault" in path.read_text()


@pytest.mark.slow
def test_torch_pipelining_failure_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("DDGSIM_FAULT", "0:1:raise")
    plan = write_plan(tmp_path / "p.json", "mlp", [3], "gpipe", micro=2)
    with pytest.raises(LaunchFailed) as info:
        launch_torch(plan, 3, tmp_path / "m.json", log_dir=tmp_path / "logs")
    msg = str(info.value)
    assert re.match(re.escape("torch.distributed.pipelining stage 0 failed (exit code ") + EXIT + re.escape(
        "): ddgsim.execute.faults.InjectedFault: DDGSIM_FAULT=0:1:raise"), msg), msg
    assert msg.endswith(f"full log: {(tmp_path / 'logs').resolve() / 'rank0.log'}")
    # the command line says the same on one line, exit status 1
    r = subprocess.run([sys.executable, "-m", "ddgsim.compare.torch_pipelining", str(plan), "--steps", "3",
                        "--metrics", str(tmp_path / "m.json")], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert r.returncode == 1
    assert re.match(re.escape("error: torch.distributed.pipelining stage 0 failed (exit code ") + EXIT
                    + re.escape("): ddgsim.execute.faults.InjectedFault"), r.stderr.strip().splitlines()[-1])


def test_a_log_dir_that_cannot_be_made_is_one_line_before_anything_starts(tmp_path: Path) -> None:
    plan = write_plan(tmp_path / "p.json", "mlp", [3], "ddg")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = execute(str(plan), "--steps", "3", "--data", "synthetic", "--log-dir", str(blocker / "logs"),
                "--metrics", str(tmp_path / "m.json"))
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: --log-dir {blocker / 'logs'}: cannot make the folder")
    assert not (tmp_path / "m.json").exists()
