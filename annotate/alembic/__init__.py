"""Alembic migrations of the annotation store (run by annotate.store.upgrade_to_head)."""
