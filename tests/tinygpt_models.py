"""User models for the token-input tests, imported as ``tinygpt_models:FACTORY`` (the tests put
this folder on ``PYTHONPATH``, as a user's own package would be)."""

from __future__ import annotations

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.size(1)
        mask = torch.triu(x.new_ones(t, t), diagonal=1).bool()  # fx traces methods of proxies
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        out: torch.Tensor = x + self.mlp(self.ln2(x))
        return out


class TinyGPT(nn.Module):
    """The issue's user model: token embedding + learned positions, pre-norm blocks of
    ``nn.MultiheadAttention`` + MLP, final LayerNorm, vocabulary head."""

    def __init__(self, vocab: int = 256, width: int = 32, depth: int = 2, context: int = 16,
                 declare: bool = True) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Parameter(torch.zeros(1, context, width))
        self.blocks = nn.Sequential(*(Block(width, 2) for _ in range(depth)))
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)
        if declare:
            self.input_shape = (context,)
            self.vocab_size = vocab

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos
        out: torch.Tensor = self.head(self.ln_f(self.blocks(x)))
        return out


def tinygpt() -> TinyGPT:
    return TinyGPT()


def undeclared() -> TinyGPT:
    """The same model without the declaration: the tools assume float images and must say so."""
    return TinyGPT(declare=False)


class Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot follow it
            return self.fc(x)
        out: torch.Tensor = -self.fc(x)
        return out


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc(x) * mask
        return out


class DictOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.fc(x)}


class Quantizer(nn.Module):
    """A float→token-id step in the middle: the ids cannot carry a gradient, so no cut may send them."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.emb = nn.Embedding(8, 4)
        self.fc2 = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = self.fc1(x).argmax(-1)
        out: torch.Tensor = self.fc2(self.emb(ids))
        return out


def branchy() -> Branchy:
    m = Branchy()
    m.input_shape = (4,)  # type: ignore[assignment]
    return m


def two_inputs() -> TwoInputs:
    return TwoInputs()


def dict_output() -> DictOutput:
    return DictOutput()
