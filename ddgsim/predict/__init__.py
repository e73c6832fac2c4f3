"""Step 2 — predict: how one split runs under one schedule on one hardware scenario.

Three timing models, from the cheapest to the most detailed, property-tested to agree:
``closed_form`` (the steady-state period of ddg, ddg-pipelined and bp as formulas),
``max_plus`` (the schedule as a max-plus linear recursion, vectorised over many splits),
``event_sim`` (a SimPy discrete-event model with link contention and traces). ``memory``
predicts peak memory per stage; ``scenario`` reads the hardware (devices, links, routes).
"""
