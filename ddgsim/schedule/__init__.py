"""Schedules as data: per-stage action lists, and the one validator of their invariants.

Pure Python, no SimPy and no torch: the simulator adds durations to these lists and
the executor runs the very same lists. Indices are 0-based; the delay of stage k
under DDG is ``d = K-1-k``.

Per-stage lists for K = 2 stages, N = 3 iterations (``repr`` of each action)::

    schedule        stage 0 (d=1 for ddg)                 stage 1 (d=0)
    bp              0F0 0B0 0U0 0F1 0B1 0U1 0F2 0B2 0U2    1F0 1B0 1U0 1F1 1B1 1U1 ...
    ddg             0F0 0W0 0F1 0B0 0U0 0W1 0F2 0B1 0U1    1F0 1B0 1U0 1F1 1B1 1U1 1F2 1B2 1U2
    ddg-pipelined   0F0 0F1 0B0 0U0 0F2 0B1 0U1            same as ddg
    gpipe (M=2)     0F0 0F0.1 0B0.1 0B0 0U0 ...            1F0 1F0.1 1B0.1 1B0 1U0 ...
    1f1b  (M=2)     0F0 0F0.1 0B0 0B0.1 0U0 ...            1F0 1B0 1F0.1 1B0.1 1U0 ...

In a run of N iterations stage k backprops batches ``0..N-1-d`` only (no drain).
Observed staleness of batch t on stage k = number of ``U`` between ``F k t`` and
``U k t`` in the stage's list. Under ``ddg``/``ddg-pipelined`` it is ``min(t, d)``:
the first d batches (warm-up) see fewer updates; every later batch sees exactly d.

The package, one idea a module (every name is re-exported here):

* :mod:`~ddgsim.schedule.actions` — actions and the messages between stages: :func:`needs`
  (what an action waits for) and :func:`sends` (what it sends when it ends);
* :mod:`~ddgsim.schedule.registry` — the schedules by name (:class:`ScheduleKind`), each one's
  traits and order (:class:`ScheduleSpec`, :func:`get_schedule`);
* :mod:`~ddgsim.schedule.lists` — a run's action lists (:class:`Schedule`, :func:`make_schedule`);
* :mod:`~ddgsim.schedule.validator` — the one validator of their invariants (:func:`validate`).
"""

from ddgsim.schedule.actions import KINDS, RECEIVE_WINDOW, Action, Message, needs, sends
from ddgsim.schedule.lists import Schedule, check_schedule_args, make_schedule, resolve
from ddgsim.schedule.registry import (
    DEFAULT_SCHEDULE,
    MICRO_SCHEDULES,
    SCHEDULES,
    BackProp,
    Cycle,
    Decoupled,
    GPipe,
    OneFOneB,
    ScheduleKind,
    ScheduleSpec,
    Steady,
    get_schedule,
)
from ddgsim.schedule.validator import ScheduleError, execution_order, staleness_of, validate

__all__ = [
    "DEFAULT_SCHEDULE", "KINDS", "MICRO_SCHEDULES", "RECEIVE_WINDOW", "SCHEDULES", "Action", "BackProp",
    "Cycle", "Decoupled", "GPipe", "Message", "OneFOneB", "Schedule", "ScheduleError", "ScheduleKind",
    "ScheduleSpec", "Steady", "check_schedule_args", "execution_order", "get_schedule", "make_schedule",
    "needs", "resolve", "sends", "staleness_of", "validate",
]
