"""``validate`` as a library call: the docs' Python example runs (executor and profile faked, no
processes), writes what the command writes, and a config names its bad values."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from ddgsim.cli import main
from ddgsim.compare import execution
from ddgsim.compare.validate import ConfigError, ValidateConfig, ValidationReport
from ddgsim.compare.validation_csv import read_csv
from ddgsim.profile.format import Profile, UnitProfile

ROOT = Path(__file__).resolve().parent.parent


def _docs_example() -> str:
    text = (ROOT / "docs" / "validation.md").read_text()
    section = text.split("### From Python", 1)[1].split("\n### ", 1)[0]
    blocks = re.findall(r"```python\n(.+?)\n```", section, flags=re.S)
    assert len(blocks) == 1
    return blocks[0]


@pytest.fixture
def fake_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """mlp's profile of this machine from the cache, and an executor whose steps take 10 ms."""
    from ddgsim.profile import machine, store

    units = [UnitProfile(name=f"u{i}", forward_ms=1.0, backward_ms=2.0, output_bytes=4096, param_bytes=1024,
                         activation_bytes=4096) for i in range(4)]
    prof = Profile(model="mlp", batch_size=16, input_shape=[4], device="cpu", threads=1, dtype="float32",
                   units=units, whole_model_ms=12.0, meta={}, machine=machine.fingerprint())
    path = tmp_path / "mlp.json"
    prof.save(path)

    def get_profile(model: str, batch_size: int, *args: Any, **kwargs: Any) -> tuple[Profile, Path, str]:
        assert (model, batch_size) == ("mlp", 16)
        return prof, path, "cache"

    def run_plan(plan: Path, steps: int, threads: int, metrics: Path, *args: Any, **kwargs: Any) -> None:
        stages = len(json.loads(plan.read_text())["stages"])
        step_ms = 2.0 + 8.0 / stages  # K = 1: 10 ms, K = 2: 6 ms
        metrics.write_text(json.dumps({  # what the executor writes (the metrics schema)
            "format": "ddgsim-metrics/1", "plan": plan.name, "model": "mlp", "schedule": "bp", "stages": stages,
            "split": [], "batch_size": 16, "steps": steps, "losses": [None] * steps,
            "per_stage": [{"stage": k, "iterations": list(range(steps)), "step_ms": [step_ms] * steps}
                          for k in range(stages)],
            "summary": {"median_step_ms": step_ms, "samples_per_s": 16e3 / step_ms}}))

    monkeypatch.setattr(store, "get_profile", get_profile)
    monkeypatch.setattr(execution, "run_plan", run_plan)
    monkeypatch.setattr(machine, "cpu_jiffies", lambda: None)  # no steal reading: the runs take microseconds


def test_the_docs_example_runs_and_writes_what_the_command_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str],
                                                                  fake_machine: None) -> None:
    monkeypatch.chdir(tmp_path)
    scope: dict[str, object] = {}
    exec(compile(_docs_example(), "docs/validation.md", "exec"), scope)  # the docs page, as a reader runs it
    report = scope["report"]
    assert isinstance(report, ValidationReport)
    assert [(r.K, r.schedule, r.status) for r in report.rows] == [(1, "bp", "ok"), (2, "ddg", "ok")]
    assert report.failure is None and report.summary.runs == 2
    assert report.csv_path == Path("v") / "validation.csv" and report.report_path.is_file()
    assert capsys.readouterr().out.startswith("2 runs × 1 repeats")
    library = json.loads(report.summary_path.read_text())
    assert library["header"] == list(report.header) and not report.header[0].startswith("command:")
    # the command: the same runs, the same summary (its header says how it was called)
    argv = ["validate", "mlp", "--gpus", "1,2", "--schedules", "ddg", "--splits", "1", "--steps", "4", "--repeats",
            "1", "--batch-size", "16", "--scenario", "cpu-2core", "--out", "cli"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    after = lines[lines.index("wrote cli/validation.csv, cli/report.html") + 1:]
    # then, where runs are beyond their tolerance and noise, the pointer at compare-runs
    assert after in ([], [next(x for x in after if x.endswith("ddgsim compare-runs cli cli-again"))])
    cli = json.loads((tmp_path / "cli" / "summary.json").read_text())
    assert cli["header"][0].startswith("command: python -m ddgsim validate")
    assert cli["header"][1:-1] == library["header"][:-1]  # all but the load average
    del cli["header"], library["header"]
    assert json.dumps(cli) == json.dumps(library)  # as text: NaN (no memory measured) equals NaN
    assert [(r.K, r.split, r.predicted_ms) for r in read_csv(tmp_path / "cli" / "validation.csv")] == \
        [(r.K, r.split, r.predicted_ms) for r in read_csv(report.csv_path)]


@pytest.mark.parametrize(("field", "value", "message", "flag_message"), [
    ("splits", 0, "splits must be > 0, got 0", "--splits must be > 0, got 0"),
    ("schedules", ("ddg", "pipedream"), "schedules: 'pipedream' is not one of", "--schedules: 'pipedream' is not one of"),
    ("steps", 3, "steps must be >= K+2 = 4", "--steps must be >= K+2 = 4"),
    ("reference_every", -1, "reference_every must be >= 0 (0: only at the start of each round), got -1",
     "--reference-every must be >= 0"),
    ("warmup_ms", 1e6, "warmup_ms must be in 0..60000 ms, got 1e+06", "--warmup-ms must be in 0..60000 ms, got 1e+06"),
    ("runtimes", ("jax",), "runtimes must be one or both of ddgsim, torch, got ['jax']",
     "--runtimes must be ddgsim and/or torch separated by commas, got 'jax'"),
])
def test_a_config_names_its_bad_value_and_the_command_its_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                               field: str, value: object, message: str,
                                                               flag_message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        ValidateConfig(model="mlp", out=tmp_path / "v", **{field: value})
    assert caught.value.field == field
    flag = "--" + field.replace("_", "-")
    text = ",".join(value) if isinstance(value, tuple) else f"{value:g}" if isinstance(value, float) else str(value)
    assert main(["validate", "mlp", "--gpus", "2", flag, text, "--out", str(tmp_path / "o")]) == 2
    assert flag_message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
