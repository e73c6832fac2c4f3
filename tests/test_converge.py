"""Pilot trainings and planning by time to a target loss (``ddgsim converge``,
``plan --objective time-to-loss``, ``--max-staleness``)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ddgsim.cli import main
from ddgsim.converge import pilot
from ddgsim.converge.objective import rank, staleness_of
from ddgsim.converge.pilot import PilotSpec, lr_grid, run_pilot, smooth, stability_ratio, steps_to


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DDGSIM_CACHE_DIR", str(tmp_path / "cache" / "profiles"))
    return tmp_path / "cache"


losses_st = st.lists(st.floats(0.0, 10.0, allow_nan=False), min_size=1, max_size=60)


@given(losses_st, st.integers(1, 10), st.floats(0.0, 10.0), st.floats(0.0, 10.0))
def test_steps_to_is_the_first_smoothed_step_at_or_below(losses: list[float], window: int, a: float,
                                                           b: float) -> None:
    sm = smooth(losses, window)
    for t, x in enumerate(sm):
        lo = max(0, t - window + 1)
        assert x == pytest.approx(sum(losses[lo:t + 1]) / (t + 1 - lo))
    lo_t, hi_t = sorted((a, b))
    got = steps_to(losses, lo_t, window)
    if got is not None:
        assert sm[got - 1] <= lo_t and all(x > lo_t for x in sm[:got - 1])
        higher = steps_to(losses, hi_t, window)
        assert higher is not None and higher <= got  # a looser target is reached no later
    else:
        assert all(x > lo_t for x in sm)


def test_learning_rates_follow_the_stability_limits() -> None:
    assert lr_grid(0.1, 1) == [0.1]
    assert stability_ratio(2) == pytest.approx(math.cos(math.pi / 3))
    assert stability_ratio(3) == pytest.approx(math.cos(2 * math.pi / 5))
    assert lr_grid(0.1, 2) == pytest.approx([0.1, 0.1 * math.sqrt(0.5), 0.05])


def test_a_pilot_is_cached_and_a_damaged_entry_is_trained_again(cache: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    spec = PilotSpec(model="mlp", data="digits", split=(2,), schedule="ddg-pipelined", batch_size=32, steps=6,
                     lr=0.05, seed=1)
    first = run_pilot(spec)
    assert len(first) == 6 and all(math.isfinite(x) for x in first)
    (entry,) = (cache / "pilots").iterdir()
    monkeypatch.setattr(pilot, "_train", lambda s: pytest.fail("trained although cached"))
    assert run_pilot(spec) == first
    entry.write_text("{broken")
    monkeypatch.setattr(pilot, "_train", lambda s: [1.0] * s.steps)
    assert run_pilot(spec) == [1.0] * 6
    assert run_pilot(PilotSpec(**{**spec.__dict__, "seed": 2})) == [1.0] * 6  # another seed: another entry


def test_the_in_process_pilot_is_the_executors_math(cache: Path) -> None:
    """The pilot of a 2-stage split is the engine run the executor equals bit for bit
    (tests/test_executor_dist.py): the same losses as run_inprocess_job."""
    from ddgsim.execute.config import RunConfig
    from ddgsim.execute.job import run_inprocess_job
    from ddgsim.plan.format import Plan

    spec = PilotSpec(model="mlp", data="digits", split=(2,), schedule="ddg", batch_size=32, steps=8, lr=0.05, seed=3)
    plan = cache / "p.json"
    cache.mkdir(parents=True, exist_ok=True)
    Plan.for_split(model="mlp", split=[2], num_units=6, schedule="ddg", batch_size=32).save(plan)
    res, _job, _ds = run_inprocess_job(RunConfig(plan=plan, steps=8, data="digits", seed=3, lr=0.05))
    assert run_pilot(spec, cache=False) == [float(x) for x in res.losses]


def _fake_pilot(steps: dict[int, int | None]):  # type: ignore[no-untyped-def]
    seen: list[dict[int, tuple[int, ...]]] = []

    def run(splits: dict[int, tuple[int, ...]]) -> tuple[float, list[SimpleNamespace]]:
        seen.append(dict(splits))
        out = [SimpleNamespace(stages=k, median_steps=steps[k], reached=[steps[k]] if steps[k] else [], lr=0.1)
               for k in splits]
        return 1.5, out

    return run, seen


def test_rank_multiplies_steps_by_iteration_time() -> None:
    """ddg: each K's own pilot; the fastest to the target wins even when its iterations are slower."""
    layouts = {1: ("1 × 1", (), 10.0), 2: ("2", (3,), 6.0), 3: ("3", (2, 4), 4.0)}
    run, seen = _fake_pilot({1: 100, 2: 150, 3: None})
    target, rows = rank("ddg-pipelined", layouts, run)
    assert target == 1.5 and seen == [{1: (), 2: (3,), 3: (2, 4)}]
    assert [r.stages for r in rows] == [2, 1, 3]
    assert rows[0].time_s == pytest.approx(150 * 6.0 / 1e3) and math.isinf(rows[2].time_s)
    # gpipe computes BP's gradients at every K: K = 1's pilot for all, so fastest iterations win
    run, seen = _fake_pilot({1: 100})
    _, rows = rank("gpipe", layouts, run)
    assert seen == [{1: ()}] and [r.stages for r in rows] == [3, 2, 1]
    assert staleness_of("ddg", 4) == 3 and staleness_of("gpipe", 4) == 0


