"""Is a one-process execution slower, against the speed probe read just before it, after two-process
executions than after none?

    python benchmarks/probe_after_two_process.py PROFILE RUNS BLOCKS

PROFILE: the profile validate predicted with; RUNS: a resnet20 validation's ``runs/`` folder (its
plans); BLOCKS: a string of ``A`` (four K = 2 executions, then a probe reading and the one-process
execution) and ``B`` (the reading and the one-process execution only), e.g. ``AABBBAABBB``.
Prints each block's probe reading over the profile's whole step, the execution's compute (F + B per
iteration, median after two) over the profile's rows, and their ratio.
"""
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ddgsim.malloc import tune_malloc

tune_malloc()
from ddgsim.execute.launch import run_plan  # noqa: E402
from ddgsim.profile import format as profile_format  # noqa: E402
from ddgsim.profile.probe import SpeedProbe  # noqa: E402

TWO_PROCESS = ("k2-ddg-8", "k2-ddg-pipelined-6", "k2-gpipe-m2-7", "k2-1f1b-m2-8")

prof = profile_format.load(sys.argv[1])
runs, blocks = Path(sys.argv[2]), sys.argv[3]
probe = SpeedProbe(prof)
out = Path(tempfile.mkdtemp(prefix="probe-after-"))


def one_process(n: int) -> float:
    metrics = out / f"k1-{n}.json"
    run_plan(runs / "k1-bp-all.plan.json", 12, 1, metrics, None, "cpu")
    stage = json.loads(metrics.read_text())["per_stage"][0]
    return statistics.median(f + b for f, b in zip(stage["forward_ms"][2:], stage["backward_ms"][2:], strict=True))


t0 = time.time()
for n, block in enumerate(blocks):
    if block == "A":
        for name in TWO_PROCESS:
            run_plan(runs / f"{name}.plan.json", 12, 1, out / "k2.json", None, "cpu")
    reading = probe.read() / prof.whole_model_ms
    execution = one_process(n) / prof.sum_ms
    print(f"{time.time() - t0:6.1f}s {block} probe {reading:.3f}  K1 {execution:.3f}  K1/probe {execution / reading:.3f}",
          flush=True)
