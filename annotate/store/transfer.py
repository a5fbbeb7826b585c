"""Import a referring-segmentation dataset into the store, and pick what an export contains.

Import reads any dataset :func:`sbanet.data.load_samples` knows ("rrsisd", "refsegrs", "folder",
and what else the registry holds). Every sample becomes an imported expression on its image
(stored once by content) with its mask as an *accepted* human correction by author ``"import"``,
ready for review and relabeling. Importing is idempotent: a sample whose image, text and dataset
id are already in the store is skipped, so an interrupted import is simply run again.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from sbanet.data import ReferringSample, load_samples
from sbanet.image import read_image

from . import repository as repo
from .database import Store
from .models import Expression, Image, MaskVersion

IMPORT_AUTHOR = "import"
SELECTIONS = ("accepted", "latest")
COMMIT_EVERY = 200  # samples per transaction: an interruption keeps what was committed


@dataclass
class ImportReport:
    added: int = 0
    skipped: int = 0  # already in the store
    images: int = 0  # distinct images touched
    per_split: dict[str, int] = field(default_factory=dict)
    invalid: list[str] = field(default_factory=list)  # "sample id: reason" of samples left out


def sample_image_file(sample: ReferringSample) -> tuple[bytes, str]:
    """The image file of a sample as (bytes, filename): the original file when the reader loads
    one from disk (kept byte for byte: format, bit depth, georeferencing), else the decoded
    array written as a lossless PNG (8/16-bit, 1-4 bands) or TIFF (anything else)."""
    loader = sample.load_image
    if isinstance(loader, partial) and loader.func is read_image and loader.args:
        path = Path(loader.args[0])
        return path.read_bytes(), path.name
    array = np.asarray(loader())
    stem = re.sub(r"[^\w.-]+", "_", sample.image_id).strip("_") or "image"
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    bands = 1 if array.ndim == 2 else array.shape[2]
    buffer = io.BytesIO()
    if (array.dtype == np.uint8 and bands in (1, 3, 4)) or (array.dtype == np.uint16 and bands == 1):
        from PIL import Image

        Image.fromarray(array).save(buffer, format="PNG")
        return buffer.getvalue(), f"{stem}.png"
    import tifffile

    tifffile.imwrite(buffer, array)
    return buffer.getvalue(), f"{stem}.tif"


def import_samples(
    store: Store,
    samples: Iterable[ReferringSample],
    *,
    author: str = IMPORT_AUTHOR,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Add samples to the store (see the module docstring); ``progress(n)`` after each sample.

    A sample that cannot be stored (unreadable image, empty expression, mask of the wrong size or
    not binary) is left out and listed in ``report.invalid`` with the reason."""
    report = ImportReport()
    image_ids: dict[str, int] = {}  # the reader's image_id -> the store's image id
    samples = list(samples)
    for start in range(0, len(samples), COMMIT_EVERY):
        with store.Session.begin() as session:
            for sample in samples[start : start + COMMIT_EVERY]:
                try:
                    with session.begin_nested():  # a bad sample is left out, not the whole import
                        _import_one(session, store, sample, author, image_ids, report)
                except ValueError as exc:
                    image_ids.pop(sample.image_id, None)  # its image row may have been rolled back
                    report.invalid.append(f"{sample.sample_id}: {exc}")
                if progress is not None:
                    progress(report.added + report.skipped + len(report.invalid))
    report.images = len(set(image_ids.values()))
    return report


def _import_one(
    session: Session,
    store: Store,
    sample: ReferringSample,
    author: str,
    image_ids: dict[str, int],
    report: ImportReport,
) -> None:
    if sample.image_id not in image_ids:
        data, filename = sample_image_file(sample)
        image_ids[sample.image_id] = repo.add_image(session, store.files, data, filename).id
    image_id = image_ids[sample.image_id]
    if repo.find_expression(session, image_id, sample.expression, sample.sample_id) is not None:
        report.skipped += 1
        return
    expression = repo.add_expression(
        session,
        image_id,
        sample.expression,
        author=author,
        source="imported",
        split=sample.split,
        external_id=sample.sample_id,
        category=sample.category,
    )
    mask = sample.load_mask()
    repo.add_mask_version(session, expression.id, mask, kind="correction", author=author, status="accepted")
    report.added += 1
    report.per_split[sample.split] = report.per_split.get(sample.split, 0) + 1


def import_dataset(
    store: Store,
    kind: str,
    root: str | Path,
    splits: Sequence[str] = ("train", "val", "test"),
    *,
    author: str = IMPORT_AUTHOR,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Import the given splits of a dataset (``kind`` as in :func:`sbanet.data.load_samples`)."""
    samples = [sample for split in splits for sample in load_samples(kind, root, split)]
    if not samples:
        raise ValueError(f"no samples found in {kind} dataset at {root} for splits {list(splits)}")
    return import_samples(store, samples, author=author, progress=progress)


# --- what an export contains ------------------------------------------------------------------
@dataclass(frozen=True)
class ExportItem:
    """One expression with the mask version chosen for export (image and expression loaded)."""

    expression: Expression
    version: MaskVersion

    @property
    def image(self) -> Image:
        return self.expression.image


def export_items(
    session: Session, selection: str = "accepted", splits: Sequence[str] | None = None
) -> list[ExportItem]:
    """Per expression, its newest accepted mask version (``"accepted"``) or its newest version
    whatever its status (``"latest"``), ordered by expression id."""
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
    newest = repo.newest_ids("accepted" if selection == "accepted" else None)
    query = (
        select(MaskVersion)
        .where(MaskVersion.id.in_(newest))
        .options(joinedload(MaskVersion.expression).joinedload(Expression.image))
        .order_by(MaskVersion.expression_id)
    )
    items = [ExportItem(v.expression, v) for v in session.scalars(query)]
    if splits is not None:
        items = [item for item in items if item.expression.split in set(splits)]
    return items
