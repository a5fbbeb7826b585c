"""Background jobs: the fine-tune job (data, budget, run) and the hub backup."""
