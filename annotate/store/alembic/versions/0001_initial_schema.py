"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-28 03:04:53.039934
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "image",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("path", sa.String(length=255), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("bands", sa.Integer(), nullable=False),
        sa.Column("dtype", sa.String(length=16), nullable=False),
        sa.Column("crs", sa.Text(), nullable=True),
        sa.Column("transform", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_image")),
        sa.UniqueConstraint("sha256", name=op.f("uq_image_sha256")),
    )
    op.create_table(
        "model_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("checkpoint", sa.Text(), nullable=False),
        sa.Column("preset", sa.String(length=64), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("active", name=op.f("ck_model_version_active_true_or_null")),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["model_version.id"], name=op.f("fk_model_version_parent_id_model_version")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_version")),
        sa.UniqueConstraint("active", name=op.f("uq_model_version_active")),
    )
    op.create_table(
        "expression",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("author", sa.String(length=255), nullable=False),
        sa.Column("split", sa.String(length=16), nullable=False),
        sa.Column("external_id", sa.String(length=255), nullable=True),
        sa.Column("category", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("source IN ('typed', 'imported')", name=op.f("ck_expression_source")),
        sa.CheckConstraint("split IN ('train', 'val', 'test')", name=op.f("ck_expression_split")),
        sa.ForeignKeyConstraint(["image_id"], ["image.id"], name=op.f("fk_expression_image_id_image")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_expression")),
    )
    op.create_index(op.f("ix_expression_external_id"), "expression", ["external_id"], unique=False)
    op.create_index(op.f("ix_expression_image_id"), "expression", ["image_id"], unique=False)

    op.create_table(
        "finetune_run",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("base_model_id", sa.Integer(), nullable=False),
        sa.Column("result_model_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("author", sa.String(length=255), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("metrics_before", sa.JSON(), nullable=True),
        sa.Column("metrics_after", sa.JSON(), nullable=True),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("stage", sa.String(length=64), nullable=False),
        sa.Column("log", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("worker", sa.String(length=255), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')", name=op.f("ck_finetune_run_status")
        ),
        sa.ForeignKeyConstraint(
            ["base_model_id"], ["model_version.id"], name=op.f("fk_finetune_run_base_model_id_model_version")
        ),
        sa.ForeignKeyConstraint(
            ["result_model_id"], ["model_version.id"], name=op.f("fk_finetune_run_result_model_id_model_version")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_finetune_run")),
    )
    op.create_index(op.f("ix_finetune_run_status"), "finetune_run", ["status"], unique=False)

    op.create_table(
        "mask_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("expression_id", sa.Integer(), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("author", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("area", sa.Integer(), nullable=False),
        sa.Column("rle", sa.LargeBinary(), nullable=False),
        sa.Column("uncertainty", sa.Float(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("kind IN ('prediction', 'correction')", name=op.f("ck_mask_version_kind")),
        sa.CheckConstraint(
            "status IN ('draft', 'submitted', 'accepted', 'rejected')", name=op.f("ck_mask_version_status")
        ),
        sa.ForeignKeyConstraint(
            ["expression_id"], ["expression.id"], name=op.f("fk_mask_version_expression_id_expression")
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"], ["model_version.id"], name=op.f("fk_mask_version_model_version_id_model_version")
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["mask_version.id"], name=op.f("fk_mask_version_parent_id_mask_version")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mask_version")),
    )
    op.create_index("ix_mask_version_expression_id_id", "mask_version", ["expression_id", "id"], unique=False)
    op.create_index("ix_mask_version_status_id", "mask_version", ["status", "id"], unique=False)

    op.create_table(
        "finetune_run_mask",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("mask_version_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=8), nullable=False),
        sa.CheckConstraint("role IN ('train', 'eval')", name=op.f("ck_finetune_run_mask_role")),
        sa.ForeignKeyConstraint(
            ["mask_version_id"], ["mask_version.id"], name=op.f("fk_finetune_run_mask_mask_version_id_mask_version")
        ),
        sa.ForeignKeyConstraint(["run_id"], ["finetune_run.id"], name=op.f("fk_finetune_run_mask_run_id_finetune_run")),
        sa.PrimaryKeyConstraint("run_id", "mask_version_id", name=op.f("pk_finetune_run_mask")),
    )
    op.create_table(
        "status_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("mask_version_id", sa.Integer(), nullable=False),
        sa.Column("from_status", sa.String(length=16), nullable=True),
        sa.Column("to_status", sa.String(length=16), nullable=False),
        sa.Column("author", sa.String(length=255), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "to_status IN ('draft', 'submitted', 'accepted', 'rejected')", name=op.f("ck_status_event_to_status")
        ),
        sa.ForeignKeyConstraint(
            ["mask_version_id"], ["mask_version.id"], name=op.f("fk_status_event_mask_version_id_mask_version")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_status_event")),
    )
    op.create_index(op.f("ix_status_event_mask_version_id"), "status_event", ["mask_version_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_status_event_mask_version_id"), table_name="status_event")

    op.drop_table("status_event")
    op.drop_table("finetune_run_mask")
    op.drop_index("ix_mask_version_status_id", table_name="mask_version")
    op.drop_index("ix_mask_version_expression_id_id", table_name="mask_version")

    op.drop_table("mask_version")
    op.drop_index(op.f("ix_finetune_run_status"), table_name="finetune_run")

    op.drop_table("finetune_run")
    op.drop_index(op.f("ix_expression_image_id"), table_name="expression")
    op.drop_index(op.f("ix_expression_external_id"), table_name="expression")

    op.drop_table("expression")
    op.drop_table("model_version")
    op.drop_table("image")
