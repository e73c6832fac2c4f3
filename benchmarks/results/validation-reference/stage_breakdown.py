"""Where each stage's iteration went, execution by execution, from a validate folder's metrics files.

    python benchmarks/results/validation-reference/stage_breakdown.py OUT_DIR

Per stage, the medians over the last two thirds of the iterations of: F, B and U (the
executor's timed action windows) and their sum beside the prediction's busy time (the
profile's compute plus the executor's overheads), W (waiting for a message), C (posting and
completing messages) and the step. What the step holds beyond F + B + U + W + C is the
loop's own time outside the timed windows.
"""
import json
import statistics
import sys
from pathlib import Path

KEYS = ("forward_ms", "backward_ms", "update_ms", "wait_ms", "comm_ms", "step_ms")

for f in sorted(Path(sys.argv[1], "runs").glob("*.r*.metrics.json")):
    d = json.loads(f.read_text())
    busy = json.loads(Path(str(f).rsplit(".r", 1)[0] + ".plan.json").read_text())["predicted"]["busy_ms"]
    out = []
    for s in d["per_stage"]:
        w = len(s["step_ms"]) // 3
        F, B, U, W, C, S = (statistics.median(s[k][w:]) for k in KEYS)
        out.append(f"st{s['stage']}: F{F:.2f} B{B:.2f} U{U:.2f} =FBU {F + B + U:.2f} (pred busy {busy[s['stage']]:.2f})"
                   f" W{W:.2f} C{C:.2f} step{S:.2f}")
    print(f.name.removesuffix(".metrics.json"), "|", " | ".join(out))
