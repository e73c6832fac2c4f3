"""A GPT-style decoder in plain torch: token + learned position embeddings, pre-norm blocks
(causal self-attention, then an MLP, each added to the residual stream), a final LayerNorm
and a vocabulary head (Radford et al. 2019; the layout of Karpathy's nanoGPT).

Written so that ``torch.fx.symbolic_trace`` follows it (no Python branches on tensor
values, no unpacking of shapes): every block is one unit for the cut-point analysis, since
the residual stream branches inside it, and the embedding, the final norm and the head are
units of their own. Input and output embeddings are not tied: a tied weight would live on
the first and the last stage at once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CausalSelfAttention(nn.Module):
    """Multi-head attention of each position over itself and the positions before it."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not a multiple of heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, T, 3C) -> (B, T, 3, H, C/H) -> three (B, H, T, C/H)
        qkv = self.qkv(x).unflatten(-1, (3, self.heads, -1))
        q = qkv[:, :, 0].transpose(1, 2)
        k = qkv[:, :, 1].transpose(1, 2)
        v = qkv[:, :, 2].transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        out: torch.Tensor = self.proj(y.transpose(1, 2).flatten(-2))
        return out


class Block(nn.Module):
    """x + attn(ln1(x)), then + mlp(ln2(x)): the residual stream never leaves the block."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        out: torch.Tensor = x + self.mlp(self.ln2(x))
        return out


class Embedding(nn.Module):
    """Token embedding plus a learned embedding of each position (0 .. T-1)."""

    def __init__(self, vocab: int, width: int, context: int) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(context, width)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx)
        pos = torch.arange(idx.size(1), device=idx.device)
        out: torch.Tensor = x + self.pos(pos)
        return out


class GPT(nn.Module):
    """Token ids ``(B, T)``, T ≤ context, to next-token logits ``(B, T, vocab)``."""

    def __init__(self, *, vocab: int = 256, width: int = 128, depth: int = 4, heads: int = 4,
                 context: int = 64) -> None:
        super().__init__()
        self.embed = Embedding(vocab, width, context)
        self.blocks = nn.Sequential(*(Block(width, heads) for _ in range(depth)))
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)
        # The declaration read by ddgsim.models.registry.declared_io (for use as a user model).
        self.input_shape = (context,)
        self.input_dtype = "int64"
        self.vocab_size = vocab
        self.target = "token"
        self.num_classes = vocab
        self.apply(_init)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                # GPT-2: residual projections scaled by 1/sqrt(2 * depth)
                nn.init.normal_(p, mean=0.0, std=0.02 / (2 * depth) ** 0.5)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.ln_f(self.blocks(self.embed(idx))))
        return out


def _init(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, mean=0.0, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Embedding):
        nn.init.normal_(m.weight, mean=0.0, std=0.02)


def gpt(*, depth: int = 4, width: int = 128, context: int = 64, vocab: int = 256, heads: int | None = None) -> GPT:
    """A GPT with ``heads`` = width / 32 unless given (4 for the default width 128)."""
    return GPT(vocab=vocab, width=width, depth=depth, heads=heads or max(1, width // 32), context=context)
