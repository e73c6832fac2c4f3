"""``plan``'s tables at 80 and 120 columns: every column, every number, nothing cut to '…'."""

from __future__ import annotations

import json
import re

import pytest

from ddgsim.cli import main
from ddgsim.commands._table import Column, fit


def _plan(width: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[str, dict]:
    monkeypatch.setenv("COLUMNS", str(width))
    assert main(["plan", "resnet110", "--gpus", "4"]) == 0
    text = capsys.readouterr().out
    assert main(["plan", "resnet110", "--gpus", "4", "--json"]) == 0
    return text, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("width", [80, 120])
def test_plan_tables_fit_and_keep_every_number(width: int, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    text, plan = _plan(width, monkeypatch, capsys)
    lines = text.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= width
    for header in ("option", "stage", "units", "layers", "τ", "peak GiB", "bubble", "iter ms", "samples/s",
                   "speedup", "gap", "device", "busy ms", "γL <", "weights*", "activations", "stashed"):
        assert re.search(rf"[|│┃] {re.escape(header)} +[|│┃]|[|│┃] +{re.escape(header)} [|│┃]", text), header
    pred = plan["predicted"]
    assert f"{pred['iteration_ms']:.1f}" in text and f"{pred['samples_per_s']:.1f}" in text
    for k, st in enumerate(plan["stages"]):
        a, b = st["units"]
        assert f"[{a},{b})" in text
        assert f"{st['first']}…{st['last']}" in text  # layer names whole, never cut
        assert f"{pred['busy_ms'][k]:.1f}" in text
    cells = [c.strip() for line in lines for c in re.split(r"[|│┃]", line)]
    assert not any(c.endswith("…") for c in cells), "a cell was truncated"


def test_a_table_too_wide_is_split_with_its_key_column() -> None:
    cols = [Column("key", "left"), *(Column(f"c{i}") for i in range(8))]
    rows = [["k1", *(f"{1000 * i + 0.5:.1f}" for i in range(8))], None, ["k2", *("x" * 9 for _ in range(8))]]
    (whole,) = fit("t", cols, rows, 200)
    parts = fit("t", cols, rows, 40)
    assert len(whole.columns) == 9 and len(parts) > 1
    assert all(t.columns[0].header == "key" for t in parts)
    assert sum(len(t.columns) - 1 for t in parts) == 8  # every other column exactly once
    assert all(t.title.endswith(f"({n + 1}/{len(parts)})") for n, t in enumerate(parts))
