"""``plan`` and ``simulate`` as library calls: the docs' Python example runs and agrees with the CLI;
requests name their bad values."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from sim_helpers import make_profile

from ddgsim.cli import main
from ddgsim.errors import UserError
from ddgsim.plan.simulate import SimulateRequest, simulate_plan, simulate_split
from ddgsim.planner import Pilots, PlanOutcome, PlanRequest, plan
from ddgsim.predict.scenario import load_scenario
from ddgsim.profile.format import Profile

ROOT = Path(__file__).resolve().parent.parent


def _docs_example(page: str) -> str:
    text = (ROOT / page).read_text()
    section = text.split("## From Python", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.+?)\n```", section, flags=re.S)
    assert len(blocks) == 1
    return blocks[0]


@pytest.mark.parametrize("page", ["docs/cli.md", "README.md"])
def test_the_docs_example_runs_and_matches_the_cli(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    scope: dict[str, object] = {}
    exec(compile(_docs_example(page), page, "exec"), scope)  # the page, as a reader runs it
    printed = capsys.readouterr().out
    outcome = scope["outcome"]
    assert isinstance(outcome, PlanOutcome)
    assert printed.startswith(f"K = {outcome.chosen.stages}, split ")
    library = json.loads((tmp_path / "plan.json").read_text())
    assert main(["plan", "resnet20", "--gpus", "2", "--json", "--no-progress"]) == 0
    cli = json.loads(capsys.readouterr().out)
    for key in ("split", "schedule", "stages", "batch_size", "micro_batches"):
        assert library[key] == cli[key], key
    assert library["predicted"]["iteration_ms"] == pytest.approx(cli["predicted"]["iteration_ms"], rel=1e-12)
    assert outcome.iteration_ms == pytest.approx(cli["predicted"]["iteration_ms"], rel=1e-12)
    assert library["extra"]["layouts"]["any_layout_bound_ms"] == cli["extra"]["layouts"]["any_layout_bound_ms"]


@pytest.fixture
def profile() -> Profile:
    return make_profile([1, 2, 3, 4, 5, 6, 2, 1], [2, 4, 6, 8, 10, 12, 4, 2],
                        [4096] * 8, [1000] * 8, [2**20] * 8, batch_size=32)


def test_pure_pipelines_keep_every_k_and_the_plan_reproduces(profile: Profile) -> None:
    outcome = plan(PlanRequest(profile=profile, devices=3, replicas=1, scenario=load_scenario("pcie-4gpu"),
                               scenario_ref="pcie-4gpu"))
    assert [r.stages for r in outcome.per_schedule["ddg-pipelined"]] == [1, 2, 3]
    assert outcome.layouts is None and outcome.bound_ms is None and not outcome.assumed
    assert outcome.plan.scenario == "pcie-4gpu" and outcome.plan.extra["objective"] == "throughput"
    assert simulate_plan(outcome.plan, profile).iteration_ms == pytest.approx(outcome.iteration_ms, rel=1e-12)


def test_a_replicated_plan_reproduces_and_is_bounded(profile: Profile) -> None:
    outcome = plan(PlanRequest(profile=profile, devices=8, scenario=load_scenario("cluster-2x4"),
                               schedules=("ddg", "gpipe")))
    assert outcome.schedule in ("ddg", "gpipe") and set(outcome.best_per_schedule()) == {"ddg", "gpipe"}
    assert outcome.bound_ms is not None and outcome.bound_ms <= outcome.iteration_ms
    result = simulate_plan(outcome.plan, profile)
    assert result.iteration_ms == pytest.approx(outcome.plan.predicted.iteration_ms, rel=1e-12)


@pytest.mark.parametrize(("fields", "says"), [
    ({"devices": 0}, "devices must be >= 1, got 0"),
    ({"devices": 4, "stages": 5}, "stages must be in 1..4 (devices), got 5"),
    ({"devices": 4, "stages": 3, "replicas": 2}, "stages 3 × replicas 2 needs more than the 4 devices of devices"),
    ({"devices": 2, "schedules": ("pipedream",)}, "unknown schedules ['pipedream']"),
    ({"devices": 2, "allreduce": "butterfly"}, "unknown allreduce 'butterfly'"),
    ({"devices": 2, "memory_limit_bytes": 0.0}, "memory_limit_bytes must be > 0, got 0.0"),
    ({"devices": 2, "objective": "time-to-loss"}, "objective 'time-to-loss' needs pilots"),
    ({"devices": 8, "scenario": load_scenario("pcie-4gpu")}, "devices 8 but scenario 'pcie-4gpu' has 4 devices"),
    ({"devices": 9, "stages": 9}, "stages 9 is more stages than the 8 units"),
])
def test_a_bad_request_names_its_value(profile: Profile, fields: dict[str, object], says: str) -> None:
    with pytest.raises(UserError) as err:
        PlanRequest(profile=profile, **fields)  # type: ignore[arg-type]
    assert says in str(err.value)


def test_bad_pilots_and_what_plan_itself_rejects(profile: Profile) -> None:
    with pytest.raises(UserError, match=r"seeds must be >= 1, got 0"):
        Pilots(data="digits", seeds=0)
    with pytest.raises(UserError, match=r"max_staleness 0: the fewest stages asked for, 2"):
        plan(PlanRequest(profile=profile, devices=2, stages=2, max_staleness=0, schedules=("ddg",)))
    with pytest.raises(UserError, match="fits in memory"):
        plan(PlanRequest(profile=profile, devices=2, memory_limit_bytes=1.0))


@pytest.mark.parametrize(("fields", "says", "flags"), [
    ({"devices": 0}, "devices must be >= 1, got 0", "--gpus must be >= 1, got 0"),
    ({"devices": 4, "replicas": "two"}, "replicas must be auto or a number in 1..4 (devices), got 'two'",
     "--replicas must be auto or a number in 1..4 (--gpus), got 'two'"),
    ({"devices": 2, "memory_limit_gib": -1.0}, "memory_limit_gib must be > 0 GiB, got -1.0",
     "--memory-limit must be > 0 GiB, got -1.0"),
    ({"devices": 2, "objective": "time-to-loss", "schedule": "all"},
     "objective time-to-loss plans one schedule: give schedule NAME, not all",
     "--objective time-to-loss plans one schedule: give --schedule NAME, not all"),
    ({"devices": 2, "model": "mlp", "profile": "p.json"}, "give either model or profile FILE, not both",
     "give either MODEL or --profile FILE, not both"),
    ({"devices": 2}, "give a model (see `python -m ddgsim models`) or profile FILE",
     "give a MODEL (see `python -m ddgsim models`) or --profile FILE"),
])
def test_plan_inputs_name_parameters_and_the_command_its_flags(fields: dict[str, object], says: str,
                                                               flags: str) -> None:
    """Checked when built, before anything loads; the command names the same parameters as its flags."""
    from ddgsim.cli import FLAGS_KEY, build_parser
    from ddgsim.errors import ParameterError
    from ddgsim.planner import PlanInputs

    with pytest.raises(ParameterError) as err:
        PlanInputs(**fields)  # type: ignore[arg-type]
    assert str(err.value) == says
    assert err.value.naming(getattr(build_parser().parse_args(["plan", "--gpus", "1"]), FLAGS_KEY)) == flags


def test_plan_inputs_load_a_profile_file(profile: Profile, tmp_path: Path) -> None:
    from ddgsim.planner import PlanInputs

    path = tmp_path / "p.json"
    profile.save(path)
    named = PlanInputs(devices=2, profile=str(path), schedule="all", replicas="1", memory_limit_gib=1.0).request()
    assert named.request.schedules == ("bp", "ddg", "ddg-pipelined", "gpipe", "1f1b")
    assert named.request.replicas == 1 and named.request.memory_limit_bytes == 2**30
    assert named.profile_file == str(path) and named.profile_note == f"{path} (given)"
    with pytest.raises(UserError, match=r"batch_size 64 but profile .* was measured at batch 32; drop batch_size"):
        PlanInputs(devices=2, profile=str(path), batch_size=64).request()


def test_plan_by_time_to_loss_takes_the_default_batch(capsys: pytest.CaptureFixture[str]) -> None:
    """Without --batch-size the pilots' values are checked as Pilots does (this used to raise a TypeError)."""
    assert main(["plan", "mlp", "--gpus", "2", "--objective", "time-to-loss", "--data", "digits", "--lr", "0"]) == 2
    assert capsys.readouterr().err == "error: --lr must be > 0, got 0.0\n"


