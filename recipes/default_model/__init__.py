"""The shipped default model (sbanet/assets/sbanet-lite-dubai): its recipe (config.yaml; v3.yaml,
the one it replaced; v5*.yaml in progress), training (train, with its data conversions in conversions),
report (model_report), model card (card, with provenance), the source report and the scale benchmark (scale)."""
