"""The executor's fault matrix, each a real multi-process run through ``ddgsim execute``.

A killed stage mid-run and a non-finite loss are in ``test_executor_dist.py``; here:
SIGKILL while a checkpoint is being written, SIGTERM to the job (preemption), a peer
that hangs, checkpoints that are truncated, foreign or from another plan, and
``--data digits`` without scikit-learn. Faults are injected with the executor's
``DDGSIM_FAULT=STAGE:STEP:WHAT`` hook (``ddgsim.execute.faults.fault_hook``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from launch_helpers import (
    ROOT,
    assert_clean,
    assert_same,
    engine_weights,
    execute,
    final_weights,
    preempted_run,
    write_plan,
)


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with the hash of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_sigkill_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path: Path) -> None:
    """Stage 1 dies with its step-8 file written but not in place: the manifest still names
    step 4, whose files are intact, and resuming from it gives the uninterrupted weights."""
    plan = write_plan(tmp_path / "p.json", "mlp", [2, 4], "ddg")
    ck = tmp_path / "ck"
    common = ["--steps", "10", "--data", "digits", "--no-eval"]
    r = execute(str(plan), *common, "--checkpoint-dir", str(ck), "--checkpoint-every", "4",
                env={"DDGSIM_FAULT": "1:8:kill-in-checkpoint"})
    assert r.returncode == 1, r.stderr
    assert "error: stage 1 failed" in r.stderr
    man = json.loads((ck / "manifest.json").read_text())
    assert man["step"] == 4 and not man["preempted"]
    assert sorted(p.name for p in (ck / "step-00000004").iterdir()) == [f"stage-{k}.pt" for k in range(3)]
    r = execute(str(plan), *common, "--resume", str(ck), "--final-weights", str(tmp_path / "w"))
    assert r.returncode == 0, r.stderr
    assert_clean(r.stderr)
    assert_same(final_weights(tmp_path / "w", 3), engine_weights([str(plan), *common]))


@pytest.mark.slow
def test_sigterm_to_the_job_checkpoints_at_one_boundary_and_resumes(tmp_path: Path) -> None:
    """Preemption: SIGTERM to the launcher; every stage stops at the same iteration, a
    checkpoint is written there, the command exits 0 with one note; the resumed run ends
    with the uninterrupted run's weights."""
    plan = write_plan(tmp_path / "p.json", "mlp", [2, 4], "ddg-pipelined")
    ck = tmp_path / "ck"
    common = ["--steps", "60", "--data", "digits", "--no-eval"]
    r, note, man = preempted_run(plan, common, ck, "0:5:term-launcher")
    assert man["preempted"] and 5 < man["step"] < 60
    assert f"at step {man['step']};" in note and f"--resume {ck}" in note
    assert "summary" not in r.stdout and "60 steps" not in r.stdout
    r = execute(str(plan), *common, "--resume", str(ck), "--final-weights", str(tmp_path / "w"))
    assert r.returncode == 0, r.stderr
    assert_same(final_weights(tmp_path / "w", 3), engine_weights([str(plan), *common]))


@pytest.mark.slow
def test_sigterm_without_checkpoint_dir_says_nothing_was_saved(tmp_path: Path) -> None:
    plan = write_plan(tmp_path / "p.json", "mlp", [2], "ddg")
    r = execute(str(plan), "--steps", "60", "--data", "digits", "--no-eval",
                env={"DDGSIM_FAULT": "0:5:term-launcher"})
    assert r.returncode == 128 + 15, r.stderr
    assert "nothing saved (no --checkpoint-dir)" in r.stderr
    assert_clean(r.stderr)


@pytest.mark.slow
def test_a_hung_peer_is_named_within_the_timeout(tmp_path: Path) -> None:
    """Stage 1 freezes (SIGSTOP) at step 3: stage 0 reports it after --timeout-s, by name."""
    plan = write_plan(tmp_path / "p.json", "mlp", [2], "ddg")
    r = execute(str(plan), "--steps", "50", "--data", "digits", "--timeout-s", "5",
                env={"DDGSIM_FAULT": "1:3:hang"}, timeout=240)
    assert r.returncode == 1, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: stage 0:")]
    assert errors and "stage 1 sent nothing for 5 s" in errors[0], r.stderr


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A real checkpoint (K = 2 mlp, step 4) and its plan."""
    d = tmp_path_factory.mktemp("ck")
    plan = write_plan(d / "p.json", "mlp", [2], "ddg")
    r = execute(str(plan), "--steps", "4", "--data", "digits", "--no-eval",
                "--checkpoint-dir", str(d / "ck"), "--checkpoint-every", "4")
    assert r.returncode == 0, r.stderr
    return plan, d / "ck"


def _resume_fails(plan: Path, ck: Path, out: Path, expect: str) -> None:
    before = snapshot(ck)
    r = execute(str(plan), "--steps", "8", "--data", "digits", "--no-eval", "--resume", str(ck),
                "--checkpoint-dir", str(ck), "--checkpoint-every", "1", "--final-weights", str(out))
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], r.stderr
    assert snapshot(ck) == before, "the checkpoint directory changed"
    assert not out.exists()


def test_truncated_checkpoint_is_refused(tmp_path: Path, good_checkpoint: tuple[Path, Path]) -> None:
    plan, src = good_checkpoint
    ck = tmp_path / "ck"
    shutil.copytree(src, ck)
    f = ck / "step-00000004" / "stage-1.pt"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    _resume_fails(plan, ck, tmp_path / "w", "corrupt checkpoint")


@pytest.mark.parametrize("what", ["manifest", "stage-file"])
def test_foreign_checkpoint_is_refused(tmp_path: Path, good_checkpoint: tuple[Path, Path], what: str) -> None:
    plan, src = good_checkpoint
    ck = tmp_path / "ck"
    shutil.copytree(src, ck)
    if what == "manifest":
        (ck / "manifest.json").write_text(json.dumps({"format": "other-tool/3", "step": 4}))
    else:
        import torch

        torch.save({"model": [1, 2, 3]}, ck / "step-00000004" / "stage-0.pt")
    _resume_fails(plan, ck, tmp_path / "w", "corrupt checkpoint")


def test_checkpoint_of_another_plan_is_refused(tmp_path: Path, good_checkpoint: tuple[Path, Path]) -> None:
    _plan, src = good_checkpoint
    ck = tmp_path / "ck"
    shutil.copytree(src, ck)
    other = write_plan(tmp_path / "other.json", "mlp", [3], "ddg")
    _resume_fails(other, ck, tmp_path / "w", "was written for split=[2], this run has split=[3]")


def test_digits_without_scikit_learn_is_one_line_exit_2(tmp_path: Path) -> None:
    """As if scikit-learn were not installed: ``sys.modules['sklearn'] = None`` at start-up."""
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['sklearn'] = None\n")
    plan = write_plan(tmp_path / "p.json", "mlp", [2], "ddg")
    r = execute(str(plan), "--steps", "4", "--data", "digits",
                env={"PYTHONPATH": f"{tmp_path}:{ROOT}"}, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert lines == ["error: --data digits needs scikit-learn, which bundles the digits data set: "
                     "pip install scikit-learn"], r.stderr
