"""The JSON Schemas shipped in ddgsim/schemas: valid, every field described, every bundled and
freshly written file accepted, broken ones rejected with one line naming the field."""

from __future__ import annotations

import copy
import json
import shutil
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from launch_helpers import execute, write_plan

from ddgsim.cli import main
from ddgsim.errors import UserError
from ddgsim.execute.measure import load_metrics
from ddgsim.plan import format as plan_file
from ddgsim.profile import format as profile_format
from ddgsim.schemas import KINDS, check, schema
from ddgsim.trace import load_trace

BUNDLED = sorted(Path(str(files("ddgsim.scenarios"))).joinpath("profiles").glob("*.json"))


def _undescribed(node: Any, path: str) -> list[str]:
    out = []
    if isinstance(node, dict):
        for name, sub in (node.get("properties") or {}).items():
            if "description" not in sub:
                out.append(f"{path}.{name}")
        for key, sub in node.items():
            if key not in ("allOf", "if", "then", "else"):  # conditions restate described fields
                out += _undescribed(sub, f"{path}.{key}")
    elif isinstance(node, list):
        for i, sub in enumerate(node):
            out += _undescribed(sub, f"{path}[{i}]")
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_schema_is_valid_and_every_field_is_described(kind: str) -> None:
    s = schema(kind)
    Draft202012Validator.check_schema(s)
    assert s.get("description") and _undescribed(s, kind) == []


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.name)
def test_bundled_profiles_validate(path: Path) -> None:
    check(json.loads(path.read_text()), "profile", str(path))
    assert profile_format.load(path).num_units > 0


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A plan and a simulated trace from ``plan``, metrics and a measured trace from ``execute``."""
    d = tmp_path_factory.mktemp("written")
    assert main(["plan", "resnet20", "--gpus", "2", "--out", str(d / "plan.json"), "--trace", str(d / "sim.json")]) == 0
    plan = write_plan(d / "mlp.json", "mlp", [2], "ddg")
    r = execute(str(plan), "--steps", "3", "--data", "digits", "--metrics", str(d / "m.json"), "--trace",
                str(d / "run.json"))
    assert r.returncode == 0, r.stderr
    return {"plan": d / "plan.json", "trace": d / "sim.json", "metrics": d / "m.json", "run-trace": d / "run.json"}


def test_written_files_validate(written: dict[str, Path]) -> None:
    plan_file.load(written["plan"])
    load_trace(written["trace"])
    load_trace(written["run-trace"])
    m = load_metrics(written["metrics"])
    assert m["format"] == "ddgsim-metrics/1"


def _mutations(kind: str, data: dict[str, Any]) -> list[tuple[str, Any]]:
    """(field named in the error, a broken copy) for every required top-level field, removed and mistyped."""
    out = []
    for key in schema(kind)["required"]:
        gone = copy.deepcopy(data)
        del gone[key]
        out.append((key, gone))
        typed = copy.deepcopy(data)
        typed[key] = {"not": "this"} if not isinstance(data[key], dict) else [1]
        out.append((key, typed))
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_broken_files_are_one_line_errors_naming_the_field(kind: str, written: dict[str, Path]) -> None:
    path = written[kind] if kind != "profile" else BUNDLED[0]
    data = json.loads(path.read_text())
    for key, broken in _mutations(kind, data):
        with pytest.raises(UserError) as info:
            check(broken, kind, "f.json")
        msg = str(info.value)
        assert "\n" not in msg and msg.startswith(f"malformed {kind} f.json: field '{key}") , msg
    with pytest.raises(UserError, match="expected a JSON object"):
        check([], kind, "f.json")


def test_plan_refers_to_its_profile_relatively(tmp_path: Path) -> None:
    prof = tmp_path / "profiles" / "p.json"
    prof.parent.mkdir()
    shutil.copy(BUNDLED[0], prof)
    out = tmp_path / "plans" / "plan.json"
    out.parent.mkdir()
    assert main(["plan", "--profile", str(prof), "--gpus", "2", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["profile"]["path"] == "../profiles/p.json"
    moved = tmp_path / "moved"
    shutil.copytree(tmp_path / "plans", moved / "plans")
    shutil.copytree(tmp_path / "profiles", moved / "profiles")
    shutil.rmtree(tmp_path / "profiles")
    assert plan_file.load(moved / "plans" / "plan.json").profile_ref.path == str(moved / "profiles" / "p.json")
    assert main(["simulate", "--plan", str(moved / "plans" / "plan.json")]) == 0


def test_formats_doc_is_generated_from_the_schemas() -> None:
    from ddgsim.schemas import markdown

    doc = Path(__file__).resolve().parents[1] / "docs" / "formats.md"
    assert doc.read_text() == markdown(), "run: python -m ddgsim.schemas > docs/formats.md"
