"""The same plan under the ddgsim executor and under ``torch.distributed.pipelining``, in turn.

Run: ``.venv/bin/python benchmarks/runtime_ab.py --plans p1.json p2.json --rounds 5 --steps 24 --out DIR``

Each round runs every plan once under each runtime (the order alternating round by round), one
process per stage, gloo, 1 thread each, synthetic data; a run's figure is the median step time
after its first ``--warmup`` steps (the slowest stage's gap between iterations, as ``validate``
reads both). The ratio torch / ddgsim is taken round by round, so the VM's speed level, which
moves by up to 25 % within minutes, falls on both; the median ratio and its spread are printed
and written to ``DIR/runtime_ab.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ab_executor import run as run_executor  # noqa: E402  (the ddgsim executor's run, as ab_executor times it)

from ddgsim.execute.measure import measured_step_ms  # noqa: E402


def run(runtime: str, plan: Path, steps: int, warmup: int) -> float:
    if runtime == "ddgsim":
        return run_executor(ROOT, plan, steps, warmup)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        metrics = Path(tmp) / "m.json"
        subprocess.run([sys.executable, "-m", "ddgsim.compare.torch_pipelining", str(plan), "--steps", str(steps),
                        "--metrics", str(metrics)], env=env, check=True, capture_output=True, cwd=ROOT)
        data = json.loads(metrics.read_text())
    return measured_step_ms(data, warmup)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plans", type=Path, nargs="+", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    rows: dict[str, dict[str, list[float]]] = {str(p): {"ddgsim": [], "torch": []} for p in a.plans}
    for r in range(a.rounds):
        for p in a.plans:
            order = ("ddgsim", "torch") if r % 2 == 0 else ("torch", "ddgsim")
            for runtime in order:
                rows[str(p)][runtime].append(run(runtime, p.resolve(), a.steps, a.warmup))
            d, t = rows[str(p)]["ddgsim"][-1], rows[str(p)]["torch"][-1]
            print(f"round {r + 1} {p.name}: ddgsim {d:.1f} ms, torch {t:.1f} ms, torch/ddgsim {t / d:.3f}", flush=True)
    out = {}
    for p, got in rows.items():
        ratios = [t / d for d, t in zip(got["ddgsim"], got["torch"], strict=True)]
        out[p] = {**got, "ratios": ratios, "median_ratio": statistics.median(ratios),
                  "min_ratio": min(ratios), "max_ratio": max(ratios)}
        print(f"{Path(p).name}: torch/ddgsim median {statistics.median(ratios):.3f} "
              f"(rounds {min(ratios):.3f}–{max(ratios):.3f}); ddgsim median {statistics.median(got['ddgsim']):.1f} ms, "
              f"torch {statistics.median(got['torch']):.1f} ms")
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "runtime_ab.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
