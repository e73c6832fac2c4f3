"""Calibrate this machine: its links, all-reduce, contention and executor overheads → a scenario.

``measure`` (two processes on the executor's backend: the link's ping-pong, the all-reduce
curve, a compute kernel alone and together; the executor's fixed costs from
``overhead_probe``, which runs the executor on a probe model) → a hardware scenario TOML;
``local_scenario`` (this machine's, calibrated once and cached); ``corun`` (how much two
processes training one model at once slow each other). Above :mod:`ddgsim.execute`, which
it runs; below :mod:`ddgsim.compare`, which predicts with its scenario.
"""
