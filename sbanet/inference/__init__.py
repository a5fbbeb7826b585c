"""Inference: the predictor (numpy in, numpy out) and its helpers: the fast path, the runtime
(threads, devices), precision, confidence, the lexicon of what a model was taught, the shipped model."""
