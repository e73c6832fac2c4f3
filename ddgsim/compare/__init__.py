"""Step 5 — compare: predictions against measured runs.

``validate`` (:func:`ddgsim.compare.validate.run`) plans, predicts, runs and measures a grid of
splits and reports the error; its parts are ``config``, ``inputs``, ``selection``, ``options``,
``execution``, ``rounds``, ``rows``, ``accuracy``, ``validation_csv`` and ``report``.
``figures`` draws predicted and measured timelines and writes the HTML and PNGs;
``torch_pipelining`` runs a plan under PyTorch's own pipeline runtime.
"""
