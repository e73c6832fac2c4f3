"""``python -m ddgsim plan``: output, plan file, and clear errors."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from sim_helpers import make_profile

from ddgsim.cli import main
from ddgsim.plan import format as plan_file


@pytest.fixture
def prof(tmp_path: Path) -> Path:
    p = make_profile([1, 2, 3, 4, 5, 6, 2, 1], [2, 4, 6, 8, 10, 12, 4, 2],
                     [4096] * 8, [1000] * 8, [2**20] * 8, batch_size=32)
    path = tmp_path / "prof.json"
    p.save(path)
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_plan_json_and_file(prof: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "plan.json"
    code, stdout, _ = _run(capsys, "plan", "--profile", str(prof), "--gpus", "3", "--json", "--out", str(out),
                           "--replicas", "1")
    assert code == 0
    data = json.loads(stdout)
    for key in ("split", "schedule", "stages"):
        assert key in data
    assert data["predicted"]["iteration_ms"] > 0
    assert plan_file.load(out).to_json() == data
    assert data["extra"]["baselines"]["even"]["gap_pct"] >= -1e-6


def test_plan_searches_replicas_and_the_plan_reproduces(prof: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Default --replicas auto: the best K × D on 8 devices of a cluster; the file carries the replicas,
    and `simulate --plan` reproduces its prediction."""
    out = tmp_path / "plan.json"
    code, stdout, _ = _run(capsys, "plan", "--profile", str(prof), "--gpus", "8", "--scenario", "cluster-2x4",
                           "--json", "--out", str(out))
    assert code == 0
    data = json.loads(stdout)
    found = data["extra"]["layouts"]
    best = found["best"]
    assert best["iteration_ms"] <= found["pipeline"]["iteration_ms"] * (1 + 1e-12)
    assert best["iteration_ms"] <= found["data_parallel"]["iteration_ms"] * (1 + 1e-12)
    assert found["any_layout_bound_ms"] <= best["iteration_ms"]
    plan = plan_file.load(out)
    assert list(plan.replicas) == best["replica_counts"] and plan.split == best["split"]
    assert len(best["replica_counts"]) == best["stages"] and max(best["replica_counts"]) == best["replicas"]
    code, stdout, _ = _run(capsys, "simulate", "--plan", str(out), "--json")
    assert code == 0
    sim = json.loads(stdout)
    assert sim["replicas"] == list(plan.replicas)
    assert sim["iteration_ms"] == pytest.approx(plan.predicted.iteration_ms, rel=1e-12)
    code, stdout, _ = _run(capsys, "plan", "--profile", str(prof), "--gpus", "8", "--scenario", "cluster-2x4")
    assert "best K for each replica count D" in stdout and "best pure pipeline" in stdout
    bounded = [D for D in range(1, 9) if str(D) not in found["per_replicas"]]  # every D is searched or named
    text = " ".join(stdout.split())
    assert not bounded or f"D = {', '.join(map(str, bounded))}: every K bounded out" in text
    assert "no K searched fits in memory" not in text
    # a cluster is not symmetric: the bound is the relaxation's, and the plan says so
    assert "free communication" in text and "per-stage D_k not searched exactly" in text
    # on a symmetric scenario the exact per-stage search's optimum is the bound, in the closed form
    code, stdout, _ = _run(capsys, "plan", "--profile", str(prof), "--gpus", "8", "--scenario", "ideal-8")
    text = " ".join(stdout.split())
    assert code == 0 and "beats" in text and "in the closed form (work, messages, all-reduces, overheads" in text
    assert "free communication" not in text and "within 0.0% of it" in text


