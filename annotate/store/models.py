"""The annotation store's tables (SQLAlchemy 2.0 typed ORM).

History is append-only: a mask version's pixels, kind, author and lineage never change once
written (the session refuses such updates, see :func:`guard_append_only`); a correction is a new
version whose ``parent_id`` points at what it corrected. The one mutable field of a mask version,
its review ``status``, changes only together with a :class:`StatusEvent` row that records who
changed it, from what, and when.

Masks live in the database as COCO run-length encodings (compressed ``counts`` bytes, see
:mod:`annotate.store.masks`) so a mask is written in the same transaction as its row; image files
live on disk, content-addressed, and are written before any row refers to them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    event,
    inspect,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

EXPRESSION_SOURCES = ("typed", "imported")
MASK_KINDS = ("prediction", "correction")
MASK_STATUSES = ("draft", "submitted", "accepted", "rejected")
RUN_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
RUN_MASK_ROLES = ("train", "eval")
SPLITS = ("train", "val", "test")

# Stable constraint names: Alembic needs them to alter or drop constraints later (SQLite batch mode).
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no zone: stored as naive UTC)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware datetime (e.g. datetime.now(UTC))")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[float]: JSON}


class Image(Base):
    """An image file, stored once under the data folder by its sha256."""

    __tablename__ = "image"

    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    path: Mapped[str] = mapped_column(String(255))  # relative to the data folder
    filename: Mapped[str] = mapped_column(String(255))  # the name it was uploaded/imported with
    width: Mapped[int]
    height: Mapped[int]
    bands: Mapped[int]
    dtype: Mapped[str] = mapped_column(String(16))
    crs: Mapped[str | None] = mapped_column(Text)  # "EPSG:32616" or WKT, when georeferenced
    transform: Mapped[list[float] | None]  # affine (a, b, c, d, e, f) as rasterio writes it
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    expressions: Mapped[list[Expression]] = relationship(back_populates="image", order_by="Expression.id")

    @property
    def georeferenced(self) -> bool:
        return self.crs is not None and self.transform is not None


class Expression(Base):
    """A referring expression about one image."""

    __tablename__ = "expression"
    __table_args__ = (
        CheckConstraint(_one_of("source", EXPRESSION_SOURCES), name="source"),
        CheckConstraint(_one_of("split", SPLITS), name="split"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("image.id"), index=True)
    text: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16))
    author: Mapped[str] = mapped_column(String(255))
    # "val"/"test" expressions are held out of fine-tuning and used to measure it
    split: Mapped[str] = mapped_column(String(16))
    external_id: Mapped[str | None] = mapped_column(String(255), index=True)  # the dataset's sample id
    category: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    image: Mapped[Image] = relationship(back_populates="expressions")
    versions: Mapped[list[MaskVersion]] = relationship(
        back_populates="expression", order_by="MaskVersion.id", foreign_keys="MaskVersion.expression_id"
    )


class MaskVersion(Base):
    """One immutable binary mask for an expression, at its image's full size."""

    __tablename__ = "mask_version"
    __table_args__ = (
        CheckConstraint(_one_of("kind", MASK_KINDS), name="kind"),
        CheckConstraint(_one_of("status", MASK_STATUSES), name="status"),
        Index("ix_mask_version_expression_id_id", "expression_id", "id"),
        Index("ix_mask_version_status_id", "status", "id"),
        # a client's idempotency key: a retried save finds the version its first attempt made
        Index("ix_mask_version_request_id", "request_id", unique=True),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    expression_id: Mapped[int] = mapped_column(ForeignKey("expression.id"))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("mask_version.id"))
    kind: Mapped[str] = mapped_column(String(16))
    author: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_version.id"))
    height: Mapped[int]
    width: Mapped[int]
    area: Mapped[int]  # foreground pixels
    rle: Mapped[bytes] = mapped_column(LargeBinary)  # COCO compressed RLE counts (column-major)
    uncertainty: Mapped[float | None] = mapped_column(Float)  # mean per-pixel uncertainty of a prediction
    note: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(String(64))  # unique per store; None for most rows
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    expression: Mapped[Expression] = relationship(back_populates="versions", foreign_keys=[expression_id])
    parent: Mapped[MaskVersion | None] = relationship(remote_side=[id])
    model_version: Mapped[ModelVersion | None] = relationship()
    events: Mapped[list[StatusEvent]] = relationship(back_populates="mask_version", order_by="StatusEvent.id")


