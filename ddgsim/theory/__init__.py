"""The convergence analysis of DDG: ``bounds`` (the paper's constants, step sizes and
inequalities; pure math, used by the executor's stage). Their observed sides along real runs of
small problems: :mod:`ddgsim.converge.theory_check`."""
