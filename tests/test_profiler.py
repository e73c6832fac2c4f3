"""The real profiler: structural checks only (no timed assertions)."""

from __future__ import annotations

import math
import os
from typing import Any

import pytest
import torch

from ddgsim.errors import UserError
from ddgsim.models.registry import build_model, get_spec
from ddgsim.profile.format import from_json
from ddgsim.profile.measure import profile_model


def _profile(name: str, batch: int = 8, **kw):
    spec = get_spec(name)
    return profile_model(build_model(spec), name=name, input_shape=spec.input_shape,
                         batch_size=batch, reps=2, warmup=1, progress=False, command="test", **kw)


def test_mlp_profile_rows() -> None:
    batch = 8
    prof = _profile("mlp", batch)
    assert [u.name for u in prof.units] == ["flatten", "fc1", "relu1", "fc2", "relu2", "fc3"]
    assert (prof.model, prof.batch_size, prof.device, prof.threads, prof.dtype) == ("mlp", 8, "cpu", 1, "float32")
    for u in prof.units:
        assert u.forward_ms > 0
        assert u.output_bytes == math.prod(u.output_shape) * 4
        assert u.output_shape[0] == batch
    by = {u.name: u for u in prof.units}
    # Nothing upstream of the leading flatten learns: it has no backward and saves nothing.
    assert by["flatten"].backward_ms == 0 and by["flatten"].activation_bytes == 0
    for name in ("fc1", "relu1", "fc2", "relu2", "fc3"):
        assert by[name].backward_ms > 0
    assert by["fc1"].param_bytes == (64 * 64 + 64) * 4
    assert by["fc2"].param_bytes == (64 * 32 + 32) * 4
    assert by["relu1"].param_bytes == 0
    # A Linear layer saves its input (B x in_features floats); its weight is excluded.
    assert by["fc1"].activation_bytes == batch * 64 * 4
    assert by["fc2"].activation_bytes == batch * 64 * 4
    assert by["fc3"].activation_bytes == batch * 32 * 4
    # ReLU saves its result.
    assert by["relu1"].activation_bytes == batch * 64 * 4
    assert prof.whole_model_ms > 0


def test_independent_saved_count_for_linear() -> None:
    """Cross-check fc2 against a hand count of what autograd saves for nn.Linear."""
    lin = torch.nn.Linear(64, 32)
    x = torch.randn(8, 64, requires_grad=True)
    saved: list[torch.Tensor] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        lin(x)
    non_params = [t for t in saved if t.untyped_storage().data_ptr() != lin.weight.untyped_storage().data_ptr()]
    assert sum(t.numel() * t.element_size() for t in non_params) == 8 * 64 * 4
    prof = _profile("mlp", 8)
    assert prof.units[3].name == "fc2"
    assert prof.units[3].activation_bytes == 8 * 64 * 4


def test_smallcnn_profile_meta_and_round_trip() -> None:
    prof = _profile("smallcnn", 4)
    assert len(prof.units) == 9
    assert all(u.forward_ms > 0 and u.backward_ms > 0 for u in prof.units)
    assert all(u.activation_bytes > 0 for u in prof.units if u.name in ("conv1", "bn1", "conv2", "fc"))
    assert prof.units[0].param_bytes == 8 * 1 * 3 * 3 * 4
    meta = prof.meta
    for key in ("command", "device_name", "torch_version", "threads", "reps", "date", "sum_over_whole"):
        assert key in meta, key
    assert meta["command"] == "test" and meta["reps"] == 2 and meta["threads"] == 1
    assert meta["torch_version"] == torch.__version__
    # the other processes' load during the measurement itself, in CPUs (not this process's own)
    assert meta["other_load"] is None or 0.0 <= meta["other_load"] <= (os.cpu_count() or 1)
    assert meta["sum_over_whole"] == pytest.approx(prof.sum_ms / prof.whole_model_ms, rel=1e-3)
    cpu = meta["thread_cpu_ms"]
    assert len(cpu["units"]) == 9 and cpu["whole"] > 0 and cpu["sum"] > 0
    assert from_json(prof.to_json()) == prof


