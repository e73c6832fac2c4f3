"""The convergence analysis of DDG: ``bounds`` (the paper's constants, step sizes and
inequalities) and ``check`` (their observed sides along real runs of small problems)."""
