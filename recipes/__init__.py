"""Release pipelines of shipped checkpoints: one package per model, each with its recipe files,
its training command, its report, its model card and its benchmarks."""
