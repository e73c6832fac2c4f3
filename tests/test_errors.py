"""Two levels of errors: the library names its parameters, the command line names them as its flags."""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import pytest

from ddgsim.cli import main
from ddgsim.compare.config import ConfigError
from ddgsim.errors import (
    DdgsimError,
    FileError,
    ParameterError,
    UserError,
    command_line_message,
    flag_names,
    malformed,
)
from ddgsim.execute.childlog import LaunchFailed
from ddgsim.execute.config import RunConfig


def test_every_error_is_a_ddgsim_error_and_bad_input_a_user_error() -> None:
    for cls in (UserError, ParameterError, FileError, ConfigError, LaunchFailed):
        assert issubclass(cls, DdgsimError)
    for cls in (ParameterError, FileError, ConfigError):
        assert issubclass(cls, UserError)  # every existing ``except UserError`` still catches them
    assert not issubclass(LaunchFailed, UserError)  # a process that failed is not the input's fault
    assert LaunchFailed("stage 1 failed", code=3).exit_code == 3 and UserError("x").exit_code == 2


def test_a_parameter_error_names_the_parameter_or_its_flag() -> None:
    exc = ParameterError("checkpoint_every", " 5 needs {checkpoint_dir} (and {checkpoint_every} must be >= 0)",
                         others=("checkpoint_dir",))
    assert str(exc) == "checkpoint_every 5 needs checkpoint_dir (and checkpoint_every must be >= 0)"
    assert exc.param == "checkpoint_every" and exc.detail == " 5 needs checkpoint_dir (and checkpoint_every must be >= 0)"
    flags = {"checkpoint_every": "--checkpoint-every", "checkpoint_dir": "--checkpoint-dir"}
    assert exc.naming(flags) == "--checkpoint-every 5 needs --checkpoint-dir (and --checkpoint-every must be >= 0)"
    assert exc.naming({}) == str(exc)  # a parameter without a flag keeps its name
    assert command_line_message(exc, flags) == exc.naming(flags)
    assert command_line_message(UserError("plain {checkpoint_dir}"), flags) == "plain {checkpoint_dir}"


def test_errors_pickle_with_their_parts() -> None:
    exc = ConfigError("stages", " 9 with {replicas} 2", others=("replicas",))
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is ConfigError and back.field == "stages" and back.naming({"replicas": "--replicas"}) == (
        "stages 9 with --replicas 2")
    f = pickle.loads(pickle.dumps(malformed("plan", "p.json", "field 'split' must be a list")))
    assert (type(f), str(f), f.kind, f.where) == (FileError, "malformed plan p.json: field 'split' must be a list",
                                                  "plan", "p.json")
    launch = pickle.loads(pickle.dumps(LaunchFailed("stage 0 failed", code=7)))
    assert (str(launch), launch.code, launch.exit_code) == ("stage 0 failed", 7, 7)


def test_flag_names_are_the_long_spellings_by_destination() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("plan")
    p.add_argument("-t", "--timeout-s", type=float)
    p.add_argument("--no-eval", dest="evaluate", action="store_false")
    assert flag_names(p) == {"help": "--help", "timeout_s": "--timeout-s", "evaluate": "--no-eval"}


def test_the_library_names_the_field_and_the_command_its_flag(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ParameterError, match=r"^timeout_s must be > 0, got 0$") as caught:
        RunConfig(plan=tmp_path / "p.json", steps=1, timeout_s=0)
    assert caught.value.param == "timeout_s"
    assert main(["execute", str(tmp_path / "p.json"), "--steps", "1", "--timeout-s", "0"]) == 2
    assert capsys.readouterr().err == "error: --timeout-s must be > 0, got 0.0\n"


def test_unreadable_and_malformed_files_are_file_errors(tmp_path: Path) -> None:
    from ddgsim.plan.format import load as load_plan
    from ddgsim.profile.format import load as load_profile

    with pytest.raises(FileError, match="cannot read plan") as caught:
        load_plan(tmp_path / "absent.json")
    assert (caught.value.kind, caught.value.where) == ("plan", str(tmp_path / "absent.json"))
    (tmp_path / "p.json").write_text("{}")
    with pytest.raises(FileError, match=r"malformed profile .*p\.json: field") as caught:
        load_profile(tmp_path / "p.json")
    assert caught.value.kind == "profile"
