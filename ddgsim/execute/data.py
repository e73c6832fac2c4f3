"""Training data for the executor: digits, CIFAR-10 pickles, text, synthetic; deterministic batches.

The batch entering at iteration t depends only on (seed, t): epoch e = t // B_e
(B_e = full batches per epoch, the last partial batch is dropped) draws the
permutation ``randperm(n, generator=seed(seed, e))``, and augmentation draws from a
generator seeded by (seed, t). So a resumed run sees exactly the same batches, and
every stage process can compute the same batch indices: stage 0 loads the inputs,
the last stage loads the labels of the same indices (nothing but activations and
gradients crosses between stages).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ddgsim.errors import ParameterError, UserError
from ddgsim.execute.config import DATASETS
from ddgsim.models.io import ModelIO

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
"""Per-channel mean/std of the CIFAR-10 training set (the values used by most CIFAR ResNet code)."""
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST = "test_batch"
DIGITS_TEST_FRACTION = 0.2
SAMPLES = {"digits": (1, 8, 8), "cifar10": (3, 32, 32)}
"""One float sample of the image data sets (what their loaders make)."""


@dataclass(kw_only=True)
class Dataset:
    """A train/test split held in memory: normalised float samples or token ids, and their labels."""

    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    augment: bool = False
    seed: int = 0
    source: str = ""
    """Where the data came from, for the metrics (e.g. the text corpus's files and hash)."""

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])

    def batches_per_epoch(self, batch_size: int) -> int:
        n = len(self.train_x) // batch_size
        if n == 0:
            raise UserError(
                f"batch size {batch_size} is larger than the {self.name} training set ({len(self.train_x)} samples)"
            )
        return n

    def indices(self, t: int, batch_size: int) -> Tensor:
        """Sample indices of the batch entering at iteration t."""
        per = self.batches_per_epoch(batch_size)
        epoch, i = divmod(t, per)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(len(self.train_x), generator=g)
        return perm[i * batch_size : (i + 1) * batch_size]

    def labels(self, t: int, batch_size: int) -> Tensor:
        return self.train_y[self.indices(t, batch_size)]

    def inputs(self, t: int, batch_size: int) -> Tensor:
        x = self.train_x[self.indices(t, batch_size)]
        if self.augment:
            x = _augment(x, torch.Generator().manual_seed(self.seed * 7_919 + t + 1))
        return x

    def batch(self, t: int, batch_size: int) -> tuple[Tensor, Tensor]:
        return self.inputs(t, batch_size), self.labels(t, batch_size)

    def test_batches(self, batch_size: int) -> list[slice]:
        n = len(self.test_x)
        return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def _augment(x: Tensor, g: torch.Generator) -> Tensor:
    """Random crop with 4-pixel zero padding and random horizontal flip (He et al. 2016)."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    dx = torch.randint(0, 9, (n,), generator=g)
    dy = torch.randint(0, 9, (n,), generator=g)
    flip = torch.rand(n, generator=g) < 0.5
    out = torch.empty_like(x)
    for i in range(n):
        crop = padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
        out[i] = crop.flip(-1) if flip[i] else crop
    return out


DIGITS_NEEDS = " digits needs scikit-learn, which bundles the digits data set: pip install scikit-learn"
"""What :class:`~ddgsim.errors.ParameterError` says of ``data`` when scikit-learn is missing."""


def _sklearn_dirs() -> list[str]:
    """Where scikit-learn is installed (found without importing it); UserError if it is not."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("sklearn")
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise ParameterError("data", DIGITS_NEEDS)
    return list(spec.submodule_search_locations or [])


