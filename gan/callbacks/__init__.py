"""Lightning callbacks: checkpoints, sample grids, evaluation, collapse watchdog."""
