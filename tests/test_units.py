"""Cut points and units: exact reproduction of the whole model, skips never cut."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ddgsim.errors import UserError
from ddgsim.models.registry import MODELS, build_model, get_spec
from ddgsim.profile.units import build_stages, cut_points, split_units, trace_graph


def _calibrate_bn(model: nn.Module, x: torch.Tensor) -> None:
    """Set BN running stats to one batch's statistics (a fresh deep ResNet is NaN in eval)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.momentum = None  # cumulative average: after one batch, exactly its statistics
    model.train()
    with torch.no_grad():
        model(x)


def _run_decoupled(stages: list[nn.Sequential], x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Forward stage by stage on detached inputs, then backward stage by stage (as DDG does)."""
    ins, outs = [], []
    h = x
    for k, stage in enumerate(stages):
        h_in = h.detach().requires_grad_(k > 0)
        h = stage(h_in)
        ins.append(h_in)
        outs.append(h)
    g: torch.Tensor | None = grad
    for k in reversed(range(len(stages))):
        if not outs[k].requires_grad:  # e.g. a leading flatten: nothing upstream learns
            break
        torch.autograd.backward(outs[k], g)
        g = ins[k].grad
    return outs[-1]


def _check_exact(name: str, splits: list[list[int]] | None, mode: str, batch: int = 2) -> int:
    """Build the model twice (same seed); for each split, compare whole vs staged exactly.

    ``splits=None`` means one split with every legal cut point cut. Both copies run every
    split, so their BatchNorm running statistics stay in lockstep in train mode.
    """
    spec = get_spec(name)
    gen = torch.Generator().manual_seed(1)
    x = spec.io.example_input(batch, gen)  # token ids for gpt-mini
    ref, test = build_model(spec, seed=0), build_model(spec, seed=0)
    with torch.no_grad():
        grad = torch.randn(ref.eval()(x).shape, generator=gen)
    if mode == "eval":
        for m in (ref, test):
            _calibrate_bn(m, x)
    for m in (ref, test):
        m.train(mode == "train")
    units = split_units(test, spec.io)
    for split in splits or [list(range(1, len(units)))]:
        ref.zero_grad(set_to_none=True)
        test.zero_grad(set_to_none=True)
        stages = build_stages(units, split)
        expected = ref(x)
        torch.autograd.backward(expected, grad)
        got = _run_decoupled(stages, x, grad)
        assert torch.isfinite(expected).all()
        assert torch.equal(got, expected), split
        for (n1, p1), (n2, p2) in zip(ref.named_parameters(), test.named_parameters(), strict=True):
            assert n1 == n2
            assert p1.grad is not None and p2.grad is not None, n1
            assert torch.equal(p1.grad, p2.grad), (split, n1)
        for (n1, b1), (_, b2) in zip(ref.named_buffers(), test.named_buffers(), strict=True):
            assert torch.equal(b1, b2), (split, n1)
    return len(units)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name", [n for n in MODELS if n != "resnet1202"])
def test_every_cut_at_once_is_exact(name: str, mode: str) -> None:
    """Each unit its own stage (every legal cut point cut) reproduces output and gradients."""
    _check_exact(name, None, mode)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name", ["mlp", "smallcnn", "resnet20"])
def test_each_single_cut_is_exact(name: str, mode: str) -> None:
    n = len(split_units(build_model(get_spec(name)), get_spec(name).input_shape))
    _check_exact(name, [[cut] for cut in range(1, n)], mode)


@pytest.mark.slow
def test_resnet1202_cuts_are_exact() -> None:
    """Batch 2, train mode, a subset of the 605 cut points: every 10th, the stem, the
    stage changes and the head. Eval mode is covered by the smaller depths (same blocks).
    """
    cuts = sorted(set(range(1, 606, 10)) | {2, 3, 203, 403, 603, 604, 605})
    assert _check_exact("resnet1202", [cuts], "train") == 606


def test_resnet110_units() -> None:
    spec = get_spec("resnet110")
    model = build_model(spec)
    units = split_units(model, spec.input_shape)
    blocks = [f"layer{s}.{i}" for s in (1, 2, 3) for i in range(18)]
    assert [u.name for u in units] == ["conv1", "bn1", "relu", *blocks, "avgpool", "flatten", "fc"]
    assert len(units) == 60
    assert [u.index for u in units] == list(range(60))
    assert units[0].output_shape == (2, 16, 32, 32)
    assert units[3 + 18].output_shape == (2, 32, 16, 16)
    assert units[3 + 36].output_shape == (2, 64, 8, 8)
    assert units[-3].output_shape == (2, 64, 1, 1)
    assert units[-2].output_shape == (2, 64)
    assert units[-1].output_shape == (2, 10)
    assert len(cut_points(trace_graph(model)[0])) == 60


def test_units_share_parameters_and_leave_model_untouched() -> None:
    spec = get_spec("resnet20")
    model = build_model(spec).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    units = split_units(model, spec.input_shape)
    assert model.training
    assert all(m.training for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    unit_params = [p for u in units for p in u.module.parameters()]
    assert len(unit_params) == len(list(model.parameters()))
    assert {id(p) for p in unit_params} == {id(p) for p in model.parameters()}


class _RootSkip(nn.Module):
    """A skip connection at the root: fc2 and the add must stay in one unit."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.fc2 = nn.Linear(8, 8)
        self.fc3 = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc1(x))
        y = self.fc2(h) + h
        return self.fc3(y)


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.b(torch.relu(self.a(x))) + x)


class _Wrapper(nn.Module):
    """A plain (non-container) wrapper holding a chain: cuts inside it are fine."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(4, 8)
        self.blocks = nn.Sequential(_Block(), _Block())
        self.out = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.blocks(self.inp(x)))


class _Outer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = _Wrapper()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_skip_connection_is_never_cut() -> None:
    model = _RootSkip()
    gm, _ = trace_graph(model)
    cuts = cut_points(gm)
    assert "fc2" not in cuts
    units = split_units(model, (4,))
    assert [u.name for u in units] == ["fc1", "relu", "fc2..add", "fc3"]
    x = torch.randn(3, 4)
    out = x
    for u in units:
        out = u.module(out)
    assert torch.equal(out, model(x))


def test_blocks_are_atomic_but_wrappers_are_not() -> None:
    units = split_units(_Outer(), (4,))
    assert [u.name for u in units] == ["body.inp", "body.blocks.0", "body.blocks.1", "body.out"]


def test_resnet_blocks_are_never_split() -> None:
    spec = get_spec("resnet32")
    names = [u.name for u in split_units(build_model(spec), spec.input_shape)]
    assert not any(n.count(".") > 1 for n in names)
    assert sum(n.startswith("layer") for n in names) == 15


class _TwoInputs(nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x + y


class _TwoOutputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.fc(x)
        return h, h * 2


def test_several_inputs_or_outputs_are_refused() -> None:
    with pytest.raises(UserError, match="2 inputs"):
        trace_graph(_TwoInputs())
    with pytest.raises(UserError, match="one tensor output"):
        trace_graph(_TwoOutputs())


def test_model_without_operations_is_refused() -> None:
    with pytest.raises(UserError, match="nothing to cut"):
        split_units(nn.Identity(), (4,))


def test_build_stages_validates_split() -> None:
    units = split_units(build_model(get_spec("mlp")), (1, 8, 8))
    assert [len(s) for s in build_stages(units, [2, 4])] == [2, 2, 2]
    assert [len(s) for s in build_stages(units, [])] == [6]
    for bad in ([0], [6], [3, 3], [4, 2], [-1]):
        with pytest.raises(UserError, match="split"):
            build_stages(units, bad)
