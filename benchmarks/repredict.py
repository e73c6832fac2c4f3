"""Each run of a validation.csv predicted again with the scenario validate used and without one of its parts.

    python benchmarks/repredict.py DIR/validation.csv PROFILE.json SCENARIO.toml --without message-curve
    python benchmarks/repredict.py DIR/validation.csv PROFILE.json SCENARIO.toml --without host-slots

The same profile, calibrated scenario and co-run validate used (from its cache: the co-run's
``concurrent_speed`` is read from the file beside the profile, and the scenario is widened to the
runs' processes, as validate does). "without" drops one part, all else equal: ``message-curve``
the CPU of a message's bytes (``message_sizes``/``message_cpu_us`` of ``[overheads]``),
``host-slots`` the sharing of the cores by more processes than the host has (``host_slots``).
Prints per run the two predictions, the measured median and both errors, then the median and
worst |error| of each, and of the speedups over K = 1.
"""
import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ddgsim.calibrate.local_scenario import widened
from ddgsim.compare.accuracy import speedups
from ddgsim.compare.rows import run_label
from ddgsim.compare.validation_csv import read_csv
from ddgsim.plan.split import parse_split
from ddgsim.predict.event_sim import simulate
from ddgsim.predict.scenario import Scenario, load_scenario
from ddgsim.profile.format import load as load_profile


def without(scenario: Scenario, part: str) -> Scenario:
    if part == "message-curve":
        return dataclasses.replace(scenario, overheads=dataclasses.replace(scenario.overheads, message_sizes=(),
                                                                           message_cpu_us=()))
    return dataclasses.replace(scenario, host_slots=0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("profile")
    ap.add_argument("scenario")
    ap.add_argument("--without", choices=("message-curve", "host-slots"), required=True)
    args = ap.parse_args()
    rows = [r for r in read_csv(args.csv) if r.runtime == "ddgsim" and r.status == "ok"]
    profile = load_profile(args.profile)
    used = widened(load_scenario(args.scenario), max(r.K * r.replicas for r in rows))
    corun = Path(args.profile).with_name(Path(args.profile).stem + ".corun.json")
    if corun.is_file():  # as validate: the two processes' speed measured on the model itself
        from ddgsim.calibrate.corun import Corun

        speed = min(1.0, round(Corun.from_json(json.loads(corun.read_text())).speed, 3))
        used = dataclasses.replace(used, concurrent_speed=speed)
    scenarios = {"with": used, "without": without(used, args.without)}
    errs: dict[str, list[float]] = {"with": [], "without": []}
    again: dict[str, list] = {"with": [], "without": []}  # the rows with the other prediction
    for r in rows:
        got = {}
        split = parse_split(r.split)
        for name, sc in scenarios.items():
            got[name] = simulate(profile, split, sc, r.schedule, micro_batches=r.micro_batches).iteration_ms
            errs[name].append(100 * (got[name] - r.measured_ms) / r.measured_ms)
            again[name].append(dataclasses.replace(r, predicted_ms=got[name], error_pct=errs[name][-1]))
        print(f"{run_label(r):45s} measured {r.measured_ms:7.3f}  with {got['with']:7.3f} ({errs['with'][-1]:+6.1f}%)"
              f"  without {got['without']:7.3f} ({errs['without'][-1]:+6.1f}%)")
    for name, e in errs.items():
        up = [abs(x.error_pct) for x in speedups(again[name]).values()]
        print(f"{name:8s} median |error| {statistics.median(abs(x) for x in e):.1f}%, worst {max(abs(x) for x in e):.1f}%"
              + (f"; speedup over K=1 median |error| {statistics.median(up):.1f}%, worst {max(up):.1f}%" if up else ""))


if __name__ == "__main__":
    main()