def test_simulate_plan_reproduces_prediction(prof: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "plan.json"
    assert _run(capsys, "plan", "--profile", str(prof), "--gpus", "3", "--scenario", "pcie-4gpu",
                "--schedule", "ddg", "--out", str(out), "--json")[0] == 0
    plan = plan_file.load(out)
    code, stdout, _ = _run(capsys, "simulate", "--plan", str(out), "--json")
    assert code == 0
    sim = json.loads(stdout)
    assert sim["split"] == plan.split
    assert sim["iteration_ms"] == pytest.approx(plan.predicted.iteration_ms, rel=1e-12)
    assert tuple(sim["staleness"]) == plan.predicted.staleness


def test_plan_tables_mark_the_choice(prof: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = _run(capsys, "plan", "--profile", str(prof), "--gpus", "2", "--replicas", "1")
    assert code == 0
    assert "★ chosen" in stdout
    assert "even = the authors' split" in stdout and "params = equal parameters" in stdout
    assert "ideal-2" in stdout and "assumed" in stdout


def test_schedule_all_lists_each_schedule(prof: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = _run(capsys, "plan", "--profile", str(prof), "--gpus", "2", "--schedule", "all")
    assert code == 0
    for name in ("bp", "ddg", "ddg-pipelined", "gpipe", "1f1b"):
        assert name in stdout


def test_trace_written(prof: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "t.json"
    assert _run(capsys, "plan", "--profile", str(prof), "--gpus", "2", "--trace", str(trace))[0] == 0
    events = json.loads(trace.read_text())["traceEvents"]
    assert any(e.get("ph") == "X" for e in events)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--gpus", "0"], "--gpus must be >= 1, got 0"),
        (["--gpus", "4", "--stages", "9"], "--stages must be in 1..4"),
        (["--gpus", "9", "--stages", "9", "--scenario", "ideal-9"], "more stages than the 8 units"),
        (["--gpus", "2", "--memory-limit", "0.001"], "fits in memory"),
        (["--gpus", "2", "--memory-limit", "-1"], "--memory-limit must be > 0"),
        (["--gpus", "2", "--objective", "latency"], "unknown objective 'latency'"),
        (["--gpus", "2", "--schedule", "pipedream"], "unknown schedule 'pipedream'"),
        (["--gpus", "8", "--scenario", "pcie-4gpu"], "has 4 devices"),
        (["--gpus", "2", "--scenario", "nowhere"], "nowhere"),
        (["--gpus", "4", "--replicas", "8"], "--replicas must be auto or a number in 1..4 (--gpus), got '8'"),
        (["--gpus", "4", "--replicas", "two"], "--replicas must be auto or a number in 1..4"),
        (["--gpus", "40", "--replicas", "33", "--scenario", "ideal-40"], "stage 0 has 33 replicas but a micro-batch has 32 samples"),
        (["--gpus", "4", "--stages", "3", "--replicas", "2"], "--stages 3 × --replicas 2 needs more than the 4 devices"),
        (["--gpus", "4", "--allreduce", "butterfly"], "unknown --allreduce 'butterfly'"),
    ],
)
def test_bad_input_one_line_exit_2(prof: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   argv: list[str], message: str) -> None:
    out = tmp_path / "never.json"
    code, _, err = _run(capsys, "plan", "--profile", str(prof), *argv, "--out", str(out))
    assert code == 2
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_memory_error_names_stage_and_amount(prof: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "plan", "--profile", str(prof), "--gpus", "2", "--memory-limit", "0.001")
    assert code == 2
    assert "stage" in err and "GiB over" in err


def test_no_fit_names_the_nearest_miss_of_the_layouts_searched(prof: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With replicas, the error quotes the layout that overflows least among those searched (not
    the whole model on one device), with its replicas."""
    from ddgsim.plan.layouts import search_layouts
    from ddgsim.predict.scenario import load_scenario
    from ddgsim.profile.format import load

    limit = 0.0004
    found = search_layouts(load(str(prof)), load_scenario("ideal-4"), "ddg", 4, memory_limit_bytes=limit * 2**30,
                           replicas=[2])
    miss = found.nearest_miss
    assert found.best is None and miss is not None and miss.layout is not None
    assert all(miss.over_bytes <= r.overflow.over_bytes for r in found.per_replicas.values() if r.overflow)
    code, _, err = _run(capsys, "plan", "--profile", str(prof), "--gpus", "4", "--replicas", "2",
                        "--memory-limit", str(limit), "--schedule", "ddg")
    assert code == 2 and err.count("\n") == 1
    assert f"into {miss.stages} stage(s) × D = 2 fits" in err and f"needs {miss.need_bytes / 2**30:.3f} GiB" in err


def test_plan_output_survives_a_terminal_without_unicode(prof: Path) -> None:
    """"×", "★" and "–" become "?" on an ASCII terminal instead of a traceback."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    r = subprocess.run([sys.executable, "-m", "ddgsim", "plan", "--profile", str(prof), "--gpus", "3",
                        "--scenario", "ideal-3", "--no-progress"], capture_output=True, text=True, env=env,
                       check=False)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "K = " in r.stdout and "?" in r.stdout


def test_per_stage_layouts_say_why_they_were_not_searched(prof: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "plan", "--profile", str(prof), "--gpus", "4", "--stages", "2")
    assert code == 0 and "per-stage D_k not searched: the stage count or the replica count is fixed" in out

def test_an_odd_batch_plans_uneven_shards(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """31 samples: every D in 1..4 is tried (shards a sample apart), the plan reproduces in simulate."""
    odd = tmp_path / "odd.json"
    make_profile([1, 2, 3, 4], [2, 4, 6, 8], [4096] * 4, [1000] * 4, [2**20] * 4, batch_size=31).save(odd)
    out_plan = tmp_path / "plan.json"
    code, out, _ = _run(capsys, "plan", "--profile", str(odd), "--gpus", "4", "--json", "--out", str(out_plan))
    assert code == 0
    found = json.loads(out)["extra"]["layouts"]
    assert found["data_parallel"]["replicas"] == 4
    code, sim, _ = _run(capsys, "simulate", "--plan", str(out_plan), "--json")
    assert code == 0 and json.loads(sim)["iteration_ms"] == pytest.approx(found["best"]["iteration_ms"], rel=1e-12)
    code, out, _ = _run(capsys, "plan", "--profile", str(odd), "--gpus", "4", "--replicas", "3", "--stages", "1")
    assert code == 0 and "shards of 11 of a micro-batch's 31 samples" in " ".join(out.split())


def test_replica_counts_that_cannot_help_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """8 samples on 8 devices: 5, 6 or 7 replicas hold 2 samples each at most, as 4 do: not searched."""
    small = tmp_path / "small.json"
    make_profile([1, 2, 3, 4], [2, 4, 6, 8], [4096] * 4, [1000] * 4, [2**20] * 4, batch_size=8).save(small)
    code, out, _ = _run(capsys, "plan", "--profile", str(small), "--gpus", "8", "--scenario", "ideal-8")
    assert code == 0
    assert "D = 5, 6, 7 not searched: a replica would hold as many of a micro-batch's 8 samples" in " ".join(out.split())


def test_unknown_model_lists_known(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "plan", "resnet7", "--gpus", "2")
    assert code == 2 and "resnet110" in err


def test_a_foreign_profile_gets_one_line_naming_its_machine(capsys: pytest.CaptureFixture[str],
                                                             tmp_path: Path) -> None:
    from ddgsim.profile.machine import fingerprint

    here = make_profile([1.0] * 8, [2.0] * 8)
    mine = tmp_path / "mine.json"
    replace(here, machine=fingerprint()).save(mine)
    theirs = tmp_path / "theirs.json"
    other = {**fingerprint(), "cpu_model": "AMD EPYC 7B13", "cpu_count": 64}
    replace(here, machine=other).save(theirs)
    code, out, err = _run(capsys, "plan", "--profile", str(mine), "--gpus", "2", "--json")
    assert code == 0 and "note:" not in err
    code, out, err = _run(capsys, "plan", "--profile", str(theirs), "--gpus", "2", "--json")
    assert code == 0 and json.loads(out)["stages"]  # stdout stays clean JSON
    notes = [line for line in err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "AMD EPYC 7B13, 64 CPUs" in notes[0] and "(theirs.json" in notes[0]
    assert "not this machine" in notes[0] and "ddgsim profile" in notes[0]
    code, out, err = _run(capsys, "simulate", "--profile", str(mine), "--gpus", "2", "--scenario", "pcie-4gpu")
    assert code == 0 and "a CPU profile on scenario 'pcie-4gpu' of GPUs" in err
    code, out, err = _run(capsys, "simulate", "--profile", str(mine), "--gpus", "2", "--schedule", "gpipe",
                          "--micro-batches", "4")
    assert code == 0 and "no measured costs for 4 micro-batches" in err


def test_a_batch_size_other_than_the_profiles_is_refused(prof: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A profile's costs are for its batch: --batch-size asking for another is one line, status 2, nothing
    written; the same batch is fine; and a profile of a model this tool cannot build gets hints that fit."""
    out = tmp_path / "plan.json"
    for command in (("plan", "--gpus", "2", "--out", str(out)), ("simulate", "--gpus", "2")):
        code, _, err = _run(capsys, command[0], "--profile", str(prof), *command[1:], "--batch-size", "64")
        assert code == 2 and not out.exists()
        assert err.strip().splitlines()[-1] == (
            f"error: --batch-size 64 but profile {prof} was measured at batch 32; drop --batch-size to plan batch 32, "
            "or profile batch 64 (measure it where the profile came from)")
    code, stdout, _ = _run(capsys, "plan", "--profile", str(prof), "--gpus", "2", "--batch-size", "32", "--out", str(out))
    assert code == 0 and out.exists()
    text = " ".join(stdout.split())
    assert "its model 'synthetic' (from the profile) is not one this tool builds" in text
    assert "python -m ddgsim execute" not in text


def test_notes_fold_to_the_terminal_and_stay_one_line_in_a_log() -> None:
    import io

    from ddgsim.commands._args import for_terminal

    line = "note: the figures describe " + "a machine far away, " * 12 + "not this one"

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert for_terminal(line, io.StringIO()) == line
    folded = for_terminal(line, Tty())
    assert len(folded.splitlines()) > 1 and " ".join(x.strip() for x in folded.splitlines()) == line
    assert all(x.startswith("  ") for x in folded.splitlines()[1:])