def test_thread_clock_rows_and_both_clocks_in_meta() -> None:
    prof = _profile("smallcnn", 4, clock="thread")
    assert prof.meta["clock"].startswith("thread")
    cpu, wall = prof.meta["thread_cpu_ms"], prof.meta["wall_ms"]
    rows = [t for u in prof.units for t in (u.forward_ms, u.backward_ms)]
    assert rows == pytest.approx([t for pair in cpu["units"] for t in pair], abs=1e-3)
    assert prof.whole_model_ms == pytest.approx(cpu["whole"], abs=1e-3)
    assert len(wall["units"]) == 9 and wall["whole"] > 0
    with pytest.raises(UserError, match="threads 1"):
        _profile("mlp", 2, clock="thread", threads=2)
    with pytest.raises(UserError, match="clock"):
        _profile("mlp", 2, clock="sundial")


def test_threads_restored_and_model_params_untouched() -> None:
    spec = get_spec("smallcnn")
    model = build_model(spec)
    before = [p.detach().clone() for p in model.parameters()]
    torch.set_num_threads(2)
    profile_model(model, name="smallcnn", input_shape=spec.input_shape, batch_size=4, reps=1,
                  warmup=0, progress=False, threads=1)
    assert torch.get_num_threads() == 2
    for a, p in zip(before, model.parameters(), strict=True):
        assert torch.equal(a, p)
        assert p.grad is None


def test_progress_bar_does_not_break(capsys: pytest.CaptureFixture[str]) -> None:
    spec = get_spec("mlp")
    profile_model(build_model(spec), name="mlp", input_shape=spec.input_shape, batch_size=2,
                  reps=1, warmup=0, progress=True)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("kw", [{"batch_size": 0}, {"reps": 0}, {"threads": 0}, {"warmup": -1}])
def test_bad_arguments(kw: dict[str, int]) -> None:
    spec = get_spec("mlp")
    args: dict[str, Any] = {"batch_size": 2, "reps": 1, "warmup": 0, "threads": 1} | kw
    with pytest.raises(UserError):
        profile_model(build_model(spec), name="mlp", input_shape=spec.input_shape, progress=False, **args)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_without_cuda_is_a_user_error() -> None:
    with pytest.raises(UserError, match="CUDA"):
        _profile("mlp", 2, device="cuda")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_profile() -> None:
    prof = _profile("smallcnn", 16, device="cuda", threads=None)
    assert prof.device == "cuda" and prof.threads is None
    assert all(u.forward_ms > 0 and u.backward_ms > 0 for u in prof.units)
    assert prof.meta["clock"] == "cuda events"
    assert prof.meta["device_name"] == torch.cuda.get_device_name(0)


def test_update_cost_is_measured_and_shared_by_parameter_tensors() -> None:
    """The optimizer step is timed for real and shared out by trainable tensors."""
    from ddgsim.models.registry import build_model, get_spec
    from ddgsim.profile.measure import profile_model

    spec = get_spec("mlp")
    prof = profile_model(build_model(spec), name="mlp", input_shape=spec.input_shape, batch_size=8,
                         reps=2, warmup=1, progress=False)
    total = prof.meta["update_ms"]
    assert total > 0
    assert sum(u.update_ms or 0.0 for u in prof.units) == pytest.approx(total, rel=1e-3, abs=1e-3)
    for u in prof.units:
        assert u.update_ms is not None
        assert (u.update_ms > 0) == (u.param_bytes > 0)


class _Spin(torch.nn.Module):
    """A unit whose forward and backward cost ``n`` chained matrix products of a 64×64 weight."""

    def __init__(self, n: int, learns: bool = True) -> None:
        super().__init__()
        self.n = n
        self.w = torch.nn.Parameter(torch.eye(64) * 0.5, requires_grad=learns)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.n):
            x = x @ self.w
        return x


