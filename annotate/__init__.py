"""The annotation store (SQLAlchemy models, repository, import/export, fine-tune job) and UI."""

from .store.database import Store, make_store

__all__ = ["Store", "make_store"]