def test_converge_cli(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["converge", "mlp", "--data", "digits", "--stages", "1,2", "--pilot-steps", "40", "--seeds", "2",
            "--batch-size", "64", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["stages"] for r in out["per_k"]] == [1, 2] and out["target_loss"] > 0
    bp, k2 = out["per_k"]
    assert bp["ratio_to_bp"] == 1.0 and len(bp["steps_to_target"]) == 2
    assert len(k2["lr_tried"]) == 3 and k2["lr"] in [float(x) for x in k2["lr_tried"]]
    assert [p[0] for p in bp["curve"]][:2] == [1, 2] and len(bp["curve"]) == 40  # 40 steps: every step
    assert bp["curve"][-1][1] == pytest.approx(bp["final_loss"], abs=0.05)
    assert main(argv[:-1]) == 0  # the table, from the cache
    text = capsys.readouterr().out
    assert "steps until the training loss" in text and "vs BP" in text


@pytest.mark.parametrize(("argv", "says"), [
    (["converge", "mlp", "--stages", "1,2"], "--data is required"),
    (["converge", "mlp", "--data", "mnist"], "unknown --data 'mnist'"),
    (["converge", "mlp", "--data", "digits", "--stages", "0"], "--stages must be positive integers"),
    (["converge", "mlp", "--data", "digits", "--seeds", "0"], "--seeds must be >= 1"),
    (["converge", "mlp", "--data", "digits", "--schedule", "gpipe"], "--schedule must be ddg or ddg-pipelined"),
    (["plan", "mlp", "--gpus", "2", "--target-loss", "1"], "--target-loss is for --objective time-to-loss"),
    (["plan", "mlp", "--gpus", "2", "--objective", "time-to-loss"], "--data is required"),
    (["plan", "mlp", "--gpus", "2", "--objective", "time-to-loss", "--data", "digits", "--schedule", "all"],
     "plans one schedule"),
    (["plan", "mlp", "--gpus", "2", "--max-staleness", "-1"], "--max-staleness must be >= 0"),
    (["plan", "mlp", "--gpus", "3", "--stages", "3", "--max-staleness", "1"], "--max-staleness 1"),
])
def test_bad_input_is_one_line(argv: list[str], says: str, cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1, err


def test_plan_by_time_to_loss(cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The plan's K is the one with the least steps × ms in its own table, and the plan file says so."""
    out = tmp_path / "plan.json"
    assert main(["plan", "mlp", "--gpus", "3", "--replicas", "1", "--objective", "time-to-loss", "--data", "digits",
                 "--pilot-steps", "40", "--seeds", "2", "--batch-size", "64", "--out", str(out),
                 "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "objective time-to-loss" in text and "time to training loss" in text
    plan = json.loads(out.read_text())
    ttl = plan["extra"]["time_to_loss"]
    assert plan["extra"]["objective"] == "time-to-loss" and len(ttl["rows"]) == 3
    times = [r["time_to_target_s"] if r["time_to_target_s"] is not None else math.inf for r in ttl["rows"]]
    best = ttl["rows"][times.index(min(times))]
    assert len(plan["stages"]) == best["stages"]
    for r in ttl["rows"]:
        if r["median_steps"] is not None:
            assert r["time_to_target_s"] == pytest.approx(r["median_steps"] * r["iteration_ms"] / 1e3)


def test_max_staleness_bounds_every_search(cache: Path, tmp_path: Path) -> None:
    """ddg-pipelined with at most 1 iteration of staleness: at most 2 stages, in the layout search
    of a large cluster too; gpipe is not limited."""
    out = tmp_path / "p.json"
    assert main(["plan", "resnet56", "--gpus", "16", "--scenario", "cluster-2x8", "--max-staleness", "1",
                 "--out", str(out), "--json"]) == 0
    plan = json.loads(out.read_text())
    assert len(plan["stages"]) <= 2 and plan["extra"]["max_staleness"] == 1
    assert main(["plan", "resnet56", "--gpus", "4", "--replicas", "1", "--schedule", "gpipe", "--max-staleness", "0",
                 "--out", str(out), "--json"]) == 0
    assert len(json.loads(out.read_text())["stages"]) > 1


def test_a_plan_past_the_measured_staleness_says_so(cache: Path) -> None:
    """Without pilots a stale plan names its staleness as unmeasured; pilots of enough stages silence it;
    a schedule without staleness never has the note."""
    from ddgsim.commands.plan_render import staleness_note

    assert "no pilot has measured any" in (staleness_note("mlp", "ddg-pipelined", 3) or "")
    assert staleness_note("mlp", "gpipe", 3) is None and staleness_note("mlp", "ddg", 1) is None
    run_pilot(PilotSpec(model="mlp", data="digits", split=(2,), schedule="ddg", batch_size=32, steps=2, lr=0.05,
                        seed=0))
    assert "pilots measured up to 1" in (staleness_note("mlp", "ddg", 3) or "")
    assert staleness_note("mlp", "ddg", 2) is None


def test_the_loss_against_time_figure_has_both_curves_per_k() -> None:
    from ddgsim.compare.figures import loss_vs_time

    curves = [{"K": k, "measured_s": [0.1, 0.2], "measured_loss": [1.0, 0.5], "predicted_s": [0.1, 0.25],
               "predicted_loss": [1.0, 0.4]} for k in (1, 2)]
    fig = loss_vs_time(curves, 0.6, "t")
    assert [t.name for t in fig.data] == ["K=1 measured", "K=1 predicted", "K=2 measured", "K=2 predicted"]
    assert fig.data[1].line.dash == "dash" and fig.layout.shapes[0].y0 == 0.6


def test_long_pilots_keep_no_copy_of_the_model_per_step(cache: Path) -> None:
    """The in-process engine with every_iteration=False holds the weights of the start and the end only
    (a 3 000-step gpt-mini run otherwise holds 10 GB), with the same final weights and losses."""
    from ddgsim.execute.job import run_inprocess_job
    from ddgsim.plan.format import Plan

    cache.mkdir(parents=True, exist_ok=True)
    plan = cache / "p.json"
    Plan.for_split(model="mlp", split=[2], num_units=6, schedule="ddg", batch_size=32).save(plan)
    from ddgsim.execute.config import RunConfig

    cfg = RunConfig(plan=plan, steps=12, data="digits", seed=1, lr=0.05)
    full, _, _ = run_inprocess_job(cfg)
    lean, _, _ = run_inprocess_job(cfg, every_iteration=False)
    assert lean.losses == full.losses
    assert all(torch.equal(a, b) for a, b in zip(lean.weights[-1], full.weights[-1], strict=True))
    distinct = {id(w) for row in lean.weights for w in row}
    assert len(distinct) == 2 * 2  # two stages: the initial and the final copy of each
