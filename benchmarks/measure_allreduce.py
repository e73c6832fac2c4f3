"""Measure a 2-process gloo all-reduce on this machine and compare it with the timing models.

Run: ``.venv/bin/python benchmarks/measure_allreduce.py [--reps 20] [--sizes 4,1048576,...]``

The measurement is :func:`ddgsim.profile.calibrate.measure` (behind ``python -m ddgsim
calibrate``): two CPU processes, one thread each, first a send/recv ping-pong (the link
fit ``latency + bytes/bandwidth``), then ``dist.all_reduce`` of float32 tensors of each
size (gloo's own algorithm). Printed per size: the measured median with the fastest and
slowest repetition, the prediction of ``ddgsim.predict.collective.allreduce_ms`` (ring of
2 devices over the fitted link: 2·latency + bytes/bandwidth) and its error. Measure on a
quiet machine: the load average before and after is printed too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ddgsim.profile.calibrate import SIZES, allreduce_check, measure


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)), help="bytes, comma-separated multiples of 4")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    cal = measure("cpu", sizes, args.reps, threads=1, devices=2)
    link = cal.link
    print(f"link fit: {link.latency_us:.1f} us + bytes / {link.bandwidth_gb_s:.3f} GB/s "
          f"(largest residual {100 * link.max_rel_residual:.1f}%)")
    print(f"{'bytes':>10} {'measured ms':>11} {'fastest':>9} {'slowest':>9} {'predicted':>9} {'error':>7}")
    for r in allreduce_check(cal):
        print(f"{int(r['bytes']):>10} {r['measured_ms']:>11.4f} {r['low_ms']:>9.4f} {r['high_ms']:>9.4f} "
              f"{r['predicted_ms']:>9.4f} {r['error_pct']:>+6.1f}%")
    print(f"load average before {cal.meta['loadavg_before']}, after {cal.meta['loadavg_after']}")


if __name__ == "__main__":
    main()
