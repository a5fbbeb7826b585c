"""Command-line entry points: ``python -m train.fit`` and ``python -m train.evaluate``."""
