"""``ddgsim execute --tensorboard DIR``: the scalars written, read back from the event file
(``ddgsim.execute.tensorboard``), and one line, exit 2, without the tensorboard package."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from launch_helpers import ROOT, assert_clean, execute, write_plan


@pytest.mark.slow
def test_tensorboard_scalars_are_the_runs_figures_per_step(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps = 6
    plan = write_plan(tmp_path / "p.json", "mlp", [2], "ddg")
    tb, metrics = tmp_path / "tb", tmp_path / "m.json"
    r = execute(str(plan), "--steps", str(steps), "--data", "synthetic", "--no-eval",
                "--metrics", str(metrics), "--tensorboard", str(tb))
    assert r.returncode == 0, r.stderr
    assert_clean(r.stderr)
    assert f"wrote tensorboard scalars {tb}" in r.stdout
    assert len(list(tb.glob("events.out.tfevents.*"))) == 1

    acc = EventAccumulator(str(tb))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert tags == {"train/loss", "train/samples_per_s",
                    *(f"stage_{k}/{what}" for k in (0, 1) for what in ("busy_ms", "bubble_ms", "staleness"))}

    def series(tag: str) -> tuple[list[int], list[float]]:
        events = acc.Scalars(tag)
        return [e.step for e in events], [e.value for e in events]

    m = json.loads(metrics.read_text())
    every = list(range(steps))
    got_steps, loss = series("train/loss")
    assert got_steps == every
    assert loss == pytest.approx(m["losses"], rel=1e-6)  # float32 in the event file
    got_steps, rate = series("train/samples_per_s")
    assert got_steps == every and all(math.isfinite(v) and v > 0 for v in rate)
    for k, row in enumerate(m["per_stage"]):
        got_steps, busy = series(f"stage_{k}/busy_ms")
        assert got_steps == every
        expect = [f + b + u for f, b, u in zip(row["forward_ms"], row["backward_ms"], row["update_ms"], strict=True)]
        assert busy == pytest.approx(expect, rel=1e-4, abs=1e-3)
        got_steps, bubble = series(f"stage_{k}/bubble_ms")
        assert got_steps == every and all(v >= 0 for v in bubble)
    # DDG, K = 2: stage 0 updates batches 0..4 with a delay of min(t, 1); stage 1 is never stale
    assert series("stage_0/staleness") == ([0, 1, 2, 3, 4], [0.0, 1.0, 1.0, 1.0, 1.0])
    assert series("stage_1/staleness") == (every, [0.0] * steps)


def test_tensorboard_without_the_package_is_one_line_exit_2(tmp_path: Path) -> None:
    """As if tensorboard were not installed: ``sys.modules['tensorboard'] = None`` at start-up."""
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['tensorboard'] = None\n")
    plan = write_plan(tmp_path / "p.json", "mlp", [2], "ddg")
    r = execute(str(plan), "--steps", "2", "--tensorboard", str(tmp_path / "tb"),
                env={"PYTHONPATH": f"{tmp_path}:{ROOT}"}, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert lines == ["error: --tensorboard needs the tensorboard package, which is not installed: "
                     "pip install 'ddgsim[tensorboard]' (or pip install tensorboard)"], r.stderr
    assert not (tmp_path / "tb").exists()
