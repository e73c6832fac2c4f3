"""Real text that every machine has: the Python standard library's own source files.

A byte-level language-modelling data set (vocabulary 256: every byte is a token), read at
run time from the running interpreter's ``stdlib`` directory (``sysconfig``): the
``*.py`` files directly in it (no sub-packages, no tests), in name order, as raw bytes.

Split: a file belongs to the validation set when ``crc32(file name) % 10 == 0`` (about
10 % of the files and bytes, whole files, so validation text is never seen in training),
to the training set otherwise. Files are joined with a blank line.

Samples: the training stream is cut into consecutive windows of ``T + 1`` bytes at
stride ``T``; a sample is the first ``T`` bytes and its labels the ``T`` bytes after
each position (next-byte prediction). The validation set is :data:`TEST_WINDOWS` such
windows spaced evenly over the validation stream (a fixed, seed-independent sample that
keeps the end-of-run test pass to about a second).

The same Python version gives the same bytes everywhere; other versions ship other
sources, so losses are comparable only within one version (:func:`corpus` records it).
"""

from __future__ import annotations

import hashlib
import sys
import sysconfig
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ddgsim.errors import ParameterError

VOCAB = 256
TEST_WINDOWS = 1024
VALIDATION_MODULUS = 10
"""A file is held out when ``crc32(name) % VALIDATION_MODULUS == 0``."""


@dataclass(frozen=True, kw_only=True)
class Corpus:
    """The training and validation byte streams and where they came from."""

    train: bytes
    validation: bytes
    source: str
    """Directory read, Python version, file counts, bytes and a hash of both streams."""


def stdlib_dir() -> Path:
    return Path(sysconfig.get_path("stdlib"))


def corpus(root: Path | None = None) -> Corpus:
    """Read the corpus (UserError naming the directory when it has no Python sources)."""
    folder = root or stdlib_dir()
    files = sorted(folder.glob("*.py")) if folder.is_dir() else []
    if not files:
        raise ParameterError("data", f" text reads the Python standard library's sources, but {folder} has no "
                                     "*.py files (an interpreter installed without sources?)")
    train: list[bytes] = []
    validation: list[bytes] = []
    for path in files:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ParameterError("data", f" text: cannot read {path}: {exc.strerror or exc}") from None
        held_out = zlib.crc32(path.name.encode()) % VALIDATION_MODULUS == 0
        (validation if held_out else train).append(data)
    tr, va = b"\n\n".join(train), b"\n\n".join(validation)
    digest = hashlib.sha256(tr + b"\0" + va).hexdigest()[:12]
    source = (f"{folder} (Python {sys.version.split()[0]}): {len(train)} training files, {len(tr):,} bytes; "
              f"{len(validation)} validation files, {len(va):,} bytes; sha256 {digest}")
    return Corpus(train=tr, validation=va, source=source)


def windows(stream: bytes, context: int, count: int | None = None) -> tuple[Tensor, Tensor]:
    """``(inputs, labels)``, both ``(N, context)`` int64: windows of ``context + 1`` bytes at
    stride ``context`` (all of them, or ``count`` spaced evenly over the stream)."""
    data = torch.frombuffer(bytearray(stream), dtype=torch.uint8)
    n = (len(data) - 1) // context
    if n <= 0:
        raise ParameterError("data", f" text: {len(data)} bytes are too few for windows of {context} tokens")
    starts = torch.arange(n) * context
    if count is not None and count < n:
        starts = starts[torch.linspace(0, n - 1, count).round().long()]
    idx = starts[:, None] + torch.arange(context + 1)[None, :]
    win = data[idx].long()
    return win[:, :-1].contiguous(), win[:, 1:].contiguous()
