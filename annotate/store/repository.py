"""Repository functions over images, expressions and mask versions.

Every function takes a session and leaves the transaction to the caller::

    with store.Session.begin() as session:
        image = add_image(session, store.files, "scene.tif")
        expression = add_expression(session, image.id, "the ship on the right", author="ana")
        add_mask_version(session, expression.id, mask, kind="correction", author="ana", status="submitted")

Bad input (a mask of the wrong size or with non-binary values, an unknown id, an empty
expression, an unknown status, control characters or an over-long note) raises ``ValueError``
with the reason.

A save may carry a client's ``request_id`` (unique per store): adding a mask version with a
request id that is already stored returns the stored version instead of a second one, so a
client that retries after a lost acknowledgement never creates a duplicate.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Select, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from sbanet.text_rules import check_expression, check_text

from .files import IMAGE_SUFFIXES, FileStore, file_sha256, probe_image
from .masks import check_mask, decode_mask, encode_mask
from .models import (
    EXPRESSION_SOURCES,
    MASK_KINDS,
    MASK_STATUSES,
    SPLITS,
    Expression,
    Image,
    MaskVersion,
    ModelVersion,
    StatusEvent,
)
from .text import check_note, check_request_id

REVIEW_ORDERS = ("recent", "uncertain")
MAX_ID = 2**31 - 1  # ids are 32-bit integers in every store (PostgreSQL refuses larger keys)
DEFAULT_HOLDOUT_FRACTION = 0.2


def get_row(session: Session, model: type, key: int, what: str) -> Any:
    if not isinstance(key, int | np.integer) or isinstance(key, bool):
        raise ValueError(f"{what} id must be an integer, got {key!r}")
    if not 1 <= key <= MAX_ID:
        raise ValueError(f"unknown {what} id {key}")
    row = session.get(model, int(key))
    if row is None:
        raise ValueError(f"unknown {what} id {key}")
    return row


def check_choice(value: str, choices: tuple[str, ...], what: str) -> str:
    if value not in choices:
        raise ValueError(f"{what} must be one of {choices}, got {value!r}")
    return value


def check_author(author: str) -> str:
    if not isinstance(author, str) or not author.strip():
        raise ValueError("an author is required (who made this change)")
    return check_text(author, "the author", 255)


# --- images -----------------------------------------------------------------------------------
def add_image(session: Session, files: FileStore, source: str | Path | bytes, filename: str | None = None) -> Image:
    """Store an image file (once per content) and return its row; re-adding returns the same row.

    ``source`` is a path or the file's bytes (then ``filename`` gives its name and format).
    """
    if isinstance(source, bytes | bytearray | memoryview):
        if not filename:
            raise ValueError("add_image from bytes needs the original filename (for its format)")
        data: bytes | Path = bytes(source)
        empty = not data
    else:
        data = Path(source)
        if not data.is_file():
            raise ValueError(f"image file not found: {data}")
        filename = filename or data.name
        empty = data.stat().st_size == 0
    suffix = Path(filename).suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        supported = ", ".join(sorted(IMAGE_SUFFIXES))
        raise ValueError(f"{filename}: unsupported image type {suffix or '(none)'}; use one of {supported}")
    if empty:
        raise ValueError(f"{filename} is empty")
    sha = file_sha256(data)
    existing = session.scalar(select(Image).where(Image.sha256 == sha))
    if existing is not None:
        return existing
    # the file exists (atomically, complete) before any row refers to it
    sha, relative, created = files.put(data, suffix, sha)
    try:
        info = probe_image(files.path(relative))
    except ValueError:
        if created:
            files.remove(relative)
        raise
    image = Image(sha256=sha, path=relative, filename=Path(filename).name, **asdict(info))
    session.add(image)
    session.flush()
    return image


def get_image(session: Session, image_id: int) -> Image:
    return get_row(session, Image, image_id, "image")


def load_image_array(files: FileStore, image: Image) -> np.ndarray:
    """The stored file as ``[H, W]`` or ``[H, W, C]`` (see :func:`sbanet.image.read_image`)."""
    from sbanet.image import read_image

    return read_image(files.path(image.path))


# --- expressions ------------------------------------------------------------------------------
def default_split(image_sha256: str, text: str, holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION) -> str:
    """A stable train/val assignment from the image content and the words (no RNG state)."""
    digest = hashlib.sha256(f"{image_sha256}\n{text}".encode()).digest()
    return "val" if int.from_bytes(digest[:8], "big") / 2**64 < holdout_fraction else "train"


def add_expression(
    session: Session,
    image_id: int,
    text: str,
    *,
    author: str,
    source: str = "typed",
    split: str | None = None,
    external_id: str | None = None,
    category: str | None = None,
) -> Expression:
    """A referring expression about an image. Without ``split`` a stable hash of the image and
    the text puts it in "train" or, for about 20 %, the held-out "val" used to measure fine-tuning."""
    image = get_image(session, image_id)
    text = check_expression(text)
    check_choice(source, EXPRESSION_SOURCES, "source")
    split = check_choice(split, SPLITS, "split") if split is not None else default_split(image.sha256, text)
    expression = Expression(
        image_id=image.id,
        text=text,
        source=source,
        author=check_author(author),
        split=split,
        external_id=external_id,
        category=category,
    )
    session.add(expression)
    session.flush()
    return expression


def get_expression(session: Session, expression_id: int) -> Expression:
    return get_row(session, Expression, expression_id, "expression")


def find_expression(session: Session, image_id: int, text: str, external_id: str | None = None) -> Expression | None:
    """The expression with exactly this image, text and external id, if any (idempotent imports)."""
    query = select(Expression).where(Expression.image_id == image_id, Expression.text == check_expression(text))
    query = query.where(
        Expression.external_id.is_(None) if external_id is None else Expression.external_id == external_id
    )
    return session.scalars(query.order_by(Expression.id).limit(1)).first()


# --- mask versions ----------------------------------------------------------------------------
def add_mask_version(
    session: Session,
    expression_id: int,
    mask: np.ndarray,
    *,
    kind: str,
    author: str,
    parent_id: int | None = None,
    model_version_id: int | None = None,
    status: str = "draft",
    uncertainty: float | None = None,
    note: str | None = None,
    request_id: str | None = None,
) -> MaskVersion:
    """Append a new version of an expression's mask (``bool [H, W]`` at its image's size).

    Nothing earlier is modified: a correction of version 7 is a new row with ``parent_id=7``.
    With a ``request_id`` already stored, the version that request made is returned instead
    (``ValueError`` if that request saved another expression, parent or mask).
    """
    expression = get_expression(session, expression_id)
    image = expression.image
    mask = check_mask(mask, image.height, image.width)
    check_choice(kind, MASK_KINDS, "kind")
    check_choice(status, MASK_STATUSES, "status")
    author = check_author(author)
    if parent_id is not None:
        parent = get_row(session, MaskVersion, parent_id, "parent mask version")
        if parent.expression_id != expression.id:
            raise ValueError(
                f"parent mask version {parent_id} belongs to expression {parent.expression_id}, not {expression.id}"
            )
    if model_version_id is not None:
        get_row(session, ModelVersion, model_version_id, "model version")
    elif kind == "prediction":
        raise ValueError("a model prediction needs the model_version_id that predicted it")
    if uncertainty is not None and not (np.isfinite(uncertainty) and 0.0 <= uncertainty <= 1.0):
        raise ValueError(f"uncertainty must be in [0, 1], got {uncertainty}")
    note, request_id = check_note(note), check_request_id(request_id)
    rle = encode_mask(mask)
    if request_id is not None:
        earlier = find_request(session, request_id)
        if earlier is not None:
            return same_request(earlier, expression.id, parent_id, rle)
    version = MaskVersion(
        expression_id=expression.id,
        parent_id=parent_id,
        kind=kind,
        author=author,
        status=status,
        model_version_id=model_version_id,
        height=image.height,
        width=image.width,
        area=int(mask.sum()),
        rle=rle,
        uncertainty=None if uncertainty is None else float(uncertainty),
        note=note,
        request_id=request_id,
    )
    try:
        # a savepoint: a concurrent retry that stored the same request id first (PostgreSQL
        # waits on the unique index, then refuses this row) leaves the transaction usable
        with session.begin_nested():
            session.add(version)
            session.flush()
            session.add(StatusEvent(mask_version_id=version.id, from_status=None, to_status=status, author=author))
            session.flush()
    except IntegrityError:
        earlier = find_request(session, request_id) if request_id is not None else None
        if earlier is None:
            raise
        return same_request(earlier, expression.id, parent_id, rle)
    return version


def find_request(session: Session, request_id: str) -> MaskVersion | None:
    """The mask version a client's save with ``request_id`` created, if it was stored."""
    return session.scalars(select(MaskVersion).where(MaskVersion.request_id == request_id)).first()