class StatusEvent(Base):
    """A review decision: who moved a mask version from one status to another, and when."""

    __tablename__ = "status_event"
    __table_args__ = (CheckConstraint(_one_of("to_status", MASK_STATUSES), name="to_status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    mask_version_id: Mapped[int] = mapped_column(ForeignKey("mask_version.id"), index=True)
    from_status: Mapped[str | None] = mapped_column(String(16))  # None: the version's creation
    to_status: Mapped[str] = mapped_column(String(16))
    author: Mapped[str] = mapped_column(String(255))
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    mask_version: Mapped[MaskVersion] = relationship(back_populates="events")


class ModelVersion(Base):
    """A checkpoint the app can predict with; fine-tuned ones point at their parent and run."""

    __tablename__ = "model_version"
    # at most one active model: ``active`` is True or NULL, unique (NULLs never collide)
    __table_args__ = (CheckConstraint("active", name="active_true_or_null"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    checkpoint: Mapped[str] = mapped_column(Text)  # a directory, file or hub id for sbanet.checkpoint
    preset: Mapped[str] = mapped_column(String(64))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("model_version.id"))
    metrics: Mapped[dict[str, Any] | None]
    active: Mapped[bool | None] = mapped_column(unique=True, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    parent: Mapped[ModelVersion | None] = relationship(remote_side=[id])
    made_by: Mapped[FineTuneRun | None] = relationship(
        primaryjoin="ModelVersion.id == FineTuneRun.result_model_id", viewonly=True, uselist=False
    )


finetune_run_mask = Table(
    "finetune_run_mask",
    Base.metadata,
    Column("run_id", Integer, ForeignKey("finetune_run.id"), primary_key=True),
    Column("mask_version_id", Integer, ForeignKey("mask_version.id"), primary_key=True),
    Column("role", String(8), nullable=False),
    CheckConstraint(_one_of("role", RUN_MASK_ROLES), name="role"),
)


class FineTuneRun(Base):
    """A fine-tuning job: what it trained on, how it went, and the model it produced."""

    __tablename__ = "finetune_run"
    __table_args__ = (CheckConstraint(_one_of("status", RUN_STATUSES), name="status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    base_model_id: Mapped[int] = mapped_column(ForeignKey("model_version.id"))
    result_model_id: Mapped[int | None] = mapped_column(ForeignKey("model_version.id"))
    status: Mapped[str] = mapped_column(String(16), index=True)
    author: Mapped[str] = mapped_column(String(255))
    config: Mapped[dict[str, Any]]  # the resolved configuration
    metrics_before: Mapped[dict[str, Any] | None]
    metrics_after: Mapped[dict[str, Any] | None]
    progress: Mapped[float] = mapped_column(Float, default=0.0)  # 0..1
    stage: Mapped[str] = mapped_column(String(64), default="queued")
    log: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str | None] = mapped_column(Text)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    worker: Mapped[str | None] = mapped_column(String(255))  # host:pid of the process running it
    attempts: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    base_model: Mapped[ModelVersion] = relationship(foreign_keys=[base_model_id])
    result_model: Mapped[ModelVersion | None] = relationship(foreign_keys=[result_model_id])
    masks: Mapped[list[MaskVersion]] = relationship(secondary=finetune_run_mask, order_by="MaskVersion.id")


IMMUTABLE_MASK_FIELDS = (
    "expression_id",
    "parent_id",
    "kind",
    "author",
    "model_version_id",
    "rle",
    "height",
    "width",
    "request_id",
)


def guard_append_only(session: Session, flush_context: Any, instances: Any) -> None:
    """``before_flush`` hook: refuse to rewrite or delete a stored mask version or review event."""
    for obj in session.dirty:
        if isinstance(obj, MaskVersion):
            state = inspect(obj)
            changed = [f for f in IMMUTABLE_MASK_FIELDS if state.attrs[f].history.has_changes()]
            if changed:
                raise ValueError(
                    f"mask version {obj.id} is append-only ({', '.join(changed)} cannot change): "
                    "add a new version with parent_id instead"
                )
        elif isinstance(obj, StatusEvent) and inspect(obj).modified:
            raise ValueError(f"status event {obj.id} is append-only")
    for obj in session.deleted:
        if isinstance(obj, MaskVersion | StatusEvent):
            raise ValueError(f"{type(obj).__name__} {obj.id} is append-only and cannot be deleted")


def install_guards(target: Any) -> None:
    """Attach :func:`guard_append_only` to a sessionmaker (or Session class/instance)."""
    event.listen(target, "before_flush", guard_append_only)
