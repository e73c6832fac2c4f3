"""The registry of model names: the zoo plus user factories given as ``pkg.mod:factory``.

Torch-free at import time (factories import the zoo lazily), so commands can check a
model name before paying for ``import torch``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ddgsim.errors import UserError, choices

if TYPE_CHECKING:
    from torch import nn

DEFAULT_INPUT_SHAPE = (3, 32, 32)
"""Input shape assumed for a user model that does not say (CIFAR-10 images)."""
DEFAULT_NUM_CLASSES = 10


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """A model the tool can build, trace, profile and run."""

    name: str
    """Registry name (``resnet110``) or the import path ``pkg.mod:factory``."""
    factory: Callable[[], nn.Module]
    """Builds a fresh model with freshly initialised weights."""
    input_shape: tuple[int, ...]
    """One sample, no batch dimension, e.g. ``(3, 32, 32)``."""
    num_classes: int
    """Number of classes of the classification head."""
    description: str
    """One line for ``ddgsim models``."""


def _resnet_factory(depth: int) -> Callable[[], nn.Module]:
    def factory() -> nn.Module:
        from ddgsim.models.resnet import resnet

        return resnet(depth)

    factory.__name__ = f"resnet{depth}"
    return factory


def _mlp() -> nn.Module:
    from ddgsim.models.small import mlp

    return mlp()


def _smallcnn() -> nn.Module:
    from ddgsim.models.small import smallcnn

    return smallcnn()


# Depths of He et al. 2016 Table 6 (CIFAR-10); 6n+2 layers, n = 3, 5, 7, 9, 18, 200.
_DEPTHS = (20, 32, 44, 56, 110, 1202)

MODELS: dict[str, ModelSpec] = {
    **{
        f"resnet{d}": ModelSpec(
            name=f"resnet{d}",
            factory=_resnet_factory(d),
            input_shape=(3, 32, 32),
            num_classes=10,
            description=f"CIFAR ResNet-{d} (He et al. 2016), n={(d - 2) // 6} blocks per stage, option-A shortcuts",
        )
        for d in _DEPTHS
    },
    "mlp": ModelSpec(
        name="mlp",
        factory=_mlp,
        input_shape=(1, 8, 8),
        num_classes=10,
        description="small MLP 64-64-32-10 for digits-shaped input (fast tests)",
    ),
    "smallcnn": ModelSpec(
        name="smallcnn",
        factory=_smallcnn,
        input_shape=(1, 8, 8),
        num_classes=10,
        description="small CNN (2 conv-BN-ReLU, max-pool, linear) for digits-shaped input",
    ),
}


def get_spec(name: str) -> ModelSpec:
    """Look up a registry name, or resolve ``pkg.mod:factory``; UserError if neither works."""
    if name in MODELS:
        return MODELS[name]
    if ":" not in name:
        raise UserError(
            f"unknown model '{name}'; known models: {choices(MODELS)} "
            "(or give a factory as 'package.module:function')"
        )
    return _user_spec(name)


def _user_spec(path: str) -> ModelSpec:
    modname, _, attr = path.partition(":")
    if not modname or not attr:
        raise UserError(f"bad model import path '{path}': expected 'package.module:factory'")
    try:
        module = importlib.import_module(modname)
    except ImportError as exc:
        raise UserError(f"cannot import module '{modname}' of model '{path}': {_one_line(exc)}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UserError(f"module '{modname}' has no attribute '{attr}' (model '{path}')")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UserError(f"model factory '{path}' is not callable")
    model = _call_factory(path, obj)
    shape = getattr(model, "input_shape", DEFAULT_INPUT_SHAPE)
    classes = getattr(model, "num_classes", DEFAULT_NUM_CLASSES)
    try:
        input_shape = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        raise UserError(f"model '{path}': attribute input_shape must be a sequence of ints, got {shape!r}") from None
    return ModelSpec(
        name=path,
        factory=lambda: _call_factory(path, obj),
        input_shape=input_shape,
        num_classes=int(classes),
        description=f"user model {path}",
    )


def _call_factory(path: str, factory: Callable[[], Any]) -> nn.Module:
    from torch import nn

    try:
        model = factory()
    except Exception as exc:
        raise UserError(f"model factory '{path}' failed: {type(exc).__name__}: {_one_line(exc)}") from None
    if not isinstance(model, nn.Module):
        raise UserError(f"model factory '{path}' must return a torch.nn.Module, got {type(model).__name__}")
    return model


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def build_model(spec: ModelSpec, seed: int = 0) -> nn.Module:
    """Seed torch's RNG with ``seed`` and build the model (same seed, same weights)."""
    import torch

    torch.manual_seed(seed)
    return spec.factory()
