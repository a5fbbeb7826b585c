"""The annotation tool on top of :mod:`sbanet`: ``store/`` (the annotation store: models,
repository, import/export; no Gradio), ``jobs/`` (the fine-tune job, hub backup) and ``app/`` (the
Gradio UI)."""

from .store.database import Store, make_store

__all__ = ["Store", "make_store"]
