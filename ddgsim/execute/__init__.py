"""Step 4 — execute: run a plan for real, one process per stage (torch.distributed; gloo on
CPU, NCCL on GPU), computing the DDG update exactly.

``config`` (the run's typed configuration) ← ``options`` (its command line);
``launch`` (elastic launcher) → ``runner`` (one stage process: ``job`` built from the config,
``groups`` of processes, the ``stage_loop`` with ``comm`` messages, ``stage``
forward/backward/delayed update, ``data``, ``checkpoint``, ``preempt``, ``faults``,
``evaluate``) → ``report`` (gathered on rank 0) → ``measure`` (metrics and trace) and
``tensorboard`` (scalars per step). ``engine`` runs the same schedule in one process (the
reference the distributed run must equal bit for bit).
"""
