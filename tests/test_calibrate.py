"""Calibration: the link fit, the scenario file it writes, and one real (tiny) gloo measurement."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ddgsim.calibrate.measure import Calibration, LinkFit, fit_link, scenario_toml, write_scenario
from ddgsim.errors import UserError
from ddgsim.predict.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]


def test_fit_recovers_an_exact_line() -> None:
    sizes = [4, 1024, 1 << 20, 8 << 20]
    times = [0.05 + n / (2.5 * 1e6) for n in sizes]  # 50 us + n / 2.5 GB/s
    fit = fit_link(sizes, times)
    assert fit.latency_us == pytest.approx(50.0, rel=1e-6)
    assert fit.bandwidth_gb_s == pytest.approx(2.5, rel=1e-6)
    assert fit.max_rel_residual < 1e-9
    assert fit.predict_ms(1 << 20) == pytest.approx(times[2])


def test_fit_never_returns_a_negative_latency() -> None:
    # the small message is faster than the line through the big ones: nnls clamps at 0
    fit = fit_link([4, 1 << 20, 2 << 20], [0.001, 1.0, 2.1])
    assert fit.latency_us >= 0.0
    assert 0.9 < fit.bandwidth_gb_s < 1.2


def test_fit_rejects_degenerate_input() -> None:
    with pytest.raises(UserError):
        fit_link([4], [0.1])
    with pytest.raises(UserError):
        fit_link([4, 4], [0.1, 0.2])
    with pytest.raises(UserError):
        fit_link([4, 8], [0.1, -1.0])


def _calibration(devices: int = 3, bandwidth: float = 2.0) -> Calibration:
    link = LinkFit(latency_us=80.0, bandwidth_gb_s=bandwidth, sizes=(4, 1 << 20), one_way_ms=(0.08, 0.6),
                   max_rel_residual=0.01)
    return Calibration(device="cpu", backend="gloo", devices=devices, memory_gib=4.0, link=link,
                       step_overhead_ms=0.3, compute_alone_ms=10.0, compute_together_ms=12.5, reps=5,
                       threads=1, meta={"date": "2026-01-01T00:00:00+00:00", "host": "h", "cpu": "x"})


def test_written_scenario_loads_with_the_fitted_link(tmp_path: Path) -> None:
    cal = _calibration()
    path = tmp_path / "local.toml"
    write_scenario(cal, path, command="python -m ddgsim calibrate --out local.toml")
    sc = load_scenario(str(path))
    assert sc.name == "local"
    assert [d.name for d in sc.devices] == ["cpu0", "cpu1", "cpu2"]
    assert all(d.speed == 1.0 and d.memory_gib == 4.0 for d in sc.devices)
    n = 4 << 20
    assert sc.transfer_ms("cpu2", "cpu0", n) == pytest.approx(0.08 + n / 2e9 * 1e3)
    text = path.read_text()
    assert "# Calibrated by `python -m ddgsim calibrate --out local.toml`" in text
    assert "speed 0.800" in text  # concurrent compute speed 10 / 12.5, recorded as a comment
    assert cal.concurrent_speed == pytest.approx(0.8)


def test_allreduce_prediction_is_the_ring_of_two_over_the_fitted_link(tmp_path: Path) -> None:
    from dataclasses import replace

    from ddgsim.calibrate.measure import AllreduceSample, allreduce_check

    cal = replace(_calibration(), allreduce=(AllreduceSample(nbytes=1 << 20, median_ms=0.95, mean_ms=1.0, low_ms=0.9, high_ms=1.3),))
    (row,) = allreduce_check(cal)
    want = 2 * 0.08 + (1 << 20) / 2e6  # 2·latency + bytes/bandwidth
    assert row["predicted_ms"] == pytest.approx(want)
    assert row["error_pct"] == pytest.approx(100 * (want - 1.0))
    path = tmp_path / "x.toml"
    write_scenario(cal, path)
    assert "# All-reduce of 2 processes" in path.read_text() and load_scenario(str(path)).name == "x"


def test_the_written_scenario_times_all_reduces_by_the_measured_curve(tmp_path: Path) -> None:
    from dataclasses import replace

    from ddgsim.calibrate.measure import AllreduceSample, allreduce_sizes
    from ddgsim.predict.collective import allreduce_ms

    samples = tuple(AllreduceSample(nbytes=n, median_ms=0.1, mean_ms=0.2 + n / 1e6, low_ms=0.1, high_ms=9.0)
                    for n in allreduce_sizes([4, 1 << 20]))
    path = tmp_path / "local.toml"
    write_scenario(replace(_calibration(), allreduce=samples), path)
    sc = load_scenario(str(path))
    for x in samples:  # every 2 of the 3 devices, at every measured size, whatever the algorithm
        for algorithm in ("ring", "tree"):
            assert float(allreduce_ms(sc, ["cpu2", "cpu0"], x.nbytes, algorithm)) == pytest.approx(x.mean_ms, rel=1e-5)
    # three devices were not measured together: the link model
    three = float(allreduce_ms(sc, ["cpu0", "cpu1", "cpu2"], 1 << 20))
    assert three == pytest.approx(4 * (0.08 + (1 << 20) / 3 / 2e6))


def test_the_trimmed_mean_drops_a_tenth_at_each_end() -> None:
    from ddgsim.calibrate.measure import trimmed_mean

    assert trimmed_mean([100.0] + [1.0] * 8 + [0.0]) == pytest.approx(1.0)
    assert trimmed_mean([0.4] * 5 + [2.4] * 5) == pytest.approx(1.4)  # a bimodal time: its mean, not a mode


def test_allreduce_sizes_are_the_powers_of_two_between_the_link_sizes() -> None:
    from ddgsim.calibrate.measure import SIZES, allreduce_sizes

    assert allreduce_sizes([4, 1024]) == [4, 8, 16, 32, 64, 128, 256, 512, 1024]
    assert allreduce_sizes([12, 40]) == [12, 16, 32, 40]
    assert allreduce_sizes(SIZES)[0] == 4 and allreduce_sizes(SIZES)[-1] == 32 << 20


def test_infinite_bandwidth_is_written_as_inf() -> None:
    text = scenario_toml(_calibration(devices=2, bandwidth=math.inf), "x")
    assert "bandwidth_gb_s = inf" in text


def _cli(*argv: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "ddgsim", "calibrate", *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_bad_arguments_fail_before_measuring(tmp_path: Path) -> None:
    r = _cli("--sizes", "4,5", "--out", str(tmp_path / "a.toml"))
    assert r.returncode == 2 and "--sizes" in r.stderr
    r = _cli("--out", str(tmp_path / "a.json"))
    assert r.returncode == 2 and ".toml" in r.stderr
    r = _cli("--out", str(tmp_path / "missing" / "a.toml"))
    assert r.returncode == 2 and "does not exist" in r.stderr


@pytest.mark.slow
def test_real_gloo_calibration_writes_a_loadable_sane_scenario(tmp_path: Path) -> None:
    out = tmp_path / "local.toml"
    r = _cli("--sizes", "4,65536", "--reps", "2", "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr
    measured = json.loads(r.stdout)  # --json: the measurements on stdout, the file announced on stderr
    assert measured["sizes"] == [4, 65536] and len(measured["one_way_ms"]) == 2
    sc = load_scenario(str(out))
    link = sc.link(("cpu0", "cpu1"))
    assert link.latency_us >= 0 and link.bandwidth_gb_s > 0
    # a 1 MiB message cannot cross loopback in under 1 us nor take a second
    assert 1e-3 < sc.transfer_ms("cpu0", "cpu1", 1 << 20) < 1e3
    assert "StageWorker F+B+U in-process" in out.read_text()
    # the executor's fixed costs, measured by running it on the probe model: one process, then two
    over = sc.overheads
    assert over.alone is not None and measured["overheads"]["forward_us"] == over.forward_us
    for o in (over, over.alone):
        for value in (o.forward_us, o.backward_us, o.update_us, o.send_us, o.receive_us, o.tail_us):
            assert 0 <= value < 20_000  # µs: a Python action on a core costs more than nothing, far less than 20 ms
    assert over.forward_us + over.tail_us > 5 and over.send_us > 0  # a message is never free
    # what a message's bytes cost each end beyond the smallest, from the same ping-pong's CPU time
    assert over.message_sizes == (4.0, 65536.0) and over.message_cpu_us[0] == 0.0
    assert 0 <= over.message_cpu_us[1] < 20_000 and over.alone.message_sizes == ()
    assert "CPU ms per message and end" in out.read_text()
    assert "[overheads]" in out.read_text() and "k2-gpipe-m4" in out.read_text()
    # the 2-process all-reduce: measured per size, next to the prediction from the fitted link
    rows = measured["allreduce"]
    assert [r["bytes"] for r in rows] == [2**i for i in range(2, 17)]  # every power of two from 4 B to 64 KiB
    for row in rows:
        assert 0 < row["low_ms"] <= row["measured_ms"] <= row["high_ms"] and row["predicted_ms"] > 0
    assert "All-reduce of 2 processes" in out.read_text()
    # ... and its medians are the scenario's measured curve for any 2 of its devices
    curve = sc.measured_allreduce(["cpu1", "cpu0"])
    assert curve is not None and list(curve.sizes) == [r["bytes"] for r in rows]
    assert list(curve.ms) == pytest.approx([r["measured_ms"] for r in rows], rel=1e-5)  # the trimmed means
    assert all(r["low_ms"] <= r["median_ms"] <= r["high_ms"] for r in rows)
    assert f"wrote {out}" in r.stderr


def test_the_probed_overheads_are_written_as_the_table_the_models_read(tmp_path: Path) -> None:
    import dataclasses

    from ddgsim.calibrate.overhead_probe import ProbeResult
    from ddgsim.predict.overheads import Overheads

    over = Overheads(forward_us=120.5, backward_us=90, update_us=80, send_us=100, receive_us=100, tail_us=30,
                     alone=Overheads(forward_us=70, backward_us=30, update_us=0, tail_us=30))
    probe = ProbeResult(overheads=over, per_action_us=30.0, per_message_us=100.0, samples=(), residual_us=12.0,
                        tail_share=1.0, runs=(("k2-bp-m1", 1.4, 1.5),))
    path = tmp_path / "local.toml"
    write_scenario(dataclasses.replace(_calibration(), overheads=probe), path)
    assert load_scenario(str(path)).overheads == over
    # with the curve of a message's bytes: written as two lists, read back the same
    curved = dataclasses.replace(over, message_sizes=(4.0, 1048576.0), message_cpu_us=(0.0, 312.5))
    write_scenario(dataclasses.replace(_calibration(), overheads=dataclasses.replace(probe, overheads=curved),
                                       message_cpu_ms=(0.05, 0.3625)), path)
    assert load_scenario(str(path)).overheads == curved
    assert "message_sizes = [4, 1048576]" in path.read_text()  # exact bytes, not rounded
    text = path.read_text()
    assert "k2-bp-m1       measured 1.400 ms, predicted 1.500 ms (+7.1%)" in text
    assert "per message posted or taken 100.0 us" in text


def test_the_message_curve_is_each_size_beyond_the_smallest_never_above_a_larger() -> None:
    from ddgsim.calibrate.measure import message_cpu_curve

    # ms per message and end: a noisy 1 KiB (above the 16 KiB figure) does not raise the curve
    sizes, us = message_cpu_curve([4, 1024, 16384, 1 << 20, 8 << 20], [0.04, 0.09, 0.06, 0.33, 1.40])
    assert sizes == (4.0, 1024.0, 16384.0, 1048576.0, 8388608.0)
    assert us == pytest.approx((0.0, 20.0, 20.0, 290.0, 1360.0))
    # the order of the sizes given does not matter; the least figure is the base, even a larger size's
    assert message_cpu_curve([1 << 20, 4, 16384], [0.33, 0.04, 0.03])[1] == pytest.approx((0.0, 0.0, 300.0))
    with pytest.raises(ValueError, match="one CPU figure per size"):
        message_cpu_curve([4, 8], [0.1])
