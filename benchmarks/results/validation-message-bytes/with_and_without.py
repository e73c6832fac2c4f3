"""Each run of a validation.csv predicted again with and without the CPU of its messages' bytes.

    python benchmarks/results/validation-message-bytes/with_and_without.py DIR/validation.csv PROFILE.json SCENARIO.toml

The same profile, calibrated scenario and co-run validate used (from its cache: the co-run's
``concurrent_speed`` is read from the file beside the profile, as validate does); "without" is the scenario
with ``message_sizes``/``message_cpu_us`` removed from ``[overheads]``, all else equal. Prints per run
the two predictions, the measured median and both errors, then the median and worst |error| of each.
"""
import dataclasses
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from ddgsim.compare.accuracy import speedups
from ddgsim.compare.rows import run_label
from ddgsim.compare.validation_csv import read_csv
from ddgsim.predict.event_sim import simulate
from ddgsim.predict.scenario import load_scenario
from ddgsim.profile.format import load as load_profile

rows = read_csv(sys.argv[1])
profile = load_profile(sys.argv[2])
with_curve = load_scenario(sys.argv[3])
corun = Path(sys.argv[2]).with_name(Path(sys.argv[2]).stem + ".corun.json")
if corun.is_file():  # as validate: the two processes' speed measured on the model itself
    from ddgsim.calibrate.corun import Corun

    speed = min(1.0, round(Corun.from_json(json.loads(corun.read_text())).speed, 3))
    with_curve = dataclasses.replace(with_curve, concurrent_speed=speed)
without = dataclasses.replace(with_curve, overheads=dataclasses.replace(with_curve.overheads, message_sizes=(),
                                                                        message_cpu_us=()))
errs: dict[str, list[float]] = {"with": [], "without": []}
again: dict[str, list] = {"with": [], "without": []}  # the rows with the other prediction
for r in rows:
    if r.runtime != "ddgsim" or r.status != "ok":
        continue
    got = {}
    for name, sc in (("with", with_curve), ("without", without)):
        split = [int(c) for c in r.split.split(",") if c.strip()]
        got[name] = simulate(profile, split, sc, r.schedule, micro_batches=r.micro_batches).iteration_ms
        errs[name].append(100 * (got[name] - r.measured_ms) / r.measured_ms)
        again[name].append(dataclasses.replace(r, predicted_ms=got[name], error_pct=errs[name][-1]))
    print(f"{run_label(r):45s} measured {r.measured_ms:7.3f}  with {got['with']:7.3f} ({errs['with'][-1]:+6.1f}%)"
          f"  without {got['without']:7.3f} ({errs['without'][-1]:+6.1f}%)")
for name, e in errs.items():
    up = [abs(x.error_pct) for x in speedups(again[name]).values()]
    print(f"{name:8s} median |error| {statistics.median(abs(x) for x in e):.1f}%, worst {max(abs(x) for x in e):.1f}%"
          + (f"; speedup over K=1 median |error| {statistics.median(up):.1f}%, worst {max(up):.1f}%" if up else ""))
