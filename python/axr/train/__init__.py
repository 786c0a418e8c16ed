"""The training loop and its parts: optimizers, schedulers, token-normalised loss, checkpoints, progress."""
