"""The command-line options of a run and the :class:`~ddgsim.execute.config.RunConfig` they build
(torch-free; shared by ``ddgsim execute`` and ``python -m ddgsim.execute``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ddgsim.errors import ParameterError, flag_names
from ddgsim.execute.config import BACKENDS, DATASETS, RunConfig


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Options of one run of a plan (everything but the launcher's own)."""
    p.add_argument("plan", help="plan file (ddgsim-plan/1 JSON)")
    p.add_argument("--steps", type=int, required=True, help="iterations N to run (> 0)")
    p.add_argument("--model", default=None, help="refuse the plan unless it is for this model")
    p.add_argument("--data", choices=DATASETS, default="synthetic", help="training data (default synthetic: random inputs for speed runs; digits: "
                   "scikit-learn's 8x8 digits; cifar10: --data-dir; text: byte-level Python standard library "
                   "sources, for token models such as gpt-mini)")
    p.add_argument("--data-dir", default=None, help="CIFAR-10 python batches (data_batch_1..5, test_batch)")
    p.add_argument("--augment", action="store_true", help="CIFAR random crop (pad 4) + horizontal flip")
    p.add_argument("--seed", type=int, default=0, help="model init, data order and per-stage RNG seed")
    p.add_argument("--lr", type=float, default=0.01, help="learning rate γ (default 0.01, the paper's)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    p.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=True,
                   help="Nesterov momentum (default on, as the authors trained)")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="L2 weight decay (default 5e-4)")
    p.add_argument("--lr-decay-epochs", default="", help="epochs where lr is multiplied by --lr-decay-factor, e.g. 150,225")
    p.add_argument("--lr-decay-factor", type=float, default=0.1, help="step-decay factor (default 0.1)")
    p.add_argument("--warmup-steps", type=int, default=0, metavar="N",
                   help="staleness compensation: linear learning-rate warm-up over N steps (default 0: none)")
    p.add_argument("--lr-delay-scale", action="store_true",
                   help="staleness compensation: each stage's rate times cos(τπ/(2τ+1)), its stability limit over BP's")
    p.add_argument("--weight-prediction", action="store_true",
                   help="staleness compensation: forward with the weights extrapolated along the momentum by "
                        "the stage's delay, w − τ·γ·v (PipeMare, SpecTrain)")
    p.add_argument("--backend", choices=BACKENDS, default="auto", help="gloo on CPU, nccl on CUDA (auto: nccl if CUDA)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per stage process (default 1)")
    p.add_argument("--timeout-s", type=float, default=60.0, help="collective/p2p timeout in seconds (default 60)")
    p.add_argument("--checkpoint-dir", default=None, help="directory for checkpoints (shared by all stages)")
    p.add_argument("--checkpoint-every", type=int, default=0, help="checkpoint every N steps (0: never)")
    p.add_argument("--resume", default=None, metavar="DIR", help="continue from the last complete checkpoint in DIR")
    p.add_argument("--metrics", default=None, metavar="FILE", help="write per-stage timings as JSON")
    p.add_argument("--trace", default=None, metavar="FILE", help="write a Chrome trace (Perfetto) of the run")
    p.add_argument("--final-weights", default=None, metavar="DIR",
                   help="each stage writes its final flat weights and losses to DIR/stage-K.pt")
    p.add_argument("--tensorboard", default=None, metavar="DIR",
                   help="write TensorBoard scalars to DIR: loss and samples/s per step, each stage's busy "
                        "and bubble time and staleness (needs the tensorboard package: ddgsim[tensorboard])")
    p.add_argument("--no-eval", action="store_true", help="skip the test-accuracy pass at the end")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (also off when not a tty)")


def run_flags() -> dict[str, str]:
    """Field -> flag of every run option (``{"timeout_s": "--timeout-s"}``): how a stage process names
    the fields a :class:`~ddgsim.errors.ParameterError` names, as ``ddgsim execute`` does."""
    parser = argparse.ArgumentParser(add_help=False)
    add_run_arguments(parser)
    return flag_names(parser)


def parse_epochs(text: str | None) -> tuple[int, ...]:
    """``"150,225"`` -> ``(150, 225)``; a ParameterError naming ``lr_decay_epochs`` otherwise."""
    try:
        epochs = tuple(int(e) for e in str(text or "").split(",") if e.strip())
    except ValueError:
        epochs = (-1,)
    if any(e <= 0 for e in epochs):
        raise ParameterError("lr_decay_epochs", f" must be positive integers separated by commas, got '{text}'")
    return epochs


def _path(value: str | None) -> Path | None:
    return None if value is None else Path(value)


def config_from_args(a: argparse.Namespace) -> RunConfig:
    """The run configuration of parsed options (a ParameterError naming a bad field)."""
    return RunConfig(
        plan=Path(a.plan), steps=a.steps, model=a.model, data=a.data, data_dir=_path(a.data_dir),
        augment=a.augment, seed=a.seed, lr=a.lr, momentum=a.momentum, nesterov=a.nesterov,
        weight_decay=a.weight_decay, lr_decay_epochs=parse_epochs(a.lr_decay_epochs),
        lr_decay_factor=a.lr_decay_factor, warmup_steps=a.warmup_steps, lr_delay_scale=a.lr_delay_scale,
        weight_prediction=a.weight_prediction, backend=a.backend, threads=a.threads, timeout_s=a.timeout_s,
        checkpoint_dir=_path(a.checkpoint_dir), checkpoint_every=a.checkpoint_every, resume=_path(a.resume),
        metrics=_path(a.metrics), trace=_path(a.trace), final_weights=_path(a.final_weights),
        tensorboard=_path(a.tensorboard),
        evaluate=not a.no_eval, progress=not a.no_progress,
    )


def parse_run_args(argv: list[str], prog: str = "python -m ddgsim.execute") -> RunConfig:
    """``python -m ddgsim.execute`` arguments: the run options, or ``--config-json JSON`` (the launcher's)."""
    if argv[:1] == ["--config-json"] and len(argv) == 2:
        return RunConfig.from_json(argv[1])
    parser = argparse.ArgumentParser(prog=prog, description="one stage process of a ddgsim run (torchrun)")
    add_run_arguments(parser)
    return config_from_args(parser.parse_args(argv))
