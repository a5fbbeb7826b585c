"""Alembic migrations of the annotation store (run by annotate.store.database.upgrade_to_head)."""