def same_request(earlier: MaskVersion, expression_id: int, parent_id: int | None, rle: bytes) -> MaskVersion:
    """``earlier`` when a retried save asks for exactly what it stored, else ``ValueError``."""
    if (earlier.expression_id, earlier.parent_id, earlier.rle) != (expression_id, parent_id, rle):
        raise ValueError(
            f"request id {earlier.request_id!r} already saved mask version {earlier.id} "
            f"(a correction of {earlier.parent_id}) with other content; use a new request id for each save"
        )
    return earlier


def get_mask_version(session: Session, mask_version_id: int) -> MaskVersion:
    return get_row(session, MaskVersion, mask_version_id, "mask version")


def mask_array(version: MaskVersion) -> np.ndarray:
    """The version's mask as ``bool [H, W]``."""
    return decode_mask(version.rle, version.height, version.width)


def set_status(
    session: Session, mask_version_id: int, status: str, *, author: str, note: str | None = None
) -> MaskVersion:
    """Review a mask version (e.g. accept it): the status changes and an event records who did it."""
    check_choice(status, MASK_STATUSES, "status")
    author, note = check_author(author), check_note(note)
    version = session.scalars(
        select(MaskVersion)
        .where(MaskVersion.id == int(mask_version_id))
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()
    if version is None:
        raise ValueError(f"unknown mask version id {mask_version_id}")
    event = StatusEvent(
        mask_version_id=version.id, from_status=version.status, to_status=status, author=author, note=note
    )
    version.status = status
    session.add(event)
    session.flush()
    return version


def latest_mask(
    session: Session, expression_id: int, *, status: str | None = None, kind: str | None = None
) -> MaskVersion | None:
    """The newest version of an expression's mask (optionally the newest with a status/kind)."""
    get_expression(session, expression_id)
    query = select(MaskVersion).where(MaskVersion.expression_id == expression_id)
    if status is not None:
        query = query.where(MaskVersion.status == check_choice(status, MASK_STATUSES, "status"))
    if kind is not None:
        query = query.where(MaskVersion.kind == check_choice(kind, MASK_KINDS, "kind"))
    return session.scalars(query.order_by(MaskVersion.id.desc()).limit(1)).first()


def history(session: Session, expression_id: int) -> list[MaskVersion]:
    """Every version of an expression's mask, oldest first (with ``.events``, the reviews)."""
    get_expression(session, expression_id)
    query = select(MaskVersion).where(MaskVersion.expression_id == expression_id).order_by(MaskVersion.id)
    return list(session.scalars(query))


def newest_ids(status: str | None = None) -> Select[tuple[int]]:
    """A subquery: per expression, the id of its newest version (with ``status``, when given)."""
    newest = select(func.max(MaskVersion.id)).group_by(MaskVersion.expression_id)
    if status is not None:
        newest = newest.where(MaskVersion.status == check_choice(status, MASK_STATUSES, "status"))
    return newest


def newest_versions(session: Session, status: str | None = None, split: str | None = None) -> list[MaskVersion]:
    """Per expression, the newest version (``status`` given: the newest version with that status)."""
    query = select(MaskVersion).where(MaskVersion.id.in_(newest_ids(status)))
    if split is not None:
        query = query.join(Expression).where(Expression.split == check_choice(split, SPLITS, "split"))
    return list(session.scalars(query.order_by(MaskVersion.expression_id)))


def review_queue(
    session: Session, status: str = "submitted", order: str = "recent", limit: int | None = 100
) -> list[MaskVersion]:
    """Expressions whose newest mask version has ``status``, for reviewers.

    ``order="recent"``: newest first; ``"uncertain"``: highest mean prediction uncertainty first
    (active learning: the model's least certain masks are the most useful to correct), versions
    without an uncertainty last.
    """
    check_choice(status, MASK_STATUSES, "status")
    check_choice(order, REVIEW_ORDERS, "order")
    query = select(MaskVersion).where(MaskVersion.id.in_(newest_ids()), MaskVersion.status == status)
    if order == "uncertain":
        query = query.order_by(MaskVersion.uncertainty.desc().nulls_last(), MaskVersion.id.desc())
    else:
        query = query.order_by(MaskVersion.id.desc())
    return list(session.scalars(query.limit(limit)))


def status_counts(session: Session) -> dict[str, int]:
    """How many expressions' newest mask version has each status (every status, zeros included)."""
    query = (
        select(MaskVersion.status, func.count()).where(MaskVersion.id.in_(newest_ids())).group_by(MaskVersion.status)
    )
    counts = dict.fromkeys(MASK_STATUSES, 0)
    counts.update({status: int(count) for status, count in session.execute(query)})
    return counts
