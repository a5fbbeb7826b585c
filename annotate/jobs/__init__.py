"""Background jobs: the fine-tune job (data, budget, run, its quick mode) and the hub backup."""
