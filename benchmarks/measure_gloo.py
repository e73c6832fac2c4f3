"""Measure gloo point-to-point latency and bandwidth between two local CPU processes.

Run: ``.venv/bin/python benchmarks/measure_gloo.py [--reps 30]``

The measurement is :func:`ddgsim.calibrate.measure.measure` (also behind ``python -m ddgsim
calibrate``, which writes the result as a scenario file): rank 0 sends a float32
tensor of n bytes to rank 1, which sends it back (ping-pong, blocking
``dist.send``/``dist.recv``); the one-way time is half the median round trip. Printed:
the per-size table, the least-squares fit ``latency + bytes/bandwidth``, and the older
summary behind ``ddgsim/scenarios/hardware/cpu-2core.toml`` — latency = the 4-byte message,
bandwidth = median over sizes >= 1 MiB of ``n / (t(n) - latency)``. Each process uses
one thread, as the ``cpu-2core`` scenario assumes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ddgsim.calibrate.measure import SIZES, measure


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--reps", type=int, default=30)
    args = ap.parse_args()
    cal = measure("cpu", SIZES, args.reps, threads=1)
    link = cal.link
    res = dict(zip(link.sizes, link.one_way_ms, strict=True))
    print(f"{'bytes':>10} {'one-way ms':>11} {'GB/s':>7} {'fit ms':>8}")
    for n, ms in res.items():
        print(f"{n:>10} {ms:>11.4f} {n / (ms * 1e6):>7.3f} {link.predict_ms(n):>8.4f}")
    print(f"fit: latency {link.latency_us:.1f} us, bandwidth {link.bandwidth_gb_s:.2f} GB/s "
          f"(largest residual {100 * link.max_rel_residual:.1f}%)")
    latency = res[min(res)]
    # Effective bandwidth of each large message once the latency is taken off; the
    # median over sizes >= 1 MiB resists the noise of a shared machine better than a fit.
    bws = [n / ((res[n] - latency) * 1e6) for n in res if n >= 1 << 20 and res[n] > latency]
    print(f"latency (one-way, {min(res)} B message): {latency * 1e3:.1f} us")
    if bws:
        print(f"bandwidth (median over >= 1 MiB, latency removed): {statistics.median(bws):.2f} GB/s")
    print(f"load average before {cal.meta['loadavg_before']}, after {cal.meta['loadavg_after']}")


if __name__ == "__main__":
    main()