def test_insitu_step_attributes_time_to_the_unit_that_spends_it() -> None:
    from ddgsim.profile.insitu import insitu_step

    units = [torch.nn.ReLU(), _Spin(1), _Spin(200), _Spin(1)]
    x, g = torch.randn(64, 64), torch.randn(64, 64)
    st = insitu_step(units, x, g)
    fwd, bwd = st.forward["wall"], st.backward["wall"]
    assert max(range(4), key=lambda i: fwd[i]) == 2 and max(range(4), key=lambda i: bwd[i]) == 2
    assert bwd[0] == 0.0  # nothing before the ReLU learns: no backward for it, no hook fired
    # the rows add up to the step (the marks are consecutive)
    assert sum(fwd) + sum(bwd) == pytest.approx(st.total["wall"], rel=0.02, abs=0.5)
    assert units[1].w.grad is not None and units[3].w.grad is not None
    # micro-batches: the times are per micro-batch, and every micro-batch's gradient accumulates
    for u in units[1:]:
        u.w.grad = None
    st2 = insitu_step(units, x, g, micro_batches=4)
    assert set(st2.forward) == {"wall", "thread"} and len(st2.backward["wall"]) == 4
    manual = [u.w for u in units[1:]]
    expected = torch.autograd.grad(torch.nn.Sequential(*units)(x), manual, g)
    for p, e in zip(manual, expected, strict=True):
        assert p.grad is not None and torch.allclose(p.grad, e, rtol=1e-4, atol=1e-4)


