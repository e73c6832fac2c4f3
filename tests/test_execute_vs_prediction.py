"""``execute`` ends with the plan's prediction beside the measurement."""

from __future__ import annotations

from ddgsim.execute.measure import versus_prediction
from ddgsim.plan.records import Prediction

SUMMARY = {"median_step_ms": 50.0, "samples_per_s": 640.0,
           "per_stage_median_ms": {"forward_ms": [10.0, 12.0], "backward_ms": [20.0, 24.0], "update_ms": [1.0, 2.0]}}


def test_prediction_beside_measurement() -> None:
    text = versus_prediction(Prediction(iteration_ms=40.0, samples_per_s=800.0, busy_ms=(30.0, 38.0),
                                        bubble_fraction=(0.25, 0.05)), SUMMARY)
    first, s0, s1 = text.splitlines()
    assert first == ("predicted 40.0 ms/iteration (800.0 samples/s), measured 50.0 ms (640.0 samples/s): "
                     "the prediction is 20.0% below the measurement")
    assert s0 == "  stage 0: busy 31.0 ms (predicted 30.0), idle 38% (predicted 25%)"
    assert s1 == "  stage 1: busy 38.0 ms (predicted 38.0), idle 24% (predicted 5%)"
    assert "10.0% above the measurement" in versus_prediction(Prediction(iteration_ms=55.0), SUMMARY).splitlines()[0]


def test_no_prediction_no_comparison() -> None:
    assert versus_prediction(None, SUMMARY) == ""
    assert versus_prediction(Prediction(), SUMMARY) == ""
