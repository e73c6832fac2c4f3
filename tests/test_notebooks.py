"""The analysis notebooks (jupytext py:percent) run as scripts on small inputs and write plotly HTML."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ddgsim.compare.rows import Row
from ddgsim.compare.validation_csv import write_csv

ROOT = Path(__file__).resolve().parents[1]
ANALYSIS = ROOT / "analysis"
NOTEBOOKS = sorted(p.name for p in ANALYSIS.glob("*.py") if not p.name.startswith("_"))


def _run(name: str, out: Path, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    e = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
    r = subprocess.run([sys.executable, str(ANALYSIS / name), "--out", str(out), "--png", "no", *argv],
                       cwd=ROOT, env=e, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, f"{name} failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    return r


def _assert_plotly(path: Path, figures: int = 1) -> None:
    assert path.is_file(), f"{path} was not written"
    text = path.read_text()
    assert text.count("Plotly.newPlot") >= figures
    assert "plotly.js" in text.lower() or "plotly-latest" in text.lower() or "Plotly" in text


def test_every_notebook_is_jupytext_percent() -> None:
    jupytext = pytest.importorskip("jupytext")
    assert set(NOTEBOOKS) == {"speedup_vs_k.py", "staleness_memory.py", "gantt.py", "ddg_vs_bp_curves.py",
                              "predicted_vs_measured.py", "theory_slack.py"}
    for name in NOTEBOOKS:
        nb = jupytext.read(ANALYSIS / name)
        kinds = [c.cell_type for c in nb.cells]
        assert kinds[0] == "markdown" and kinds.count("code") >= 2, name
        assert nb.metadata["jupytext"]["text_representation"]["format_name"] == "percent"


def test_speedup_vs_k(tmp_path: Path) -> None:
    # resnet44 has no bundled profile: it must be named in the figure and skipped
    r = _run("speedup_vs_k.py", tmp_path, "--models", "resnet56,resnet44", "--scenarios", "pcie-4gpu,ideal",
             "--schedules", "bp,ddg-pipelined", "--k-max", "3")
    _assert_plotly(tmp_path / "speedup_vs_k.html")
    assert "'resnet44': 'not bundled'" in r.stdout
    assert "no bundled profile for resnet44" in (tmp_path / "speedup_vs_k.html").read_text()


def test_staleness_memory(tmp_path: Path) -> None:
    _run("staleness_memory.py", tmp_path, "--model", "resnet56", "--k", "3", "--schedules", "bp,ddg,gpipe")
    _assert_plotly(tmp_path / "staleness_memory.html", figures=2)


def test_gantt_simulated_alone_and_against_a_trace(tmp_path: Path) -> None:
    r = _run("gantt.py", tmp_path / "a", "--model", "resnet56")
    _assert_plotly(tmp_path / "a" / "gantt.html")
    assert '"measured": false' in r.stdout and "simulated only" in (tmp_path / "a" / "gantt.html").read_text()
    # a "measured" trace in the executor's format: the simulator's own timeline of a plan, 8 iterations
    from ddgsim.plan.format import Plan
    from ddgsim.plan.records import ProfileRef
    from ddgsim.predict.event_sim import simulate
    from ddgsim.predict.scenario import load_scenario
    from ddgsim.profile.store import find_profile
    from ddgsim.trace import write_trace

    prof_path = find_profile("resnet56", 128)
    assert prof_path is not None
    plan = tmp_path / "plan.json"
    Plan.for_split(model="resnet56", split=[16], num_units=33, schedule="ddg-pipelined", batch_size=128,
                   scenario="cpu-2core", profile_ref=ProfileRef(path=str(prof_path))).save(plan)
    from ddgsim.profile import format as profile_format

    sim = simulate(profile_format.load(prof_path), [16], load_scenario("cpu-2core"), "ddg-pipelined", iterations=8)
    trace = tmp_path / "measured.trace.json"
    write_trace(trace, sim.timeline, process="measured", rows=["cpu0", "cpu1"], metadata={"plan": str(plan)})
    r = _run("gantt.py", tmp_path / "b", "--trace", str(trace))
    assert '"measured": true' in r.stdout
    _assert_plotly(tmp_path / "b" / "gantt.html")
    assert "measured (executor)" in (tmp_path / "b" / "gantt.html").read_text()


def test_ddg_vs_bp_curves(tmp_path: Path) -> None:
    r = _run("ddg_vs_bp_curves.py", tmp_path, "--k", "2", "--steps", "20", "--eval-every", "10")
    _assert_plotly(tmp_path / "ddg_vs_bp_curves.html")
    assert "bp K=1: final loss" in r.stdout and "ddg K=2: final loss" in r.stdout


def test_predicted_vs_measured(tmp_path: Path) -> None:
    csv_path = tmp_path / "validation.csv"
    write_csv([Row(model="mlp", K=1, schedule="bp", split="", predicted_ms=10, measured_ms=10.5, error_pct=-4.76),
               Row(model="mlp", K=2, schedule="ddg", split="3", predicted_ms=6, measured_ms=5.8, error_pct=3.45)],
              csv_path)
    r = _run("predicted_vs_measured.py", tmp_path / "out", "--csv", str(csv_path))
    _assert_plotly(tmp_path / "out" / "predicted_vs_measured.html", figures=2)
    assert "median absolute error" in r.stdout
    missing = subprocess.run([sys.executable, str(ANALYSIS / "predicted_vs_measured.py"), "--out", str(tmp_path),
                              "--csv", str(tmp_path / "nope.csv")], cwd=ROOT, capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert missing.returncode != 0 and "does not exist" in missing.stderr


def test_theory_slack_generates_a_small_csv(tmp_path: Path) -> None:
    _run("theory_slack.py", tmp_path, "--k-max", "2", "--iterations", "8", "--seeds", "1")
    assert (tmp_path / "theory_slack.csv").is_file()
    _assert_plotly(tmp_path / "theory_slack.html")


def test_png_export_is_skipped_with_a_message_without_chromium(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import plotly.graph_objects as go

    from ddgsim.compare import figures

    monkeypatch.setattr(figures, "chromium", lambda: None)
    with caplog.at_level("WARNING", logger="ddgsim"):
        assert figures.export_png(go.Figure(), tmp_path / "x.png") is False
    assert any(r.levelname == "WARNING" and "PNG export skipped" in r.getMessage() for r in caplog.records)
    assert not (tmp_path / "x.png").exists()


@pytest.mark.slow
def test_a_notebook_runs_under_nbclient_with_options_from_the_environment(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    csv_path = tmp_path / "validation.csv"
    write_csv([Row(model="mlp", K=1, schedule="bp", split="", predicted_ms=10, measured_ms=10.5, error_pct=-4.76),
               Row(model="mlp", K=2, schedule="ddg", split="3", predicted_ms=6, measured_ms=5.8, error_pct=3.45)],
              csv_path)
    for key, value in (("CSV", str(csv_path)), ("OUT", str(tmp_path / "out")), ("PNG", "no")):
        monkeypatch.setenv(f"DDGSIM_{key}", value)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    nb = jupytext.read(ANALYSIS / "predicted_vs_measured.py")
    nbclient.NotebookClient(nb, timeout=180, kernel_name="python3",
                            resources={"metadata": {"path": str(ANALYSIS)}}).execute()
    _assert_plotly(tmp_path / "out" / "predicted_vs_measured.html", figures=2)