def test_converge_request_names_its_values() -> None:
    from ddgsim.converge.usecase import ConvergeRequest

    with pytest.raises(UserError, match="data is required for pilot trainings"):
        Pilots(data="")
    with pytest.raises(UserError, match="unknown data 'mnist'"):
        Pilots(data="mnist")
    with pytest.raises(UserError, match="schedule must be ddg or ddg-pipelined for pilots, got 'gpipe'"):
        ConvergeRequest(model="mlp", pilots=Pilots(data="digits"), schedule="gpipe")
    with pytest.raises(UserError, match="batch_size must be >= 1, got 0"):
        ConvergeRequest(model="mlp", pilots=Pilots(data="digits"), batch_size=0)


def test_simulate_split_defaults_and_errors(profile: Profile) -> None:
    r = simulate_split(SimulateRequest(profile=profile, stages=2, schedule="ddg"))
    assert r.scenario == "ideal-2" and len(r.split) == 1
    replicated = simulate_split(SimulateRequest(profile=profile, stages=2, replicas=2, schedule="ddg"))
    assert replicated.scenario == "ideal-4" and list(replicated.replicas) == [2, 2]
    with pytest.raises(UserError, match="give stages K or split CUTS"):
        SimulateRequest(profile=profile)
    with pytest.raises(UserError, match=r"give one of devices, layout and replicas > 1, got devices=\('dev0',\), "):
        SimulateRequest(profile=profile, stages=1, devices=("dev0",), replicas=2)
    with pytest.raises(UserError, match="iterations must be >= 6 \\(2K\\+2\\) for K = 2, got 3"):
        simulate_split(SimulateRequest(profile=profile, stages=2, iterations=3))
    with pytest.raises(UserError, match="stages 3 needs 3 devices but scenario 'ideal-2' has 2"):
        simulate_split(SimulateRequest(profile=profile, stages=3, scenario="ideal-2"))


