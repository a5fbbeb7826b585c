"""Handlers of the Correct and Review tabs: open a mask in the editor, save a correction as a
new version, accept or reject versions, and list what awaits review.

The :class:`Editing` state remembers which mask version (and so which image, at which size) the
editor was opened on; saving checks the editor still shows that image before anything is
written, and a correction is one transaction in the store.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd

from annotate.app.guards import annotator, user_errors

from ..store.repository import MAX_ID
from ..store.text import check_request_id, code_text, markdown_text
from .inputs import DecodedUploads, canvas_edit, mask_from_file, resize_mask
from .mask_canvas import canvas_value, read_canvas
from .render import fit_within

STATUSES = ("draft", "submitted", "accepted", "rejected")
# larger images are edited on a downscaled canvas (brush strokes are brought back to full size
# with nearest neighbour; the stored mask itself keeps every full-resolution pixel)
EDITOR_SIDE = 2048
ORDERS = {"most uncertain first": "uncertain", "newest first": "recent"}
HISTORY_COLUMNS = ("mask_version", "kind", "status", "author", "area_px", "uncertainty", "parent", "created")
QUEUE_COLUMNS = ("mask_version", "image", "expression", "kind", "status", "author", "uncertainty", "created")
REVIEWED = ("accepted", "rejected")
NOTHING_OPEN = (
    "Nothing is open yet. Segment an image (Segment tab) and come back, or click a row of the "
    "*Review queue*; then *Open in editor*."
)
UNCERTAINTY_HELP = (
    "*uncertainty*: how unsure the model was, averaged over the image's pixels, from 0 (sure of every "
    "pixel) to 1 (every pixel a coin toss). The most uncertain masks are the most useful to correct."
)


@dataclass(frozen=True)
class Editing:
    """What the editor was opened on (kept in ``gr.State``)."""

    mask_version_id: int
    expression_id: int
    expression: str
    image_name: str
    height: int
    width: int
    bands: tuple[int, ...] | None


def canvas_key(item: Any, bands: tuple[int, ...] | None, size: tuple[int, int]) -> str:
    """The name of the picture a mask canvas shows: the image file, the bands and the canvas's
    ``(h, w)``. Saving and the tools refuse a canvas mask drawn on another picture."""
    text = f"{item.image_path}|{bands}|{size[0]}x{size[1]}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> pd.DataFrame:
    """Rows as a table of ``columns`` (uncertainty to 2 decimals; no NaN, ids stay integers)."""
    cells = [[_cell(c, row[c]) for c in columns] for row in rows]
    return pd.DataFrame(cells, columns=list(columns), dtype=object).fillna("")


def _cell(column: str, value: Any) -> Any:
    return round(float(value), 2) if column == "uncertainty" and value not in (None, "") else value


def review_progress(counts: dict[str, int]) -> str:
    """``{status: count}`` -> "**12 of 40** reviewed (accepted or rejected) · 28 draft · ..."."""
    total = sum(counts.values())
    if total == 0:
        return "Nothing to review yet: every segmentation is queued here as a draft."
    done = sum(counts.get(s, 0) for s in REVIEWED)
    parts = " · ".join(f"{counts.get(s, 0)} {s}" for s in STATUSES)
    return f"**{done} of {total}** expressions reviewed (accepted or rejected) · {parts}"


def value_missing(value: Any) -> bool:
    """An empty number box or dropdown: None, "" or the 0 the page sends for an empty box."""
    return value is None or value == "" or value == 0


def proposed_version(session: Any) -> int | None:
    """The mask version the Correct tab proposes after a segmentation: its first saved one."""
    return next((v for v in getattr(session, "mask_version_ids", None) or [] if v), None)


def version_id(value: Any, what: str = "mask version") -> int:
    """An id from a number box or dropdown (``ValueError`` if missing or not a whole number)."""
    if value_missing(value):
        hint = ": segment an image (Segment tab) or pick a row of the Review queue" if what == "mask version" else ""
        raise ValueError(f"choose a {what} first{hint}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not a {what} id") from None
    if not number.is_integer() or not 1 <= number <= MAX_ID:
        raise ValueError(f"{value!r} is not a {what} id (a whole number from 1)")
    return int(number)


class ReviewHandlers:
    """Correct (editor, save, accept/reject) and Review queue."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.images = DecodedUploads()  # opening, every mask tool and saving decode the image once

    def canvas(self, item: Any, bands: tuple[int, ...] | None) -> np.ndarray:
        """The picture the editor shows ``uint8 [h, w, 3]`` (read-only): the image, at most
        :data:`EDITOR_SIDE` wide or high."""
        return fit_within(self.images.load(item.image_path, bands, name=item.image_name).rgb, EDITOR_SIDE)

    def _base(self, item: Any, tools: Any = None) -> np.ndarray:
        """The mask the canvas started from ``bool [H, W]`` (full size): the mask tools' working
        mask (:class:`annotate.app.tools.Tools`) when they edited this version, else the stored one."""
        if tools is not None and tools.mask_version_id == item.mask_version_id:
            return tools.mask
        return item.mask

    def _describe(self, item: Any) -> str:
        return (
            f"**{markdown_text(item.expression)}** on {code_text(item.image_name)} "
            f"({item.mask.shape[1]}×{item.mask.shape[0]}) · "
            f"mask version **{item.mask_version_id}** ({item.kind}, {item.status})"
        )

    @user_errors
    def open_item(
        self, mask_version: Any, bands: tuple[int, ...] | None = None
    ) -> tuple[dict[str, Any], Editing, str, pd.DataFrame]:
        """Load a mask version into the mask canvas: the image (at most :data:`EDITOR_SIDE` a
        side) and the mask as a layer over it."""
        item = self.backend.item(version_id(mask_version))
        picture = self.canvas(item, bands)
        size = picture.shape[:2]
        value = canvas_value(resize_mask(item.mask, size), picture, canvas_key(item, bands, size), "opened")
        height, width = item.mask.shape
        editing = Editing(
            item.mask_version_id, item.expression_id, item.expression, item.image_name, height, width, bands
        )
        history = table(self.backend.history(item.expression_id), HISTORY_COLUMNS)
        return value, editing, self._describe(item), history

    def open_from_session(self, session: Any, mask_version: Any) -> tuple[dict[str, Any], Editing, str, pd.DataFrame]:
        """Open a mask version with the band choice of the user's last segmentation. An empty
        box (None, or the 0 the page sends for one) opens what the tab proposes, the last
        segmentation's first saved mask (:func:`proposed_version`): when the Correct tab is first
        shown, its box displays the proposal about 0.1 s before the page's state holds it, and a
        click in between sends 0 (seen in the request payloads under load; it looked like a
        dropped click)."""
        if value_missing(mask_version):
            mask_version = proposed_version(session)
        return self.open_item(mask_version, getattr(session, "bands", None))

    @user_errors
    def save_from_editor(
        self,
        editing: Editing | None,
        value: dict[str, Any] | None,
        note: str,
        annotator_name: str,
        tools: Any = None,
        request: gr.Request = None,
    ) -> tuple[str, Editing, pd.DataFrame]:
        """Save the mask the canvas shows (``value``) at the image's full size as a new version of
        what was opened: the working mask of the mask tools (``tools``) or the stored one, with the
        pixels the canvas changed (:func:`~annotate.app.inputs.canvas_edit`)."""
        if editing is None:
            raise ValueError("open a mask version in the editor first")
        author = annotator(request, annotator_name, required=True)
        item = self.backend.item(editing.mask_version_id)
        if item.mask.shape != (editing.height, editing.width):
            raise ValueError("the stored image changed size since the editor opened it; reopen the item")
        value = read_canvas(value)
        if value is None:
            raise ValueError("nothing to save: open an item in the editor first")
        size = self.canvas(item, editing.bands).shape[:2]
        if value.key != canvas_key(item, editing.bands, size) or value.mask.shape != size:
            raise ValueError("the mask in the editor was drawn over a different image than the one opened; reopen it")
        mask = canvas_edit(self._base(item, tools), value.mask)
        new_id = self.backend.save_correction(editing.mask_version_id, mask, author, note)
        saved = Editing(
            new_id,
            *[getattr(editing, f) for f in ("expression_id", "expression", "image_name", "height", "width", "bands")],
        )
        message = (
            f"Saved **mask version {new_id}** (correction of {editing.mask_version_id}, submitted) "
            f"by {markdown_text(author)}: "
            f"{int(mask.sum()):,} of {mask.size:,} pixels at {mask.shape[1]}×{mask.shape[0]}."
        )
        gr.Success(f"Saved mask version {new_id} (correction of {editing.mask_version_id})", title="Saved")
        return message, saved, table(self.backend.history(editing.expression_id), HISTORY_COLUMNS)

    @user_errors
    def header(self, editing: Editing | None) -> str:
        """The line above the editor: what is open now (after a save: the new version)."""
        if editing is None:
            return NOTHING_OPEN
        return self._describe(self.backend.item(editing.mask_version_id))

    @user_errors
    def save_correction(
        self,
        mask_version: Any,
        mask_file: Any,
        note: str,
        annotator_name: str,
        request_id: str | None = None,
        request: gr.Request = None,
    ) -> dict[str, Any]:
        """API: a mask file (PNG 0/255, the image's full size) as a correction of ``mask_version``.

        With a ``request_id`` (e.g. a UUID the client made for this save), sending the same save
        again returns the version the first one stored instead of a duplicate."""
        author = annotator(request, annotator_name, required=True)
        key = check_request_id(request_id)
        parent = self.backend.item(version_id(mask_version))
        if mask_file is None:
            raise ValueError("send the corrected mask as a PNG file (0/255, the image's size)")
        mask = mask_from_file(str(getattr(mask_file, "path", mask_file)), parent.mask.shape)
        options = {"request_id": key} if key else {}
        new_id = self.backend.save_correction(parent.mask_version_id, mask, author, note, **options)
        return {
            "request_id": key,
            "mask_version": new_id,
            "parent": parent.mask_version_id,
            "status": "submitted",
            "author": author,
            "area_px": int(mask.sum()),
            "height": mask.shape[0],
            "width": mask.shape[1],
        }

    @user_errors
    def set_status(
        self, mask_version: Any, status: str, note: str, annotator_name: str, request: gr.Request = None
    ) -> tuple[dict[str, Any], pd.DataFrame]:
        """Accept, reject (or reopen) a mask version; the review is recorded with its author."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        author = annotator(request, annotator_name, required=True)
        item = self.backend.item(version_id(mask_version))
        new_status = self.backend.set_status(item.mask_version_id, status, author, note)
        result = {"mask_version": item.mask_version_id, "status": new_status, "author": author}
        return result, table(self.backend.history(item.expression_id), HISTORY_COLUMNS)

    @user_errors
    def review_queue(self, status: str, order: str, limit: float = 100) -> pd.DataFrame:
        """Expressions whose newest mask has ``status``, most uncertain or newest first."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        if order not in ORDERS:
            raise ValueError(f"order must be one of {list(ORDERS)}, got {order!r}")
        rows = self.backend.review_queue(status, ORDERS[order], max(1, min(int(limit or 100), 1000)))
        return table(rows, QUEUE_COLUMNS)

    def progress(self) -> str:
        """How far the review is: reviewed of all, and how many expressions have each status."""
        return review_progress(self.backend.status_counts())

    @user_errors
    def next_in_queue(self, status: str, order: str, current: Any = None) -> int:
        """The first mask version of the queue (``status``, ``order``) other than ``current``."""
        if status not in STATUSES or order not in ORDERS:
            raise ValueError(f"status must be one of {STATUSES} and order one of {list(ORDERS)}")
        for row in self.backend.review_queue(status, ORDERS[order], 2):
            if row["mask_version"] != current:
                return int(row["mask_version"])
        raise ValueError(f"no other mask waits with status '{status}': the queue is done")

    @user_errors
    def open_next(
        self, status: str, order: str, current: Any = None
    ) -> tuple[dict[str, Any], Editing, str, pd.DataFrame, int]:
        """Open the next mask version of the queue: :meth:`open_item`'s outputs and its id."""
        next_id = self.next_in_queue(status, order, current)
        return (*self.open_item(next_id), next_id)

    @user_errors
    def save_and_next(
        self,
        editing: Editing | None,
        value: dict[str, Any] | None,
        note: str,
        annotator_name: str,
        status: str,
        order: str,
        tools: Any = None,
        request: gr.Request = None,
    ) -> tuple[str, Editing, pd.DataFrame, Any, str, Any]:
        """Save the editor's mask, then open the next one of the queue in one step (a refused
        save opens nothing, so unsaved strokes stay): save message, editing, versions, editor,
        header, mask version. When the queue is done, the saved version stays open."""
        message, saved, history = self.save_from_editor(editing, value, note, annotator_name, tools, request)
        try:
            value, opened, info, history, next_id = self.open_next(status, order, saved.mask_version_id)
        except gr.Error as exc:
            return f"{message}  \n{exc.message}", saved, history, gr.skip(), self.header(saved), saved.mask_version_id
        return message, opened, history, value, info, next_id

    def pick_from_queue(self, queue: pd.DataFrame, event: gr.SelectData) -> Any:
        """The mask version of the row a reviewer clicked."""
        row = event.index[0] if isinstance(event.index, list | tuple) else event.index
        return int(queue.iloc[int(row)]["mask_version"])