def check_digits() -> None:
    """UserError (one line: what to install) unless ``--data digits`` can load."""
    _sklearn_dirs()


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled ``digits.csv.gz`` read directly (importing sklearn costs ~2 s per
    stage process); falls back to ``sklearn.datasets.load_digits``. Same arrays either way."""
    for loc in _sklearn_dirs():
        path = Path(loc) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            d = np.loadtxt(path, delimiter=",")
            return d[:, :-1], d[:, -1].astype(np.int64)
    try:
        from sklearn.datasets import load_digits as sk_digits
    except ImportError as exc:
        raise ParameterError("data", f"{DIGITS_NEEDS} ({exc})") from None

    b = sk_digits()
    return b.data, b.target


def load_digits(seed: int = 0) -> Dataset:
    """scikit-learn's 1797 real 8×8 digits, shape (1, 8, 8), standardised; 20% test split by seed."""
    images, target = _digits_arrays()
    x = torch.tensor(images, dtype=torch.float32).reshape(-1, *SAMPLES["digits"]) / 16.0
    y = torch.tensor(target, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_test = round(len(x) * DIGITS_TEST_FRACTION)
    test, train = perm[:n_test], perm[n_test:]
    mean, std = x[train].mean(), x[train].std()
    x = (x - mean) / std
    return Dataset(name="digits", train_x=x[train], train_y=y[train], test_x=x[test], test_y=y[test],
                   num_classes=10, seed=seed)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with path.open("rb") as f:
            raw = pickle.load(f, encoding="bytes")
        data = np.asarray(raw[b"data"], dtype=np.uint8)
        labels = np.asarray(raw[b"labels"], dtype=np.int64)
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as exc:
        raise UserError(f"cannot read CIFAR-10 batch {path}: {type(exc).__name__}: {exc}") from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise UserError(f"CIFAR-10 batch {path}: expected b'data' N×3072 uint8 and N b'labels', got {data.shape}")
    return data, labels


def check_cifar_dir(data_dir: str | Path | None) -> Path:
    """The CIFAR directory, or a UserError naming the files that were expected."""
    expected = ", ".join([*CIFAR_TRAIN, CIFAR_TEST])
    if not data_dir:
        raise ParameterError("data", f" cifar10 needs {{data_dir}}, the folder of the python batches ({expected})",
                             others=("data_dir",))
    root = Path(data_dir)
    if not root.is_dir():
        raise ParameterError("data_dir", f" {root} does not exist (expected a CIFAR-10 directory holding the "
                                         f"python batches {expected})")
    missing = [n for n in [*CIFAR_TRAIN, CIFAR_TEST] if not (root / n).is_file()]
    if missing:
        raise ParameterError("data_dir", f" {root}: the CIFAR-10 directory lacks {', '.join(missing)} "
                                         f"(expected {expected})")
    return root


def load_cifar10(data_dir: str | Path | None, seed: int = 0, augment: bool = False) -> Dataset:
    """The standard python-pickle CIFAR-10 batches, normalised with the usual mean/std."""
    root = check_cifar_dir(data_dir)
    parts = [_read_cifar_batch(root / n) for n in CIFAR_TRAIN]
    tx, ty = _read_cifar_batch(root / CIFAR_TEST)
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)

    def norm(a: np.ndarray) -> Tensor:
        return (torch.from_numpy(a.reshape(-1, *SAMPLES["cifar10"]).astype(np.float32) / 255.0) - mean) / std

    return Dataset(
        name="cifar10",
        train_x=norm(np.concatenate([p[0] for p in parts])),
        train_y=torch.from_numpy(np.concatenate([p[1] for p in parts])),
        test_x=norm(tx), test_y=torch.from_numpy(ty),
        num_classes=10, augment=augment, seed=seed,
    )


def synthetic(io: ModelIO, batch_size: int, seed: int = 0) -> Dataset:
    """Random inputs (normal floats or uniform token ids) and random labels, 4 batches' worth
    (fixed seed): for speed runs."""
    g = torch.Generator().manual_seed(seed)
    n = 4 * batch_size
    return Dataset(
        name="synthetic",
        train_x=io.example_input(n, g), train_y=io.example_labels(n, g),
        test_x=io.example_input(batch_size, g), test_y=io.example_labels(batch_size, g),
        num_classes=io.num_classes, seed=seed,
    )


def check_fits(name: str, io: ModelIO) -> None:
    """UserError (one line, before any process starts) unless data set ``name`` gives what the model takes."""
    if name == "text":
        check_text(io)
    elif name in SAMPLES and (io.tokens or tuple(io.input_shape) != SAMPLES[name]):
        raise ParameterError("data", f" {name} has float samples of shape {SAMPLES[name]} but the model takes "
                                     f"{io.describe()}" + (" (use {data} text or synthetic)" if io.tokens else ""))


def check_text(io: ModelIO) -> None:
    """UserError (one line) unless ``--data text`` fits the model and the sources are there."""
    from ddgsim.execute import text

    if not io.tokens or io.target != "token" or len(io.input_shape) != 1:
        raise ParameterError("data", f" text is next-byte prediction: it needs a model that takes token ids of "
                                     f"shape (context,) and predicts a token per position, not {io.describe()}")
    if (io.vocab or 0) < text.VOCAB or io.num_classes < text.VOCAB:
        raise ParameterError("data", f" text has {text.VOCAB} byte tokens but the model's vocabulary is "
                                     f"{io.vocab} with {io.num_classes} classes")
    folder = text.stdlib_dir()
    if not any(folder.glob("*.py")):
        raise ParameterError("data", f" text reads the Python standard library's sources, but {folder} has no "
                                     "*.py files")


def load_text(io: ModelIO, seed: int = 0) -> Dataset:
    """Byte-level language modelling on the Python standard library's sources (:mod:`ddgsim.execute.text`);
    ``io`` must have passed :func:`check_text`."""
    from ddgsim.execute import text

    (context,) = io.input_shape
    c = text.corpus()
    train_x, train_y = text.windows(c.train, context)
    test_x, test_y = text.windows(c.validation, context, text.TEST_WINDOWS)
    return Dataset(name="text", train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y,
                   num_classes=text.VOCAB, seed=seed, source=c.source)


def load_data(name: str, *, io: ModelIO, batch_size: int, seed: int = 0, data_dir: str | Path | None = None,
              augment: bool = False) -> Dataset:
    """The dataset ``name``; its samples must be what the model declares it takes (checked first)."""
    check_fits(name, io)
    if name == "digits":
        ds = load_digits(seed)
    elif name == "cifar10":
        ds = load_cifar10(data_dir, seed, augment)
    elif name == "text":
        ds = load_text(io, seed)
    elif name == "synthetic":
        ds = synthetic(io, batch_size, seed)
    else:
        raise UserError(f"unknown dataset '{name}' (choose from {', '.join(DATASETS)})")
    return ds
