"""A validation's speed probe against its one-process executions, in time order.

    python benchmarks/probe_vs_executions.py DIR     (DIR: validate's --out, with summary.json and validation.csv)

Each probe reading is over the profile's whole-model step; each one-process (K = 1) execution's
figure is its compute ratio (its F + B + U per iteration over the profile's rows). Where the two
medians differ, the probe (the model's whole step in the validating process) did not see the speed
the executions met.
"""
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ddgsim.compare.validation_csv import read_csv

folder = Path(sys.argv[1])
speed = json.loads((folder / "summary.json").read_text()).get("session_speed")
if not speed:
    sys.exit(f"{folder}/summary.json has no session_speed (validated with --no-speed-probe, or before the probe)")
whole = speed["profile_whole_ms"]
events = [(t, "probe", ms / whole) for t, ms in speed["readings"]]
one = [r for r in read_csv(folder / "validation.csv") if r.K == 1 and r.replicas == 1 and r.runtime == "ddgsim"]
ratios = one[0].compute_ratio_all if one else ()
events += [(t, "K=1 execution", c) for t, c in zip(one[0].measured_at_s, ratios, strict=False)] if one else []
for t, what, x in sorted(events):
    print(f"{t:7.1f} s  {what:14s} {x:.3f}x")
probes = [x for _, w, x in events if w == "probe"]
print(f"median: probe {statistics.median(probes):.3f}x ({len(probes)} readings)"
      + (f", K=1 executions' compute {statistics.median(ratios):.3f}x ({len(ratios)})" if ratios else ""))
