"""The registry of model names: the zoo plus user factories given as ``pkg.mod:factory``.

Torch-free at import time (factories import the zoo lazily), so commands can check a
model name before paying for ``import torch``.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ddgsim.errors import UserError, choices
from ddgsim.models.io import INPUT_DTYPES, TARGETS, ModelIO, normalise_dtype

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
    io: ModelIO
    """What one sample looks like and what the model predicts (:mod:`ddgsim.models.io`)."""
    description: str
    """One line for ``ddgsim models``."""

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One sample, no batch dimension, e.g. ``(3, 32, 32)`` or ``(64,)`` tokens."""
        return self.io.input_shape

    @property
    def num_classes(self) -> int:
        """Classes per prediction (per sample, or per token for a language model)."""
        return self.io.num_classes


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


def _gpt_factory(depth: int, width: int, context: int) -> Callable[[], nn.Module]:
    def factory() -> nn.Module:
        from ddgsim.models.gpt import gpt

        return gpt(depth=depth, width=width, context=context)

    factory.__name__ = f"gpt_L{depth}_W{width}_T{context}"
    return factory


GPT_VOCAB = 256
"""Byte-level: every byte is a token (the text data set, :mod:`ddgsim.execute.text`)."""
GPT_PATTERN = re.compile(r"gpt-L(\d+)-W(\d+)-T(\d+)")
"""``gpt-L<depth>-W<width>-T<context>``: any GPT size by name (heads = width / 32)."""


def gpt_spec(name: str, depth: int, width: int, context: int, description: str | None = None) -> ModelSpec:
    if min(depth, width, context) <= 0 or width % 32:
        raise UserError(f"bad GPT size in '{name}': depth, width, context must be > 0 and width a multiple of 32")
    return ModelSpec(
        name=name,
        factory=_gpt_factory(depth, width, context),
        io=ModelIO(input_shape=(context,), input_dtype="int64", vocab=GPT_VOCAB, target="token",
                   num_classes=GPT_VOCAB),
        description=description or f"GPT decoder, {depth} pre-norm blocks, width {width}, context {context}, "
                                   f"byte vocabulary",
    )


# Depths of He et al. 2016 Table 6 (CIFAR-10); 6n+2 layers, n = 3, 5, 7, 9, 18, 200.
_DEPTHS = (20, 32, 44, 56, 110, 1202)

MODELS: dict[str, ModelSpec] = {
    **{
        f"resnet{d}": ModelSpec(
            name=f"resnet{d}",
            factory=_resnet_factory(d),
            io=ModelIO(input_shape=(3, 32, 32), num_classes=10),
            description=f"CIFAR ResNet-{d} (He et al. 2016), n={(d - 2) // 6} blocks per stage, option-A shortcuts",
        )
        for d in _DEPTHS
    },
    "mlp": ModelSpec(
        name="mlp",
        factory=_mlp,
        io=ModelIO(input_shape=(1, 8, 8), num_classes=10),
        description="small MLP 64-64-32-10 for digits-shaped input (fast tests)",
    ),
    "smallcnn": ModelSpec(
        name="smallcnn",
        factory=_smallcnn,
        io=ModelIO(input_shape=(1, 8, 8), num_classes=10),
        description="small CNN (2 conv-BN-ReLU, max-pool, linear) for digits-shaped input",
    ),
    "gpt-mini": gpt_spec("gpt-mini", 4, 128, 64, "GPT decoder (4 pre-norm blocks, width 128, 4 heads, "
                         "context 64, byte vocabulary 256); any size as gpt-L<depth>-W<width>-T<context>"),
}


def zoo_spec(name: str) -> ModelSpec | None:
    """The spec of a zoo name or a sized GPT name, without importing any user module; else ``None``."""
    if name in MODELS:
        return MODELS[name]
    sized = GPT_PATTERN.fullmatch(name)
    if sized is None:
        return None
    depth, width, context = (int(g) for g in sized.groups())
    return gpt_spec(name, depth, width, context)


def buildable(name: str) -> bool:
    """Whether ``name`` names a model this tool can build (a zoo name, a sized GPT or a factory path),
    without importing anything: an imported profile's model may be none of these."""
    return zoo_spec(name) is not None or ":" in name


def profile_hint(model: str, options: str) -> str:
    """How to measure a profile of ``model`` with ``options``: ``ddgsim profile MODEL OPTIONS``, or, for a
    model this tool cannot build (an imported profile's), ``OPTIONS where the profile came from``."""
    return f"ddgsim profile {model} {options}" if buildable(model) else f"{options} where the profile came from"


def get_spec(name: str) -> ModelSpec:
    """Look up a registry name, resolve ``gpt-L<d>-W<w>-T<t>`` or ``pkg.mod:factory``; UserError if none works."""
    spec = zoo_spec(name)
    if spec is not None:
        return spec
    if ":" not in name:
        raise UserError(
            f"unknown model '{name}'; known models: {choices(MODELS)} "
            "(or gpt-L<depth>-W<width>-T<context>, or a factory as 'package.module:function')"
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
    return ModelSpec(
        name=path,
        factory=lambda: _call_factory(path, obj),
        io=declared_io(model, path),
        description=f"user model {path}",
    )


def declared_io(model: nn.Module, where: str) -> ModelIO:
    """A user model's declaration, read from attributes of the module it builds.

    ``input_shape`` (one sample, default ``(3, 32, 32)``), ``input_dtype`` (``float32`` or
    ``int64``, default ``int64`` when ``vocab_size`` is set), ``vocab_size`` (token ids lie in
    ``[0, vocab_size)``), ``target`` (``class`` per sample or ``token`` per position; default
    ``token`` for token inputs) and ``num_classes`` (default ``vocab_size`` for token
    targets, else 10).
    """
    shape = getattr(model, "input_shape", DEFAULT_INPUT_SHAPE)
    try:
        input_shape = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        raise UserError(f"model '{where}': attribute input_shape must be a sequence of ints, got {shape!r}") from None
    vocab = getattr(model, "vocab_size", None)
    dtype = normalise_dtype(getattr(model, "input_dtype", "int64" if vocab is not None else "float32"),
                            f"model '{where}'")
    target = str(getattr(model, "target", "token" if dtype == "int64" else "class"))
    if target not in TARGETS:
        raise UserError(f"model '{where}': attribute target must be one of {', '.join(TARGETS)}, got {target!r}")
    classes = getattr(model, "num_classes", vocab if target == "token" and vocab else DEFAULT_NUM_CLASSES)
    try:
        return ModelIO(input_shape=input_shape, input_dtype=dtype,
                       vocab=int(vocab) if vocab is not None and dtype == "int64" else None,
                       target=target, num_classes=int(classes))
    except UserError as exc:
        raise UserError(f"model '{where}': {exc} (declared dtypes: {', '.join(INPUT_DTYPES)})") from None


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
