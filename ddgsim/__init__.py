"""ddgsim: plan, simulate and run decoupled parallel backpropagation (DDG)."""

__version__ = "0.1.0"
