"""Step 3 — plan: choose the split and write it down.

``split`` (splits and every split heuristic) → ``search`` (the exact split search over
the timing models) → ``build`` (a simulated prediction becomes a plan) → ``format``
(the ``ddgsim-plan/1`` file the executor runs).
"""