def test_insitu_step_keeps_no_unit_output_alive() -> None:
    """Hooks sit on the graph: by the time the first unit backpropagates, the outputs of the later
    units are freed, as in a plain training step (keeping them would change the step's memory)."""
    import gc
    import weakref

    from ddgsim.profile.insitu import insitu_step

    refs: list[weakref.ref[torch.Tensor]] = []
    alive_at_first_unit: list[list[bool]] = []

    class Probe(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = x * 2
            refs.append(weakref.ref(out))
            return out

    class Check(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
            return x.clone()

        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
            gc.collect()
            alive_at_first_unit.append([r() is not None for r in refs])
            return grad

    class First(_Spin):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return Check.apply(super().forward(x))  # type: ignore[no-any-return]

    units = [First(1), Probe(), _Spin(1), Probe(), _Spin(1)]
    insitu_step(units, torch.randn(8, 64), torch.randn(8, 64), micro_batches=2)
    assert len(refs) == 4 and len(alive_at_first_unit) == 2
    # micro-batch 1 runs backward first, while micro-batch 0's graph (its outputs) still waits
    assert alive_at_first_unit[0] == [True, True, False, False]
    assert alive_at_first_unit[1] == [False, False, False, False]


@pytest.mark.parametrize("method", ["in-situ", "isolated"])
def test_profile_records_both_methods_micro_batches_and_the_machine(method: str) -> None:
    from ddgsim.profile.machine import machine_key

    prof = profile_model(build_model(get_spec("mlp")), name="mlp", input_shape=(1, 8, 8), batch_size=8,
                         reps=2, warmup=1, progress=False, method=method, micro_batches=(4, 2))
    assert set(prof.meta["methods"]) == {"in-situ", "isolated"}
    chosen = prof.meta["methods"][method]["units"]
    assert [[round(u.forward_ms, 4), round(u.backward_ms, 4)] for u in prof.units] == chosen
    assert sorted(prof.micro_batch_ms) == ["2", "4"] and len(prof.micro_batch_ms["4"]) == prof.num_units
    assert prof.measurement is not None and prof.measurement["method"] == method
    assert prof.measurement["micro_batches"] == [2, 4]
    assert prof.machine is not None and prof.machine_key == machine_key(prof.machine)
    again = from_json(prof.to_json())
    assert again == prof and again.micro_costs(2) == [tuple(p) for p in prof.micro_batch_ms["2"]]
    with pytest.raises(UserError, match="micro-batch count 3 must be >= 2 and divide the batch size 8"):
        profile_model(build_model(get_spec("mlp")), name="mlp", input_shape=(1, 8, 8), batch_size=8, reps=1,
                      progress=False, micro_batches=(3,))


def test_the_saved_tensor_count_runs_after_every_timed_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """A forward under saved-tensor hooks slowed the steps right after it 2-5x: it once ran inside the
    last timed round, and with --reps 2 (median = mean of two) the rows came out 60 % above the whole
    step. It runs after the rounds now, on the same inputs, so the byte counts are unchanged."""
    from ddgsim.profile import isolated, measure

    events: list[str] = []
    real_step, real_count, real_whole = measure.insitu_step, isolated.UnitRunner.count_saved, measure._whole_step

    def step(*a: Any, **k: Any) -> Any:
        events.append("in-situ step")
        return real_step(*a, **k)

    def count(self: Any, x: torch.Tensor) -> Any:
        events.append("count saved")
        return real_count(self, x)

    def whole(*a: Any) -> None:
        events.append("whole step")
        real_whole(*a)

    monkeypatch.setattr(measure, "insitu_step", step)
    monkeypatch.setattr(isolated.UnitRunner, "count_saved", count)
    monkeypatch.setattr(measure, "_whole_step", whole)
    prof = _profile("mlp", 8)
    first_count = events.index("count saved")
    rounds = prof.meta["rounds"]["untimed"] + prof.meta["rounds"]["timed"]
    assert rounds == 3 and prof.meta["rounds"]["timed"] == 2  # reps=2: a quick look, no minimum times
    assert events[:first_count].count("in-situ step") == rounds and events[:first_count].count("whole step") == rounds
    assert set(events[first_count:]) == {"count saved"} and len(events[first_count:]) == prof.num_units
    by = {u.name: u for u in prof.units}
    assert by["fc1"].activation_bytes == 8 * 64 * 4 and by["flatten"].activation_bytes == 0


def test_rows_that_disagree_with_the_whole_step_are_called_off(capsys: pytest.CaptureFixture[str]) -> None:
    from ddgsim.commands.profile import _summary
    from ddgsim.compare.inputs import profile_warning
    from ddgsim.profile.format import ROWS_WHOLE_TOL, Profile, UnitProfile

    def prof(rows_ms: float, whole_ms: float) -> Profile:
        units = [UnitProfile(name="u", forward_ms=rows_ms / 3, backward_ms=2 * rows_ms / 3, output_bytes=4,
                             param_bytes=4, activation_bytes=4)]
        return Profile(model="mlp", batch_size=8, input_shape=[4], device="cpu", threads=1, dtype="float32",
                       units=units, whole_model_ms=whole_ms, measurement={"reps": 2})

    assert ROWS_WHOLE_TOL == 0.05
    assert prof(104.9, 100.0).rows_disagree() is None and prof(95.1, 100.0).rows_disagree() is None
    off = prof(160.0, 100.0).rows_disagree()
    assert off == ("its rows add up to 160.0 ms, +60% off the whole step measured beside them "
                   "(100.0 ms; tolerance ±5%), from 2 round(s)")
    assert prof(94.0, 100.0).rows_disagree() is not None
    _summary(prof(160.0, 100.0), "measured", None, None)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"warning: profile mlp: {off}; measure again with more rounds: --no-cache --reps 5"]
    _summary(prof(101.0, 100.0), "measured", None, None)
    assert capsys.readouterr().err == ""
    w = profile_warning(prof(160.0, 100.0))
    assert w is not None and off in w


def test_short_rounds_run_until_the_minimum_times_have_passed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rounds of a millisecond: five timed rounds right after two untimed ones measured mlp's update
    50 % slow; the profile warms up for MIN_WARMUP_S and times MIN_TIMED_S of rounds (never fewer than
    asked, never more than the cap); long rounds keep exactly warmup + reps."""
    from ddgsim.profile import timing

    clock = [0.0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock[0])

    def run(warmup: int, reps: int, round_s: float, cap: int = 10_000) -> tuple[list[bool], timing.Rounds]:
        rounds = timing.Rounds(warmup, reps, cap)
        timed = []
        while (r := rounds.next()) is not None:
            timed.append(r >= rounds.warm)
            clock[0] += round_s
        return timed, rounds

    timed, rounds = run(2, 5, 0.001)
    assert timed == sorted(timed)  # untimed rounds first, then timed ones
    assert rounds.warm == timed.count(False) == math.ceil(timing.MIN_WARMUP_S / 0.001)
    assert rounds.timed == timed.count(True) == math.ceil(timing.MIN_TIMED_S / 0.001)
    timed, rounds = run(2, 5, 1.0)
    assert timed == [False] * 2 + [True] * 5
    timed, rounds = run(0, 3, 0.001, cap=50)
    assert len(timed) == 50 and timed.count(True) == 3  # the cap leaves room for the timed rounds asked for
    timed, rounds = run(1, timing.QUICK_REPS - 1, 0.001)  # --reps 1 or 2: a quick look, exactly as asked
    assert timed == [False] + [True] * (timing.QUICK_REPS - 1)
