"""The in-process engine computes the exact DDG update (DESIGN.md, "The DDG update")."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
from executor_helpers import batches, mlp, schedule_for, split_sequential
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from ddgsim.execute.engine import DeadlockError, micro_slices, run_inprocess
from ddgsim.execute.stage import OptimConfig, StageWorker, StepDecay

CE = nn.functional.cross_entropy
OPTIM = OptimConfig(lr=StepDecay(0.1, (3,), 0.5), momentum=0.9, nesterov=True, weight_decay=5e-4)


def plain_sgd(model: nn.Module, batch_fn, steps: int, optim: OptimConfig) -> list[torch.Tensor]:  # type: ignore[no-untyped-def]
    opt = torch.optim.SGD(model.parameters(), lr=optim.lr_at(0), momentum=optim.momentum,
                          nesterov=optim.nesterov, weight_decay=optim.weight_decay)
    out = [parameters_to_vector(model.parameters()).detach().clone()]
    for t in range(steps):
        for g in opt.param_groups:
            g["lr"] = optim.lr_at(t)
        x, y = batch_fn(t)
        opt.zero_grad()
        CE(model(x), y).backward()
        opt.step()
        out.append(parameters_to_vector(model.parameters()).detach().clone())
    return out


def test_k1_ddg_equals_plain_sgd_bit_for_bit() -> None:
    ref_model = mlp([6, 12, 5])
    model = copy.deepcopy(ref_model)
    fn = batches(6, 5)
    ref = plain_sgd(ref_model, fn, 6, OPTIM)
    res = run_inprocess([model], schedule_for("ddg", 1, 6), fn, CE, OPTIM)
    assert len(res.weights) == 7
    for t in range(7):
        assert torch.equal(res.weights[t][0], ref[t]), t


def test_bp_on_two_stages_equals_plain_sgd_bit_for_bit() -> None:
    ref_model = mlp([6, 12, 9, 5])
    model = copy.deepcopy(ref_model)
    fn = batches(6, 5)
    ref = plain_sgd(ref_model, fn, 5, OPTIM)
    res = run_inprocess(split_sequential(model, [2]), schedule_for("bp", 2, 5), fn, CE, OPTIM)
    for t in range(6):
        assert torch.equal(torch.cat(res.weights[t]), ref[t]), t


@pytest.mark.parametrize("name", ["bp", "ddg", "ddg-pipelined"])
def test_a_stage_without_parameters_trains_like_the_rest(name: str) -> None:
    """A first stage with nothing to learn (``flatten``) has no backward to run: the other
    stages train exactly as if it were part of stage 1 (bp: bit-identical to plain SGD)."""
    ref_model = nn.Sequential(nn.Flatten(), *mlp([6, 12, 9, 5]))
    fn = batches(6, 5)
    three = run_inprocess(split_sequential(copy.deepcopy(ref_model), [1, 3]), schedule_for(name, 3, 5), fn,
                          CE, OPTIM)
    assert three.weights[-1][0].numel() == 0
    if name == "bp":
        ref = plain_sgd(ref_model, fn, 5, OPTIM)
        assert torch.equal(torch.cat(three.weights[-1]), ref[-1])
    else:  # stage 0's delay is empty work: the same as the 2-stage plan with delays 1, 0 for the rest
        merged = nn.Sequential(*list(ref_model)[:3])
        two = run_inprocess([copy.deepcopy(merged), nn.Sequential(*list(ref_model)[3:])],
                            schedule_for(name, 2, 5), fn, CE, OPTIM)
        assert torch.equal(torch.cat(three.weights[-1]), torch.cat(two.weights[-1]))


def test_ddg_and_ddg_pipelined_give_identical_weights() -> None:
    fn = batches(6, 5)
    a = run_inprocess(split_sequential(mlp([6, 10, 8, 7, 5]), [2, 4]), schedule_for("ddg", 3, 7), fn, CE, OPTIM)
    b = run_inprocess(split_sequential(mlp([6, 10, 8, 7, 5]), [2, 4]), schedule_for("ddg-pipelined", 3, 7), fn, CE, OPTIM)
    for wa, wb in zip(a.weights, b.weights, strict=True):
        for x, y in zip(wa, wb, strict=True):
            assert torch.equal(x, y)
    assert a.losses == b.losses


@pytest.mark.parametrize("name", ["gpipe", "1f1b"])
def test_micro_batch_schedules_match_bp(name: str) -> None:
    """M = 3 micro-batches (sizes 3, 3, 2) weighted by their share = the full-batch gradient."""
    fn = batches(6, 5, batch=8)
    a = run_inprocess(split_sequential(mlp([6, 10, 7, 5]), [2, 4]), schedule_for("bp", 3, 4), fn, CE, OPTIM)
    b = run_inprocess(split_sequential(mlp([6, 10, 7, 5]), [2, 4]), schedule_for(name, 3, 4, 3), fn, CE, OPTIM)
    assert a.losses == pytest.approx(b.losses, rel=1e-5)
    for wa, wb in zip(a.weights, b.weights, strict=True):
        assert torch.allclose(torch.cat(wa), torch.cat(wb), rtol=1e-5, atol=1e-6)


def test_delayed_stage_keeps_initial_weights_until_its_first_update() -> None:
    fn = batches(4, 3)
    res = run_inprocess(split_sequential(mlp([4, 6, 6, 3]), [2, 4]), schedule_for("ddg", 3, 5), fn, CE,
                        OptimConfig(lr=0.1), record=True)
    # stage 0 (delay 2) does not move during iterations 0 and 1, then updates with batch 0
    assert torch.equal(res.weights[2][0], res.weights[0][0])
    assert not torch.equal(res.weights[3][0], res.weights[2][0])
    assert [(a.iteration, a.batch) for a in res.applied[0]] == [(2, 0), (3, 1), (4, 2)]
    assert [(a.iteration, a.batch) for a in res.applied[2]] == [(t, t) for t in range(5)]
    assert all(a.lr == 0.1 for a in res.applied[0])


def test_lr_is_taken_at_the_update_iteration() -> None:
    fn = batches(4, 3)
    res = run_inprocess(split_sequential(mlp([4, 6, 3]), [2]), schedule_for("ddg", 2, 4), fn, CE,
                        OptimConfig(lr=lambda t: 0.1 * (t + 1)))
    assert [a.lr for a in res.applied[0]] == pytest.approx([0.2, 0.3, 0.4])


def test_micro_slices() -> None:
    assert micro_slices(7, 3) == [slice(0, 3), slice(3, 5), slice(5, 7)]


def test_deadlock_is_reported() -> None:
    sched = schedule_for("ddg", 2, 2)
    s0 = list(sched.actions[0])
    first_b = next(a for a in s0 if a.kind == "B")
    s0.remove(first_b)
    bad = dataclasses.replace(sched, actions=(tuple([first_b, *s0]), sched.actions[1]))
    with pytest.raises(DeadlockError):
        run_inprocess(split_sequential(mlp([4, 6, 3]), [2]), bad, batches(4, 3), CE, OptimConfig(lr=0.1))


def _reference_grad(model: nn.Sequential, split: list[int], w_s: list[torch.Tensor], x, y, k: int) -> torch.Tensor:  # type: ignore[no-untyped-def]
    ref = copy.deepcopy(model)
    vector_to_parameters(torch.cat(w_s), ref.parameters())
    ref.zero_grad()
    CE(ref(x), y).backward()
    stage = split_sequential(ref, split)[k]
    grads = [p.grad.reshape(-1) for p in stage.parameters() if p.grad is not None]
    return torch.cat(grads) if grads else torch.zeros(0)


@settings(max_examples=8, deadline=None)
@given(
    widths=st.lists(st.integers(2, 7), min_size=3, max_size=6),
    data=st.data(),
    steps=st.integers(1, 6),
    pipelined=st.booleans(),
)
def test_applied_gradient_is_true_gradient_at_stashed_weights(widths, data, steps, pipelined) -> None:  # type: ignore[no-untyped-def]
    """g_k^t = ∇_{w_k} f_{x(s)}(w^s), s = t − (K−1−k), checked against full backprop at w^s.

    Not bit-exact in general: the reference sums the same products but full backprop of
    the unsplit model may fuse/order the reductions differently (e.g. the loss backward
    through a different graph), so we compare with allclose(rtol=1e-5, atol=1e-6).
    """
    model = mlp(widths, seed=data.draw(st.integers(0, 3)))
    n_layers = len(model)
    k_total = data.draw(st.integers(1, min(4, n_layers)))
    split = sorted(data.draw(st.sets(st.integers(1, n_layers - 1), min_size=k_total - 1, max_size=k_total - 1)))
    fn = batches(widths[0], widths[-1], batch=5, seed=1)
    pristine = copy.deepcopy(model)
    name = "ddg-pipelined" if pipelined else "ddg"
    res = run_inprocess(split_sequential(model, split), schedule_for(name, k_total, steps), fn, CE,
                        OptimConfig(lr=0.05, momentum=0.5), record=True)
    for k in range(k_total):
        d = k_total - 1 - k
        assert [a.batch for a in res.applied[k]] == list(range(max(0, steps - d)))
        for a in res.applied[k]:
            s = a.batch
            assert a.iteration == s + d
            assert a.weights_used is not None and a.grad is not None
            assert torch.equal(a.weights_used, res.weights[s][k])
            x, y = fn(s)
            ref = _reference_grad(pristine, split, res.weights[s], x, y, k)
            assert torch.allclose(a.grad, ref, rtol=1e-5, atol=1e-6), (k, s)


def test_worker_state_round_trip_rebuilds_graph_bit_identically() -> None:
    """Checkpoint stage 0 of a K=2 ddg run mid-flight, restore into a fresh module, continue."""
    torch.manual_seed(0)
    x = [torch.randn(4, 5) for _ in range(4)]
    g = [torch.randn(4, 6) for _ in range(4)]

    def fresh() -> StageWorker:
        torch.manual_seed(1)
        mod = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.Dropout(0.3))
        return StageWorker(mod, index=0, num_stages=2, delay=1, optim=OPTIM)

    def run(w: StageWorker, t0: int, t1: int) -> None:
        for t in range(t0, t1):
            w.forward(t, x[t])
            if t >= 1:
                w.backward(t - 1, g[t - 1])
                w.update(t - 1)

    a = fresh()
    run(a, 0, 4)
    b = fresh()
    run(b, 0, 2)
    import io
    buf = io.BytesIO()
    torch.save(b.state_dict(), buf)
    buf.seek(0)
    c = fresh()
    c.load_state_dict(torch.load(buf, weights_only=True))
    run(c, 2, 4)
    assert torch.equal(a.flat_weights(), c.flat_weights())
    for (n1, b1), (_, b2) in zip(a.module.named_buffers(), c.module.named_buffers(), strict=True):
        assert torch.equal(b1, b2), n1


@pytest.mark.parametrize("name", ["bp", "ddg", "ddg-pipelined", "gpipe", "1f1b"])
def test_stashed_weight_versions_match_memory_model(name: str) -> None:
    """Distinct stashed parameter storages besides the live one = ddgsim.predict.memory's stashed_versions."""
    from ddgsim.predict.memory import in_flight_and_versions

    k_total, m = 3, (2 if name in ("gpipe", "1f1b") else 1)
    sched = schedule_for(name, k_total, 6, m)
    peak = [0] * k_total

    def probe(k: int, _a, workers) -> None:  # type: ignore[no-untyped-def]
        w = workers[k]
        live = w.params[0].untyped_storage().data_ptr()
        stashed = {st.params[0].untyped_storage().data_ptr() for st in w.stash.values()} - {live}
        peak[k] = max(peak[k], len(stashed))

    run_inprocess(split_sequential(mlp([4, 6, 6, 3]), [2, 4]), sched, batches(4, 3), CE,
                  OptimConfig(lr=0.1, momentum=0.9), on_action=probe)
    assert peak == [in_flight_and_versions(sched.actions[k], m)[1] for k in range(k_total)]
    if name.startswith("ddg"):
        assert peak == [k_total - 1 - k for k in range(k_total)]


