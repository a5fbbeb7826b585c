"""Handlers of the Correct tab's mask tools that need Python: region clicks snapped to the
image's edges (sent by the mask canvas's ``region`` event), fill holes and remove specks
(:mod:`annotate.edit` does the work).

The canvas (:func:`~annotate.app.mask_canvas.mask_canvas`) edits the mask in the browser: brush,
eraser, polygon, opacity, zoom, undo. Every tool here starts from the mask the canvas sends
(strokes and polygons included), brings its changes to the image's full size on the working
mask (:class:`Tools`, kept in ``gr.State``), applies its edit and sends the new mask back; the
canvas keeps the mask it had on its undo stack. Saving
(:meth:`~annotate.app.review.ReviewHandlers.save_from_editor`) starts from the same working mask,
so what is saved is exactly what the canvas shows.

Region clicks work on the canvas's picture (at most ``EDITOR_SIDE`` pixels a side); their edits
are brought to the image's full size with nearest neighbour, as strokes are. Fill holes and
remove specks work at full size (their areas are pixels of the image). A region comes from the
picture's superpixels at the size chosen (computed on the first click at that size and kept with
the working mask) or from the model's probability map for the mask's expression (the model is
run on the first such click and the map kept likewise).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import cv2
import gradio as gr
import numpy as np

from annotate.app.guards import REFUSED_TITLE, refusal, user_errors

from ..edit import regions, shapes
from .inputs import canvas_edit, resize_mask
from .mask_canvas import canvas_value, read_canvas
from .review import Editing, ReviewHandlers, canvas_key

# what a region click takes: the label the page shows -> (method, superpixel size)
REGION_SOURCES = {
    "Small (roofs)": ("superpixel", "small"),
    "Medium (fields)": ("superpixel", "medium"),
    "Large (lakes, sand)": ("superpixel", "large"),
    "Model's map": ("model", regions.DEFAULT_SCALE),
}
# a region click with a modifier key names its source (the canvas sends the short name); a plain
# click takes the Region choice's
CLICK_SOURCES = {("model" if method == "model" else scale): label for label, (method, scale) in REGION_SOURCES.items()}
SPECK_AREA = 50  # default "remove specks below" (pixels)
HOLE_AREA = 1000  # default "fill holes up to" (pixels)
VIEW_OUTPUTS = 3  # canvas, tools state, tool message


@dataclass(frozen=True)
class Tools:
    """The working mask of the open mask version: what the canvas shows, at full size."""

    mask_version_id: int
    expression_id: int
    mask: np.ndarray  # bool [H, W] at the image's full size
    pixels: tuple[tuple[str, regions.Superpixels], ...] = ()  # superpixels of the canvas, per size
    probability: np.ndarray | None = None  # float [h, w] the model's map on the canvas

    def carried(self, other: Tools) -> Tools:
        """This working mask with ``other``'s kept maps (the same image)."""
        return replace(self, pixels=other.pixels, probability=other.probability)


