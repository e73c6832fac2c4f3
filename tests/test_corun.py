"""The co-run measurement: two real processes training a model alone and at once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ddgsim.calibrate import corun


@pytest.mark.slow
def test_two_processes_train_alone_and_at_once_and_the_result_is_cached(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "mlp.corun.json"
    c, measured = corun.cached_corun("mlp", 16, 1, cache)
    assert measured and cache.is_file()
    assert c.model == "mlp" and c.batch_size == 16 and len(c.speeds) == corun.ROUNDS
    assert c.alone_ms > 0 and c.together_ms > 0 and all(s > 0 for s in c.speeds)
    assert min(c.speeds) <= c.speed <= max(c.speeds)
    assert corun.Corun.from_json(json.loads(cache.read_text())) == c

    def never(*_a: object, **_k: object) -> corun.Corun:
        raise AssertionError("measured again")

    monkeypatch.setattr(corun, "measure_corun", never)
    assert corun.cached_corun("mlp", 16, 1, cache) == (c, False)  # read, not measured
    with pytest.raises(AssertionError, match="measured again"):
        corun.cached_corun("mlp", 32, 1, cache)  # another batch: the cached one does not answer
    with pytest.raises(AssertionError, match="measured again"):
        corun.cached_corun("mlp", 16, 1, cache, remeasure=True)


def test_a_worker_that_fails_ends_the_measurement_with_an_error_not_a_hang() -> None:
    with pytest.raises(RuntimeError, match="co-run measurement of no-such-model failed"):
        corun.measure_corun("no-such-model", 16)


def test_validate_predicts_with_the_calibrations_figure_where_the_measurement_fails(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from ddgsim.compare.inputs import with_model_contention
    from ddgsim.predict.scenario import load_scenario

    def fails(*_a: object, **_k: object) -> tuple[corun.Corun, bool]:
        raise RuntimeError("co-run measurement of mlp failed (exit codes [1, -9])")

    monkeypatch.setattr(corun, "cached_corun", fails)
    scenario = load_scenario("cpu-2core")
    warned: list[str] = []
    got, line = with_model_contention(scenario, "mlp", 16, 1, None, False, warned.append)
    assert got == scenario and line.startswith("warning: co-run measurement of mlp failed")
    assert warned == [line]


def test_every_other_pair_of_rounds_trains_together_first() -> None:
    """A speed drifting one way across a round biases alone-first and together-first rounds oppositely:
    over four rounds each rank is alone once before and once after training together."""
    orders = [corun.phase_order(r) for r in range(8)]
    assert orders[:4] == [("alone", "together")] * 2 + [("together", "alone")] * 2
    assert orders[4:] == orders[:4]
    for rank in (0, 1):
        firsts = [corun.phase_order(r)[0] == "alone" for r in range(4) if r % 2 == rank]
        assert sorted(firsts) == [False, True]
    assert corun.ROUNDS % 2 == 1  # a median of one round, not of two
