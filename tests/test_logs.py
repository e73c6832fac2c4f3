"""The library logs, the entry points show the records on stderr: one line each, as before."""

from __future__ import annotations

import logging

import pytest

from ddgsim.compare.rounds import note
from ddgsim.logs import log_to_stderr


def test_records_are_one_line_each_notes_bare(capsys: pytest.CaptureFixture[str]) -> None:
    log = logging.getLogger("ddgsim.compare.rounds")
    log_to_stderr()
    log_to_stderr()  # once or twice: one handler
    log.info("profiled mlp at batch 32 on this machine")
    log.warning("PNG export skipped (%s): no Chromium", "a.png")
    log.error("stopped by SIGTERM")
    assert capsys.readouterr().err == ("profiled mlp at batch 32 on this machine\n"
                                       "warning: PNG export skipped (a.png): no Chromium\n"
                                       "error: stopped by SIGTERM\n")
    log_to_stderr("stage 1: ")  # a stage process: its rank before each line, as its error lines always had
    log.error("lost contact with another stage")
    log_to_stderr()
    assert capsys.readouterr().err == "error: stage 1: lost contact with another stage\n"


def test_validate_notes_and_warnings_keep_their_lines(capsys: pytest.CaptureFixture[str]) -> None:
    log_to_stderr()
    note("note: K=4 x D=2 needs 8 devices and scenario 'ideal-4' has 4: not run")
    note("warning: the contention measurement failed; predicting with the calibration's")
    note("k2-ddg-planned: failed (exit code 1), retrying once")
    assert capsys.readouterr().err.splitlines() == [
        "note: K=4 x D=2 needs 8 devices and scenario 'ideal-4' has 4: not run",
        "warning: the contention measurement failed; predicting with the calibration's",
        "k2-ddg-planned: failed (exit code 1), retrying once"]


def test_the_levels_of_validates_notes(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="ddgsim"):
        note("warning: slow machine")
        note("calibrated this machine")
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "slow machine"), ("INFO", "calibrated this machine")]