def _through_bytes(state: dict) -> dict:  # type: ignore[type-arg]
    """A state dict as a checkpoint stores it (torch.save / torch.load)."""
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)  # type: ignore[no-any-return]


@pytest.mark.parametrize(("name", "K", "M"), [("ddg", 3, 1), ("gpipe", 2, 2), ("1f1b", 2, 2)])
def test_restoring_a_worker_after_every_action_changes_nothing(name: str, K: int, M: int) -> None:
    """After each action, every worker is wiped (weights zeroed, stashes, gradients and losses
    dropped) and restored from its saved state: the run ends with the uninterrupted run's
    weights and losses, bit for bit. The batch of 5 splits unevenly over 2 micro-batches, the
    model has dropout (the stage RNG) and the in-flight forwards are recomputed on restore."""
    def model() -> nn.Sequential:
        torch.manual_seed(2)
        return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Dropout(0.2), nn.Linear(6, 6), nn.Tanh(),
                             nn.Linear(6, 3))

    fn = batches(4, 3, batch=5, seed=4)
    sched = schedule_for(name, K, 5, M)
    split = [2, 4][: K - 1]
    ref = run_inprocess(split_sequential(model(), split), sched, fn, CE, OPTIM, seed=7, record=True)

    def wipe_and_restore(k: int, a: object, workers: list[StageWorker]) -> None:
        for w in workers:
            saved = _through_bytes(w.state_dict())
            with torch.no_grad():
                for p in w.module.parameters():
                    p.zero_()
            w.stash.clear()
            w.grads.clear()
            w.losses.clear()
            w.load_state_dict(saved)
            again = w.state_dict()  # restoring is the identity on the saved state
            assert again["stash"].keys() == saved["stash"].keys()
            for t, kept in saved["stash"].items():
                assert again["stash"][t]["micros"].keys() == kept["micros"].keys()
                assert [m["done"] for m in again["stash"][t]["micros"].values()] == \
                    [m["done"] for m in kept["micros"].values()]
                assert (again["stash"][t]["flat"] is None) == (kept["flat"] is None)

    got = run_inprocess(split_sequential(model(), split), sched, fn, CE, OPTIM, seed=7, record=True,
                        on_action=wipe_and_restore)
    for t in range(len(ref.weights)):
        for k in range(K):
            assert torch.equal(got.weights[t][k], ref.weights[t][k]), (t, k)
    assert got.losses == ref.losses
    for k in range(K):
        assert [(x.iteration, x.batch, x.lr) for x in got.applied[k]] == \
            [(x.iteration, x.batch, x.lr) for x in ref.applied[k]]
        assert all(torch.equal(x.grad, y.grad) and torch.equal(x.weights_used, y.weights_used)
                   for x, y in zip(got.applied[k], ref.applied[k], strict=True))
        # absolute: stage k applies the batches of its U actions, at iteration batch + delay
        want = [a.batch for a in sched.actions[k] if a.kind == "U"]
        assert [x.batch for x in ref.applied[k]] == want
        assert [x.iteration for x in ref.applied[k]] == [b + sched.delay(k) for b in want]


