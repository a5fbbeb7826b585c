"""mask_version.request_id: a client's idempotency key for saves (unique when set)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 03:40:00.000000

A nullable column and a unique index (SQLite cannot add a UNIQUE constraint to an existing
table; a unique index enforces the same on SQLite and PostgreSQL, and both allow many NULLs).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("mask_version", sa.Column("request_id", sa.String(length=64), nullable=True))
    op.create_index("ix_mask_version_request_id", "mask_version", ["request_id"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_mask_version_request_id", table_name="mask_version")
    op.drop_column("mask_version", "request_id")
