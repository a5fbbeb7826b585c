"""Training and evaluation: the loop, optimiser, distributed helpers, resumable state, metrics."""
