"""Staleness compensation (``OptimConfig.warmup / delay_scaled_lr / predict_weights``): the exact
math of each, in the StageWorker the engine and the executor share, and the executor equal to
the engine bit for bit with all three on."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from launch_helpers import (
    assert_clean,
    assert_same,
    engine_weights,
    execute,
    final_weights,
    write_plan,
)
from torch import nn

from ddgsim.errors import UserError
from ddgsim.execute.config import RunConfig
from ddgsim.execute.stage import OptimConfig, StageWorker
from ddgsim.theory.bounds import stability_ratio as delay_scale


def test_warmup_is_linear_then_the_schedule() -> None:
    o = OptimConfig(lr=0.2, warmup=4)
    assert [o.lr_at(t) for t in range(6)] == pytest.approx([0.05, 0.1, 0.15, 0.2, 0.2, 0.2])
    assert OptimConfig(lr=0.2).lr_at(0) == 0.2


def test_delay_scale_is_the_stability_ratio() -> None:
    from ddgsim.theory.bounds import levin_may_limit

    for tau in range(6):
        assert delay_scale(tau) == pytest.approx(levin_may_limit(tau) / levin_may_limit(0))
    assert delay_scale(0) == 1.0 and delay_scale(1) == pytest.approx(0.5)


def _worker(delay: int, **optim: object) -> StageWorker:
    torch.manual_seed(0)
    mod = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    return StageWorker(mod, index=0, num_stages=1, delay=delay,
                       optim=OptimConfig(lr=0.1, momentum=0.9, **optim),  # type: ignore[arg-type]
                       loss_fn=nn.functional.cross_entropy, record=True)


def _drive(w: StageWorker, steps: int) -> list[list[torch.Tensor]]:
    """DDG order on one stage with delay d: F t, then B/U of batch t − d. Returns the live weights
    just before each forward."""
    gen = torch.Generator().manual_seed(1)
    live = []
    for t in range(steps):
        live.append([p.detach().clone() for p in w.params])
        w.forward(t, torch.randn(5, 3, generator=gen), torch.randint(0, 2, (5,), generator=gen))
        s = t - w.delay
        if s >= 0:
            w.backward(s)
            w.update(s)
    return live


def test_weight_prediction_forwards_with_w_minus_tau_gamma_v() -> None:
    """Batch t is forwarded (and backpropagated) with w − τ·γ_t·v, v the momentum buffer at that
    forward; the update goes to the live weights; τ = 0 predicts nothing."""
    w = _worker(2, predict_weights=True)
    gen = torch.Generator().manual_seed(1)
    bufs_at: dict[int, list[torch.Tensor | None]] = {}
    live_at: dict[int, list[torch.Tensor]] = {}
    for t in range(7):
        live_at[t] = [p.detach().clone() for p in w.params]
        bufs_at[t] = [None if (st := w.optimizer.state.get(p)) is None else st["momentum_buffer"].clone()
                      for p in w.params]
        w.forward(t, torch.randn(5, 3, generator=gen), torch.randint(0, 2, (5,), generator=gen))
        if t - 2 >= 0:
            w.backward(t - 2)
            w.update(t - 2)
    predicted_any = False
    for a in w.applied:
        t = a.batch
        want = torch.cat([(p if b is None else p - 2 * 0.1 * b).reshape(-1)
                          for p, b in zip(live_at[t], bufs_at[t], strict=True)])
        assert a.weights_used is not None and torch.equal(a.weights_used, want)
        predicted_any |= any(b is not None for b in bufs_at[t])
    assert predicted_any
    plain = _worker(0, predict_weights=True)
    live = _drive(plain, 4)
    for a in plain.applied:
        assert a.weights_used is not None and torch.equal(a.weights_used, torch.cat([p.reshape(-1) for p in live[a.batch]]))


def test_delay_scaled_rates_are_applied_per_stage() -> None:
    w = _worker(2, delay_scaled_lr=True, warmup=3)
    _drive(w, 6)
    for a in w.applied:
        assert a.lr == pytest.approx(0.1 * min(1.0, (a.iteration + 1) / 3) * math.cos(2 * math.pi / 5))


def test_bad_compensation_settings() -> None:
    with pytest.raises(ValueError, match="needs momentum > 0"):
        OptimConfig(lr=0.1, predict_weights=True)
    with pytest.raises(UserError, match="warmup_steps must be >= 0, got -1"):  # the field; the CLI says its flag
        RunConfig(plan=Path("p.json"), steps=1, warmup_steps=-1)
    with pytest.raises(UserError, match=r"weight_prediction .* needs momentum > 0"):
        RunConfig(plan=Path("p.json"), steps=1, momentum=0.0, weight_prediction=True)


@pytest.mark.slow
def test_the_executor_compensates_exactly_as_the_engine(tmp_path: Path) -> None:
    """K = 3 ddg-pipelined on digits with warm-up, delay-scaled rates and weight prediction: real gloo
    processes end with the engine's weights bit for bit (the options really change the run)."""
    plan = write_plan(tmp_path / "p.json", "mlp", [1, 3], "ddg-pipelined")
    common = ["--steps", "10", "--data", "digits", "--seed", "2", "--no-eval", "--lr", "0.05"]
    comp = ["--warmup-steps", "4", "--lr-delay-scale", "--weight-prediction"]
    r = execute(str(plan), *common, *comp, "--final-weights", str(tmp_path / "w"))
    assert r.returncode == 0, r.stderr
    assert_clean(r.stderr)
    want = engine_weights([str(plan), *common, *comp])
    assert_same(final_weights(tmp_path / "w", 3), want)
    plain = engine_weights([str(plan), *common])
    assert not all(torch.equal(a, b) for a, b in zip(plain, want, strict=True))
