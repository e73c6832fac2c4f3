"""What a model takes and what it is trained to predict: its input and target declaration.

A convnet takes float images and predicts one class per sample; a language model takes
token ids (integers in ``[0, vocab)``) and predicts a class (the next token) per token.
Everything that makes example inputs or labels (unit tracing, the profiler, the executor's
synthetic data and loss, torch.distributed.pipelining runs) asks the model's
:class:`ModelIO` instead of assuming images.

Torch-free at import time; the helpers that make tensors import torch when called.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ddgsim.errors import UserError

if TYPE_CHECKING:
    import torch

INPUT_DTYPES = ("float32", "int64")
"""``float32``: real-valued samples (images, features); ``int64``: token ids in ``[0, vocab)``."""
TARGETS = ("class", "token")
"""``class``: one class per sample (output ``(B, classes)``); ``token``: one class per
position (output ``(B, T, classes)``, labels ``(B, T)``), e.g. next-token prediction."""
_DTYPE_ALIASES = {"float32": "float32", "float": "float32", "torch.float32": "float32",
                  "int64": "int64", "long": "int64", "torch.int64": "int64"}


@dataclass(frozen=True, kw_only=True)
class ModelIO:
    """One sample's input (shape without the batch dimension, dtype, vocabulary) and the target kind."""

    input_shape: tuple[int, ...]
    input_dtype: str = "float32"
    vocab: int | None = None
    """Token ids are drawn from ``[0, vocab)``; required for, and only for, ``int64`` inputs."""
    target: str = "class"
    num_classes: int = 10
    """Classes per prediction: labels lie in ``[0, num_classes)`` (the vocabulary for a language model)."""

    def __post_init__(self) -> None:
        if not self.input_shape or any(not isinstance(d, int) or d <= 0 for d in self.input_shape):
            raise UserError(f"input shape must be positive integers, got {self.input_shape!r}")
        if self.input_dtype not in INPUT_DTYPES:
            raise UserError(f"input dtype must be one of {', '.join(INPUT_DTYPES)}, got {self.input_dtype!r}")
        if self.input_dtype == "int64" and (self.vocab is None or self.vocab <= 0):
            raise UserError(f"token inputs (int64) need a vocabulary size > 0, got {self.vocab!r}")
        if self.input_dtype == "float32" and self.vocab is not None:
            raise UserError(f"a vocabulary ({self.vocab}) is only meaningful for int64 token inputs")
        if self.target not in TARGETS:
            raise UserError(f"target must be one of {', '.join(TARGETS)}, got {self.target!r}")
        if self.num_classes <= 0:
            raise UserError(f"the number of classes must be > 0, got {self.num_classes}")

    @property
    def tokens(self) -> bool:
        return self.input_dtype == "int64"

    def label_shape(self, batch_size: int) -> tuple[int, ...]:
        """Labels of a batch: ``(B,)`` per sample, ``(B, *input_shape)`` per token."""
        return (batch_size,) if self.target == "class" else (batch_size, *self.input_shape)

    def describe(self) -> str:
        """``3x32x32 → 10`` or ``64 ids<256 → 256/token``, for tables."""
        shape = "x".join(map(str, self.input_shape))
        src = f"{shape} ids<{self.vocab}" if self.tokens else shape
        dst = f"{self.num_classes}/token" if self.target == "token" else f"{self.num_classes}"
        return f"{src} → {dst}"

    def example_input(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """A random batch: standard normal floats, or uniform token ids in ``[0, vocab)``."""
        import torch

        if self.tokens:
            assert self.vocab is not None
            return torch.randint(0, self.vocab, (batch_size, *self.input_shape), generator=generator)
        return torch.randn(batch_size, *self.input_shape, generator=generator)

    def example_labels(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Uniform random labels in ``[0, num_classes)`` of :meth:`label_shape`."""
        import torch

        return torch.randint(0, self.num_classes, self.label_shape(batch_size), generator=generator)

    def score(self, out: torch.Tensor, y: torch.Tensor) -> tuple[int, float, int]:
        """``(correct predictions, summed cross-entropy in nats, predictions)`` of one test batch."""
        import torch.nn.functional as F

        logits, labels = _per_token(out, y) if self.target == "token" else (out, y)
        hits = int((logits.argmax(-1) == labels).sum())
        return hits, float(F.cross_entropy(logits, labels, reduction="sum")), int(labels.numel())

    def with_overrides(self, *, input_shape: Sequence[int] | None = None, vocab: int | None = None) -> ModelIO:
        """This declaration with a command line's ``--input-shape`` / ``--vocab`` applied
        (a vocabulary makes the input token ids)."""
        shape = tuple(input_shape) if input_shape is not None else self.input_shape
        if vocab is None:
            return replace(self, input_shape=shape)
        return replace(self, input_shape=shape, input_dtype="int64", vocab=vocab)


def class_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``(B, C)`` logits against ``(B,)`` labels."""
    import torch.nn.functional as F

    return F.cross_entropy(out, y)


def _per_token(out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, T, C)`` logits and ``(B, T)`` labels as ``(B·T, C)`` and ``(B·T,)``: one prediction per token."""
    return out.flatten(0, -2), y.flatten()


def token_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``(B, T, C)`` logits against ``(B, T)`` labels, averaged over every token."""
    import torch.nn.functional as F

    return F.cross_entropy(*_per_token(out, y))


LossFn = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]


def loss_for(target: str) -> LossFn:
    """The training loss of a target kind (module-level functions, so they pickle)."""
    losses: dict[str, LossFn] = {"class": class_loss, "token": token_loss}
    return losses[target]


def bits(nats: float) -> float:
    """A mean cross-entropy in nats as bits (per token: bits per character for a byte-level model)."""
    return nats / math.log(2)


def normalise_dtype(value: object, where: str) -> str:
    """``torch.long``, ``'long'``, ``'int64'`` → ``'int64'`` (and the float spellings → ``'float32'``)."""
    key = str(value)
    if key not in _DTYPE_ALIASES:
        raise UserError(f"{where}: input_dtype must be one of {', '.join(INPUT_DTYPES)}, got {value!r}")
    return _DTYPE_ALIASES[key]
