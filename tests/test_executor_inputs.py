"""Executor inputs: datasets (digits, CIFAR pickles, synthetic) and every bad input as a one-line UserError."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from ddgsim.cli import main
from ddgsim.errors import UserError
from ddgsim.execute.data import CIFAR_TEST, CIFAR_TRAIN, load_cifar10, load_data, load_digits
from ddgsim.models.io import ModelIO
from ddgsim.plan.format import Plan


def write_plan(path: Path, model: str, split: list[int], n_units: int, schedule: str = "ddg") -> Path:
    Plan.for_split(model=model, split=split, num_units=n_units, schedule=schedule, batch_size=16).save(path)
    return path


def write_cifar(root: Path, n: int = 20) -> None:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, name in enumerate([*CIFAR_TRAIN, CIFAR_TEST]):
        data = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": [int(v) for v in rng.integers(0, 10, n)],
                b"batch_label": f"batch {i}".encode()}
        with (root / name).open("wb") as f:
            pickle.dump(data, f)


def test_digits_split_shapes_and_determinism() -> None:
    ds = load_digits(seed=0)
    assert ds.input_shape == (1, 8, 8)
    assert len(ds.train_x) + len(ds.test_x) == 1797 and len(ds.test_x) == 359
    assert abs(float(ds.train_x.mean())) < 1e-4
    assert torch.equal(ds.test_y, load_digits(seed=0).test_y)
    assert not torch.equal(ds.test_y, load_digits(seed=1).test_y)
    x5, y5 = ds.batch(5, 32)
    assert torch.equal(x5, ds.batch(5, 32)[0]) and torch.equal(y5, ds.labels(5, 32))
    per = ds.batches_per_epoch(32)
    epoch0 = torch.cat([ds.indices(t, 32) for t in range(per)])
    assert len(set(epoch0.tolist())) == per * 32  # no repeats inside an epoch
    assert not torch.equal(ds.indices(0, 32), ds.indices(per, 32))  # a new permutation next epoch


def test_cifar_loader_reads_pickles_and_normalises(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    ds = load_cifar10(str(tmp_path), augment=True)
    assert ds.train_x.shape == (100, 3, 32, 32) and ds.test_x.shape == (20, 3, 32, 32)
    assert ds.train_y.dtype == torch.long and int(ds.train_y.max()) < 10
    with (tmp_path / "data_batch_1").open("rb") as f:
        raw = pickle.load(f, encoding="bytes")
    first = torch.tensor(raw[b"data"][0].reshape(3, 32, 32), dtype=torch.float32) / 255
    expect = (first - torch.tensor([0.4914, 0.4822, 0.4465]).view(3, 1, 1)) / torch.tensor([0.2470, 0.2435, 0.2616]).view(3, 1, 1)
    assert torch.allclose(ds.train_x[0], expect)
    a, b = ds.inputs(3, 8), ds.inputs(3, 8)
    assert torch.equal(a, b)  # augmentation is seeded by (seed, t)
    assert not torch.equal(a, ds.train_x[ds.indices(3, 8)])


def test_cifar_missing_directory_and_files_name_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"does not exist.*data_batch_1.*test_batch"):
        load_cifar10(str(tmp_path / "nope"))
    write_cifar(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(UserError, match="lacks data_batch_3"):
        load_cifar10(str(tmp_path))
    (tmp_path / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match=r"cannot read CIFAR-10 batch .*data_batch_3"):
        load_cifar10(str(tmp_path))


def test_synthetic_and_shape_mismatch() -> None:
    ds = load_data("synthetic", io=ModelIO(input_shape=(3, 4, 4), num_classes=5), batch_size=8)
    assert ds.batch(0, 8)[0].shape == (8, 3, 4, 4)
    with pytest.raises(UserError, match="shape"):
        load_data("digits", io=ModelIO(input_shape=(3, 32, 32)), batch_size=8)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["execute", *argv, "--no-progress"])
    err = capsys.readouterr().err
    return code, err


@pytest.fixture
def mlp_plan(tmp_path: Path) -> Path:
    return write_plan(tmp_path / "plan.json", "mlp", [2], 6)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--steps", "0"], "--steps must be > 0"),
        (["--steps", "5", "--model", "resnet20"], "--model 'resnet20' is not the model of plan"),
        (["--steps", "5", "--data", "cifar10", "--data-dir", "/nonexistent/cifar"], "does not exist"),
        (["--steps", "5", "--data", "cifar10"], "needs --data-dir"),
        (["--steps", "5", "--checkpoint-every", "2"], "needs --checkpoint-dir"),
        (["--steps", "5", "--resume", "/nonexistent/ck"], "no such directory"),
        (["--steps", "5", "--lr-decay-epochs", "1,x"], "--lr-decay-epochs must be positive integers"),
        (["--steps", "5", "--lr", "-1"], "--lr must be a finite number > 0"),
        (["--steps", "5", "--lr", "nan"], "--lr must be a finite number > 0"),
        (["--steps", "5", "--momentum", "-1"], "--momentum must be in [0, 1)"),
        (["--steps", "5", "--weight-decay", "-1"], "--weight-decay must be a finite number >= 0"),
        (["--steps", "5", "--data", "text"], "--data text is next-byte prediction"),
    ],
)
def test_bad_options_are_one_line_errors(mlp_plan: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         extra: list[str], needle: str) -> None:
    metrics = tmp_path / "m.json"
    code, err = run_cli([str(mlp_plan), *extra, "--metrics", str(metrics)], capsys)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err, err
    assert not metrics.exists()


def test_plan_whose_split_does_not_match_the_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = write_plan(tmp_path / "p.json", "mlp", [3, 6], 9)  # a smallcnn-shaped split for mlp
    code, err = run_cli([str(plan), "--steps", "3"], capsys)
    assert code == 2 and "splits 9 units but model 'mlp' has 6 units" in err


def test_unknown_model_in_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = write_plan(tmp_path / "p.json", "nosuchnet", [2], 6)
    code, err = run_cli([str(plan), "--steps", "3"], capsys)
    assert code == 2 and "unknown model 'nosuchnet'" in err


def test_nccl_without_cuda_and_too_many_stages(mlp_plan: Path, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, err = run_cli([str(mlp_plan), "--steps", "3", "--backend", "nccl"], capsys)
    assert code == 2 and "--backend nccl needs CUDA" in err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    code, err = run_cli([str(mlp_plan), "--steps", "3", "--backend", "nccl"], capsys)
    assert code == 2 and "plan has 2 stages but this node has 1 CUDA devices" in err


def test_corrupt_checkpoint(mlp_plan: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ddgsim.execute import checkpoint as ckpt
    from ddgsim.execute.job import prepare
    from ddgsim.execute.options import parse_run_args

    ck = tmp_path / "ck"
    job = prepare(parse_run_args([str(mlp_plan), "--steps", "5"]))
    d = ckpt.step_dir(ck, 2)
    d.mkdir(parents=True)
    (d / "stage-0.pt").write_bytes(b"garbage")
    (d / "stage-1.pt").write_bytes(b"garbage")
    ckpt.write_manifest(ck, 2, 2, job.key())
    code, err = run_cli([str(mlp_plan), "--steps", "5", "--resume", str(ck)], capsys)
    assert code == 2 and "corrupt checkpoint" in err and "stage-0.pt" in err, err
    (ck / "manifest.json").write_text("{not json")
    code, err = run_cli([str(mlp_plan), "--steps", "5", "--resume", str(ck)], capsys)
    assert code == 2 and "corrupt checkpoint manifest" in err
    ckpt.write_manifest(ck, 2, 2, {**job.key(), "seed": 99})
    code, err = run_cli([str(mlp_plan), "--steps", "5", "--resume", str(ck)], capsys)
    assert code == 2 and "seed=99" in err


def test_add_parser_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = ("import sys, argparse; from ddgsim.commands import execute; p = argparse.ArgumentParser(); "
            "execute.add_parser(p.add_subparsers()); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], check=True)
    assert out.stdout.strip() == "False"