def test_simulate_inputs_read_a_plan_and_name_their_parameters(profile: Profile, tmp_path: Path) -> None:
    """A plan file's split, devices, scenario and profile, as the executor would run them; the values
    checked when built, named as parameters (the command names them as its flags)."""
    from ddgsim.errors import ParameterError
    from ddgsim.plan.records import ProfileRef
    from ddgsim.plan.simulate import SimulateInputs

    path = tmp_path / "prof.json"
    profile.save(path)
    outcome = plan(PlanRequest(profile=profile, devices=3, replicas=1, profile_ref=ProfileRef.of(profile, path)))
    outcome.plan.save(tmp_path / "plan.json")
    named = SimulateInputs(plan=str(tmp_path / "plan.json")).request()
    assert named.request.split == tuple(outcome.plan.split) and named.profile_file == str(path)
    assert not named.assumed and named.request.devices == tuple(s.device for s in outcome.plan.stages)
    assert simulate_split(named.request).iteration_ms == pytest.approx(outcome.iteration_ms, rel=1e-12)
    with pytest.raises(ParameterError) as err:
        SimulateInputs(stages=0)
    assert str(err.value) == "stages must be > 0, got 0"
    assert err.value.naming({"stages": "--gpus"}) == "--gpus must be > 0, got 0"
    with pytest.raises(ParameterError) as err:
        SimulateInputs(devices="dev0,dev1", replicas=2)
    assert str(err.value) == "give devices or replicas, not both"
    with pytest.raises(UserError, match="give a model, profile FILE or plan PLAN"):
        SimulateInputs(stages=2).request()
