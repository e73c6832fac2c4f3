"""Statistical efficiency: pilot trainings per K (:mod:`ddgsim.converge.pilot`), for planning by
time to a target loss."""
