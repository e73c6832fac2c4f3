"""A user's language model end to end: units → plan (profiled here) → execute on --data text
(real processes) = the in-process engine, bit for bit; and gpt-mini learns under DDG."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from launch_helpers import ROOT, assert_clean, assert_same, engine_weights, execute, final_weights

from ddgsim.cli import main
from ddgsim.execute.config import RunConfig
from ddgsim.execute.evaluate import evaluate_stages
from ddgsim.execute.job import run_inprocess_job
from ddgsim.plan.format import Plan
from ddgsim.plan.format import load as load_plan

HERE = Path(__file__).resolve().parent
USER_MODEL = "tinygpt_models:tinygpt"


@pytest.fixture
def user_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.setenv("DDGSIM_CACHE_DIR", str(tmp_path / "cache"))
    return {"PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)]), "DDGSIM_CACHE_DIR": str(tmp_path / "cache")}


@pytest.mark.slow
def test_user_language_model_units_plan_execute(tmp_path: Path, user_env: dict[str, str],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["units", USER_MODEL]) == 0
    assert "16 ids<256" in capsys.readouterr().out
    plan_path = tmp_path / "plan.json"
    assert main(["plan", USER_MODEL, "--gpus", "2", "--stages", "2", "--batch-size", "8", "--schedule", "ddg",
                 "--out", str(plan_path), "--no-progress"]) == 0
    capsys.readouterr()
    plan = load_plan(plan_path)
    assert plan.num_stages == 2 and plan.model == USER_MODEL
    common = ["--steps", "10", "--data", "text", "--lr", "0.1", "--seed", "1"]
    r = execute(str(plan_path), *common, "--final-weights", str(tmp_path / "w"),
                "--metrics", str(tmp_path / "m.json"), env=user_env)
    assert r.returncode == 0, r.stderr
    assert_clean(r.stderr)
    assert "bits per token" in r.stdout
    assert_same(final_weights(tmp_path / "w", 2), engine_weights([str(plan_path), *common]))
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["data"] == "text" and len(m["losses"]) == 10 and "sha256" in m["data_source"]
    assert m["losses"][0] > m["losses"][-1]
    assert 0 < m["test_loss"] < math.log(256) and m["test_bits_per_token"] == pytest.approx(m["test_loss"] / math.log(2))


def test_gpt_ddg_k2_validation_loss_falls(tmp_path: Path) -> None:
    """A small GPT split in two (DDG, staleness 1 on the first stage) learns the bytes of Python source:
    validation loss well below the uniform ln 256 = 5.55 nats and below its value after 1 step."""
    plan = tmp_path / "p.json"
    Plan.for_split(model="gpt-L2-W64-T32", split=[2], num_units=5, schedule="ddg", batch_size=16).save(plan)

    def val_loss(steps: int) -> float:
        _res, job, ds = run_inprocess_job(RunConfig(plan=plan, steps=steps, data="text", lr=0.1))
        return evaluate_stages(job.stages, ds, 256, job.spec.io)["loss"]

    early, late = val_loss(1), val_loss(60)
    assert late < early - 1.0 and late < 3.6, (early, late)