def check_area(value: Any, what: str) -> int:
    """A whole number of pixels >= 1 from a number box (``ValueError`` otherwise)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number of pixels, got {value!r}") from None
    if not np.isfinite(number) or number < 1 or not number.is_integer():
        raise ValueError(f"{what} must be a whole number of pixels from 1, got {value!r}")
    return int(number)


class ToolHandlers:
    """Mask tools of the Correct tab; each returns (canvas value, tools, message)."""

    def __init__(self, review: ReviewHandlers) -> None:
        self.review = review

    def _state(self, editing: Editing | None, tools: Tools | None) -> tuple[np.ndarray, Tools, str]:
        """The canvas picture ``uint8 [h, w, 3]``, the working mask of what is open and its key."""
        if editing is None:
            raise ValueError("open a mask version in the editor first")
        item = self.review.backend.item(editing.mask_version_id)
        if item.mask.shape != (editing.height, editing.width):
            raise ValueError("the stored image changed size since the editor opened it; reopen the item")
        if tools is None or tools.mask_version_id != editing.mask_version_id:
            tools = Tools(editing.mask_version_id, editing.expression_id, item.mask.astype(bool))
        canvas = self.review.canvas(item, editing.bands)
        return canvas, tools, canvas_key(item, editing.bands, canvas.shape[:2])

    def _baked(self, editing: Editing | None, tools: Tools | None, payload: Any) -> tuple[np.ndarray, Tools, str]:
        """As :meth:`_state`, with the mask the canvas shows (its value ``payload``) brought into
        the working mask."""
        canvas, tools, key = self._state(editing, tools)
        value = read_canvas(payload)
        if value is None:
            raise ValueError("the editor shows nothing yet: open the item again")
        if value.key != key or value.mask.shape != canvas.shape[:2]:
            raise ValueError("the editor shows a different image than the one opened; reopen the item")
        return canvas, replace(tools, mask=canvas_edit(tools.mask, value.mask)), key

    def _edit(self, canvas: np.ndarray, tools: Tools, key: str, mask: np.ndarray, message: str) -> tuple:
        if np.array_equal(mask, tools.mask):
            message = f"{message}: nothing changed"
        else:
            changed = int(np.count_nonzero(mask != tools.mask))
            message = f"{message}: {changed:,} pixels changed (Undo or Ctrl+Z takes it back)"
        edited = replace(tools, mask=mask)
        return canvas_value(resize_mask(mask, canvas.shape[:2]), key=key, message=message), edited, message

    def region(
        self,
        editing: Editing | None,
        tools: Tools | None,
        value: dict | None,
        source: str | None,
        event: gr.EventData,
    ) -> tuple[dict | Any, Tools | Any, str]:
        """A region click on the canvas (the event's data: ``x``, ``y`` in canvas pixels,
        ``mode`` "add" or "remove" and, for a click with a modifier key, ``source``, a key of
        :data:`CLICK_SOURCES`): the region there (from that source, else from ``source``, a key of
        :data:`REGION_SOURCES`) added to or removed from the mask. A refusal is a warning and
        the canvas gets its own mask back (so it stops waiting)."""
        try:
            return self._region(editing, tools, value, source, getattr(event, "_data", None) or {})
        except ValueError as exc:
            message = refusal(exc, "region")
            gr.Warning(message, title=REFUSED_TITLE)
            try:
                shown = read_canvas(value)
            except ValueError:
                shown = None
            if shown is None:
                return gr.skip(), gr.skip(), message
            return canvas_value(shown.mask, key=shown.key, message=message), gr.skip(), message

    def _region(
        self, editing: Editing | None, tools: Tools | None, value: dict | None, source: str | None, data: dict
    ) -> tuple[dict, Tools, str]:
        if data.get("mode") not in ("add", "remove"):
            raise ValueError(f"a region click adds or removes, got {data.get('mode')!r}")
        try:
            where = (float(data["x"]), float(data["y"]))
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"a region click needs its x and y, got {data!r}") from None
        if "source" in data:
            if data["source"] not in CLICK_SOURCES:
                raise ValueError(
                    f"a region click's source is one of {', '.join(CLICK_SOURCES)}, got {data['source']!r}"
                )
            source = CLICK_SOURCES[data["source"]]
        canvas, tools, key = self._baked(editing, tools, value)
        point = regions.check_click(where, canvas.shape[:2])
        tools, options = self._region_options(editing, canvas, tools, source)
        edit = regions.add_region if data["mode"] == "add" else regions.remove_region
        small = resize_mask(tools.mask, canvas.shape[:2])
        mask = canvas_edit(tools.mask, edit(small, canvas, point, **options))
        return self._edit(canvas, tools, key, mask, "region " + ("added" if data["mode"] == "add" else "removed"))

    def _region_options(
        self, editing: Editing, canvas: np.ndarray, tools: Tools, source: str | None
    ) -> tuple[Tools, dict[str, Any]]:
        """``click_region``'s options for ``source`` on the canvas, and the tools keeping the
        superpixels or the model's map they needed."""
        if source not in REGION_SOURCES:
            raise ValueError(f"pick where a region comes from: one of {', '.join(REGION_SOURCES)}")
        method, scale = REGION_SOURCES[source]
        if method == "model":
            if tools.probability is None:
                tools = replace(tools, probability=self._probability(editing, canvas.shape[:2]))
            return tools, {"method": method, "probability": tools.probability}
        kept = dict(tools.pixels)
        if scale not in kept:
            kept[scale] = regions.superpixels(canvas, regions.SCALES[scale].area)
            tools = replace(tools, pixels=tuple(kept.items()))
        return tools, {"method": method, "scale": scale, "pixels": kept[scale]}

    def _probability(self, editing: Editing, size: tuple[int, int]) -> np.ndarray:
        """The model's probability map ``float32 [h, w]`` for the open mask's expression, on the canvas."""
        item = self.review.backend.item(editing.mask_version_id)
        image = self.review.images.load(item.image_path, editing.bands, name=item.image_name).rgb
        predictions, _ = self.review.backend.predict(image, [item.expression])
        probability = np.asarray(predictions[0].probability, np.float32)
        if probability.shape != size:
            probability = cv2.resize(probability, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        return probability

    @user_errors
    def fill_holes(
        self, editing: Editing | None, tools: Tools | None, value: dict | None, max_area: Any
    ) -> tuple[dict, Tools, str]:
        """Fill the mask's holes of at most ``max_area`` pixels (all holes when left empty)."""
        limit = None if max_area in (None, "", 0) else check_area(max_area, "the largest hole")
        canvas, tools, key = self._baked(editing, tools, value)
        return self._edit(canvas, tools, key, shapes.fill_holes(tools.mask, limit), "fill holes")

    @user_errors
    def remove_specks(
        self, editing: Editing | None, tools: Tools | None, value: dict | None, min_area: Any
    ) -> tuple[dict, Tools, str]:
        """Remove the mask's pieces of fewer than ``min_area`` pixels."""
        area = check_area(min_area, "the smallest piece to keep")
        canvas, tools, key = self._baked(editing, tools, value)
        return self._edit(canvas, tools, key, shapes.remove_specks(tools.mask, area), "remove specks")

    @user_errors
    def refresh(self, editing: Editing | None, tools: Tools | None) -> Tools | None:
        """After opening or saving: the working mask. A save of the open mask carries the kept
        superpixels and model map over to the new version; anything else starts afresh."""
        if editing is None:
            return None
        same = tools is not None and tools.expression_id == editing.expression_id
        _, fresh, _ = self._state(editing, None)
        if same and tools.mask_version_id != editing.mask_version_id:
            return fresh.carried(tools)
        return tools if same else fresh