def test_step_decay_multiplies_at_each_milestone() -> None:
    lr = StepDecay(0.5, (2, 4), 0.1)
    assert [lr(t) for t in range(6)] == pytest.approx([0.5, 0.5, 0.05, 0.05, 0.005, 0.005], rel=1e-12)


def test_optim_config_rejects_what_sgd_rejects() -> None:
    OptimConfig(lr=0.1, momentum=0.5, nesterov=True)  # any momentum > 0 allows Nesterov
    OptimConfig(lr=0.1, momentum=0.0, nesterov=False, weight_decay=0.0)
    with pytest.raises(ValueError, match=r"^nesterov needs momentum > 0, got momentum=0.0$"):
        OptimConfig(lr=0.1, momentum=0.0, nesterov=True)
    with pytest.raises(ValueError, match=r"^momentum \(-0.1\) and weight_decay \(0.0\) must be >= 0$"):
        OptimConfig(lr=0.1, momentum=-0.1, nesterov=False, weight_decay=0.0)
    with pytest.raises(ValueError, match=r"^momentum \(0.9\) and weight_decay \(-1.0\) must be >= 0$"):
        OptimConfig(lr=0.1, momentum=0.9, nesterov=False, weight_decay=-1.0)


class _Unused(nn.Module):
    """A layer with a parameter its forward never uses (as a frozen head or a skipped branch)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.lin = nn.Linear(n, n)
        self.spare = nn.Parameter(torch.ones(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.lin(x))


def test_unused_parameters_get_zero_gradients_on_every_stage() -> None:
    torch.manual_seed(0)
    stages = [nn.Sequential(nn.Linear(4, 5), _Unused(5)), nn.Sequential(_Unused(5), nn.Linear(5, 3), _Unused(3))]
    res = run_inprocess(stages, schedule_for("ddg", 2, 4), batches(4, 3), CE, OptimConfig(lr=0.1), record=True)
    for k, stage in enumerate(stages):
        n_spare = sum(m.spare.numel() for m in stage.modules() if isinstance(m, _Unused))
        spare_at = [i for i, (name, _) in enumerate(stage.named_parameters()) if name.endswith("spare")]
        assert spare_at and n_spare == 3 * len(spare_at)
        for ap in res.applied[k]:  # the spare parameters' slots of the applied gradient are zero
            sizes = [p.numel() for p in stage.parameters()]
            offsets = [sum(sizes[:i]) for i in range(len(sizes))]
            for i in spare_at:
                assert torch.count_nonzero(ap.grad[offsets[i]:offsets[i] + sizes[i]]) == 0


def test_losses_are_the_batches_cross_entropy() -> None:
    model = mlp([6, 8, 5])
    fn = batches(6, 5)
    ref = copy.deepcopy(model)
    res = run_inprocess([model], schedule_for("bp", 1, 3), fn, CE, OptimConfig(lr=0.0))
    with torch.no_grad():
        want = [float(CE(ref(fn(t)[0]), fn(t)[1])) for t in range(3)]  # lr 0: the weights never move
    assert res.losses == pytest.approx(want, rel=1e-6)


def test_integer_inputs_enter_the_first_stage_without_gradients() -> None:
    torch.manual_seed(0)
    stages = [nn.Sequential(nn.Embedding(10, 4), nn.Flatten()), nn.Sequential(nn.Linear(12, 3))]

    def tokens(t: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(t)
        return torch.randint(0, 10, (6, 3), generator=g), torch.randint(0, 3, (6,), generator=g)

    before = stages[0][0].weight.detach().clone()
    res = run_inprocess(stages, schedule_for("ddg", 2, 4), tokens, CE, OptimConfig(lr=0.5))
    assert not torch.equal(stages[0][0].weight, before)  # the embedding trained
    assert all(math.isfinite(v) for v in res.losses)


def test_worker_defaults_and_its_one_line_errors() -> None:
    torch.manual_seed(3)
    x, y = torch.randn(4, 5), torch.tensor([0, 1, 2, 0])
    with pytest.raises(ValueError, match=r"^the last stage needs a loss_fn$"):
        StageWorker(nn.Linear(5, 3), index=0, num_stages=1, delay=0, optim=OptimConfig(lr=0.1))
    mod = nn.Sequential(nn.Dropout(0.5), nn.Linear(5, 3))
    plain = StageWorker(copy.deepcopy(mod), index=0, num_stages=1, delay=0, optim=OptimConfig(lr=0.1), loss_fn=CE)
    spelled = StageWorker(copy.deepcopy(mod), index=0, num_stages=1, delay=0, optim=OptimConfig(lr=0.1),
                          loss_fn=CE, micro_batches=1, record=False, seed=0)
    plain.forward(0, x, y)  # weight 1.0, one micro-batch: the whole loss
    spelled.forward(0, x, y, micro=0, weight=1.0)
    for w in (plain, spelled):
        w.backward(0)
        w.update(0)
        assert w.stash == {}  # not recording: nothing kept after the update
    assert plain.losses[0] == spelled.losses[0]
    assert torch.equal(plain.flat_weights(), spelled.flat_weights())  # same dropout masks (seed 0)
