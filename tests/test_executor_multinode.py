"""Two launchers on one machine, as on two nodes: ``--nnodes 2 --node-rank 0|1`` with a c10d
rendezvous on localhost; the stages' final weights equal the single-process engine's (which
the single-launcher run equals bit for bit, ``test_executor_dist.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from launch_helpers import (
    assert_same,
    engine_weights,
    execute,
    execute_on_two_nodes,
    final_weights,
    write_plan,
)


@pytest.mark.parametrize(("split", "schedule"), [([2], "ddg"), ([1, 3, 5], "ddg-pipelined")])
@pytest.mark.slow
def test_two_nodes_give_the_single_node_weights(tmp_path: Path, split: list[int], schedule: str) -> None:
    k_total = len(split) + 1
    plan = write_plan(tmp_path / "p.json", "mlp", split, schedule)
    common = ["--steps", "9", "--data", "digits", "--seed", "1", "--no-eval"]
    outs = execute_on_two_nodes(plan, common, tmp_path / "w")
    assert sum(f"{schedule} K={k_total}:" in out for out in outs) == 1  # one summary, from rank 0
    assert_same(final_weights(tmp_path / "w", k_total), engine_weights([str(plan), *common]))


def test_multinode_options_are_checked(tmp_path: Path) -> None:
    plan = write_plan(tmp_path / "p.json", "mlp", [1, 3], "ddg")
    for extra, msg in ((["--nnodes", "2", "--rdzv-endpoint", "localhost:29999"], "cannot be spread evenly"),
                       (["--nnodes", "3", "--node-rank", "3"], "--node-rank must be in 0..2"),
                       (["--nnodes", "3"], "needs --rdzv-endpoint HOST:PORT")):
        r = execute(str(plan), "--steps", "3", *extra, timeout=60)
        assert r.returncode == 2 and msg in r.stderr, r.stderr
