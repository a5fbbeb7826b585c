"""Training and evaluation: the loop, optimiser, distributed helpers, resumable state, metrics, and
quick adaptation (the decoder fitted on cached frozen features)."""
