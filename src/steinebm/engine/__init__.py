"""The engine: the config, building a run's parts from it, the training loop, checkpoints, the run
log and the checks before a run."""
