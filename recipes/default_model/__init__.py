"""The shipped default model (sbanet/assets/sbanet-lite-landcover): its recipe (config.yaml, v5, whose
first stage is v4.yaml; v3.yaml and the v5 attempts beside them), training (train, with its data
conversions in conversions and each source's ground sampling distance in gsd_sources), report
(model_report), model card (card, with provenance), the source report and the scale benchmark (scale)."""
