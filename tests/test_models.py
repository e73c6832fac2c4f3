"""The model zoo and the registry (names, import paths, parameter counts)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ddgsim.errors import UserError
from ddgsim.models.registry import MODELS, build_model, get_spec
from ddgsim.models.resnet import BasicBlock, PadShortcut, resnet


def test_registry_names() -> None:
    assert set(MODELS) == {"resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
                           "resnet1202", "mlp", "smallcnn", "gpt-mini"}
    for name, spec in MODELS.items():
        assert spec.name == name
        assert spec.num_classes == (256 if name.startswith("gpt") else 10)
        assert spec.description
    assert MODELS["gpt-mini"].io.input_shape == (64,) and MODELS["gpt-mini"].io.target == "token"
    assert MODELS["mlp"].input_shape == (1, 8, 8)
    assert MODELS["smallcnn"].input_shape == (1, 8, 8)
    assert MODELS["resnet110"].input_shape == (3, 32, 32)


# He et al. 2016, Table 6: 0.27M, 0.46M, 0.66M, 0.85M, 1.7M, 19.4M parameters.
@pytest.mark.parametrize(("depth", "millions"), [(20, 0.27), (32, 0.46), (44, 0.66), (56, 0.85),
                                                 (110, 1.7), (1202, 19.4)])
def test_resnet_parameter_counts_match_paper(depth: int, millions: float) -> None:
    with torch.device("meta"):
        model = resnet(depth)
    n = sum(p.numel() for p in model.parameters())
    assert round(n / 1e6, 2 if millions < 1 else 1) == millions


@pytest.mark.parametrize("depth", [20, 56, 110])
def test_resnet_depth_counts_weighted_layers(depth: int) -> None:
    with torch.device("meta"):
        model = resnet(depth)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == depth
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 3 * (depth - 2) // 6


def test_resnet_bad_depth() -> None:
    with pytest.raises(ValueError, match="6n\\+2"):
        resnet(21)


def test_option_a_shortcut_pads_with_zeros() -> None:
    x = torch.randn(2, 16, 8, 8)
    y = PadShortcut(32, 16)(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2])
    assert torch.count_nonzero(y[:, :8]) == 0 and torch.count_nonzero(y[:, 24:]) == 0
    assert not list(PadShortcut(32, 16).parameters())


@pytest.mark.parametrize("name", [n for n in MODELS if n != "resnet1202"])
def test_forward_shapes_and_determinism(name: str) -> None:
    spec = get_spec(name)
    a, b = build_model(spec, seed=3), build_model(spec, seed=3)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    c = build_model(spec, seed=4)
    assert not all(torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters(), strict=True))
    out = a(spec.io.example_input(3))
    assert out.shape == (3, spec.num_classes) if spec.io.target == "class" else (3, *spec.input_shape, spec.num_classes)


def test_gpt_sizes_by_name() -> None:
    spec = get_spec("gpt-L2-W64-T16")
    with torch.device("meta"):
        model = spec.factory()
    assert len(model.blocks) == 2 and model.head.in_features == 64 and model.embed.pos.num_embeddings == 16
    with pytest.raises(UserError, match="multiple of 32"):
        get_spec("gpt-L2-W60-T16")
    # gpt-mini: 4 blocks of 12 w^2 + 13 w weights, embeddings (256 + 64) w, final norm 2 w, head 256 w + 256
    w = 128
    assert sum(p.numel() for p in build_model(MODELS["gpt-mini"]).parameters()) == \
        4 * (12 * w * w + 13 * w) + 320 * w + 2 * w + 256 * w + 256


def test_kaiming_init() -> None:
    model = resnet(20)
    block = model.layer2[0]
    assert isinstance(block, BasicBlock)
    w = block.conv1.weight
    fan_out = w.shape[0] * w.shape[2] * w.shape[3]
    assert abs(w.std().item() - (2 / fan_out) ** 0.5) < 0.2 * (2 / fan_out) ** 0.5
    assert torch.equal(model.bn1.weight, torch.ones(16))


def test_unknown_model_lists_known_names() -> None:
    with pytest.raises(UserError) as info:
        get_spec("resnet111")
    msg = str(info.value)
    assert "resnet111" in msg and "resnet110" in msg and "smallcnn" in msg
    assert "\n" not in msg


def test_import_path_model() -> None:
    spec = get_spec("ddgsim.models.small:mlp")
    assert spec.name == "ddgsim.models.small:mlp"
    assert spec.input_shape == (3, 32, 32)  # the factory's module sets no input_shape
    assert isinstance(build_model(spec), nn.Module)


@pytest.mark.parametrize(("path", "fragment"), [
    ("no_such_pkg_ddgsim:factory", "cannot import module 'no_such_pkg_ddgsim'"),
    ("ddgsim.models.small:nope", "has no attribute 'nope'"),
    ("ddgsim.models.small:NUM_CLASSES", "is not callable"),
    ("os:getcwd", "must return a torch.nn.Module, got str"),
    ("ddgsim.models.resnet:resnet", "failed: TypeError"),
    (":mlp", "expected 'package.module:factory'"),
])
def test_bad_import_paths(path: str, fragment: str) -> None:
    with pytest.raises(UserError) as info:
        get_spec(path)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)
