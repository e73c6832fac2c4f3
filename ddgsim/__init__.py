"""ddgsim: plan, simulate and run decoupled parallel backpropagation (DDG).

The flow, one subpackage per step: ``profile`` (measure a model's units) → ``predict``
(three timing models and memory) → ``plan`` (search the splits, write a plan) →
``execute`` (run it on several devices) → ``compare`` (predicted vs measured).
``schedule`` (what runs when, and what each action waits for) and ``trace`` are shared
by all of them; ``theory`` holds the convergence analysis; ``commands`` the CLI.
"""

__version__ = "0.1.0"
