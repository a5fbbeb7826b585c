"""Handlers of the Correct tab's mask tools: region clicks snapped to the image's edges, the
polygon, fill holes, remove specks, undo and the mask opacity (:mod:`annotate.edit` does the
work).

The editor (Gradio's ``ImageEditor``) shows the current mask tinted into its background and
takes brush strokes as a layer. Every tool first bakes the editor's strokes into the working mask
(:class:`Tools`, kept in ``gr.State``), then applies its edit and reloads the editor with the new
mask as background and no strokes: nothing drawn is lost, and each tool's edit can be undone.
Changing the opacity is the same bake and reload. Saving (:meth:`ReviewHandlers.save_from_editor`)
starts from the working mask, so what is saved is exactly what the editor shows.

Region tools and the polygon work on the picture the editor shows (at most ``EDITOR_SIDE`` pixels
a side); their edits are brought to the image's full size with nearest neighbour, as strokes are.
Fill holes and remove specks work at full size (their areas are pixels of the image). A region
comes from the picture's superpixels at the size chosen (computed on the first click at that size
and kept with the working mask) or from the model's probability map for the mask's expression
(the model is run on the first such click and the map kept likewise).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import cv2
import gradio as gr
import numpy as np

from annotate.app.guards import user_errors

from ..edit import regions, shapes
from .inputs import editor_mask, resize_mask
from .render import BRUSH_REMOVE, MASK_OPACITY, editor_background, hex_to_rgb
from .review import Editing, ReviewHandlers

CLICK_TOOLS = ("Add region", "Remove region", "Polygon: add", "Polygon: remove")
# what a region click takes: the label the page shows -> (method, superpixel size)
REGION_SOURCES = {
    "Small (roofs)": ("superpixel", "small"),
    "Medium (fields)": ("superpixel", "medium"),
    "Large (lakes, sand)": ("superpixel", "large"),
    "Model's map": ("model", regions.DEFAULT_SCALE),
}
SPECK_AREA = 50  # default "remove specks below" (pixels)
HOLE_AREA = 1000  # default "fill holes up to" (pixels)
VIEW_OUTPUTS = 4  # editor, click view, tools state, tool message


@dataclass(frozen=True)
class Tools:
    """The working mask of the open mask version: what the editor shows under its strokes."""

    mask_version_id: int
    expression_id: int
    mask: np.ndarray  # bool [H, W] at the image's full size
    history: shapes.History = field(default_factory=shapes.History)
    points: tuple[tuple[float, float], ...] = ()  # the open polygon's vertices, canvas (x, y)
    opacity: float = MASK_OPACITY
    pixels: tuple[tuple[str, regions.Superpixels], ...] = ()  # superpixels of the canvas, per size
    probability: np.ndarray | None = None  # float [h, w] the model's map on the canvas

    def carried(self, other: Tools) -> Tools:
        """This working mask with ``other``'s undo history, opacity and kept maps (the same image)."""
        return replace(
            self, history=other.history, opacity=other.opacity, pixels=other.pixels, probability=other.probability
        )


def check_area(value: Any, what: str) -> int:
    """A whole number of pixels >= 1 from a number box (``ValueError`` otherwise)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number of pixels, got {value!r}") from None
    if not np.isfinite(number) or number < 1 or not number.is_integer():
        raise ValueError(f"{what} must be a whole number of pixels from 1, got {value!r}")
    return int(number)


def click_view(background: np.ndarray, points: tuple[tuple[float, float], ...]) -> np.ndarray:
    """The picture the tools are clicked on: the editor's background with the open polygon drawn
    (vertices as dots, the first one circled as the point that closes it)."""
    view = background.copy()
    colour = hex_to_rgb(BRUSH_REMOVE)
    vertices = np.round(np.asarray(points, np.float64)).astype(np.int32).reshape(-1, 2)
    if len(vertices) > 1:
        cv2.polylines(view, [vertices], False, colour, 2, cv2.LINE_AA)
    for index, (x, y) in enumerate(vertices):
        cv2.circle(view, (int(x), int(y)), 4, colour, -1, cv2.LINE_AA)
        if index == 0:
            cv2.circle(view, (int(x), int(y)), int(shapes.SNAP_RADIUS), (255, 255, 255), 2, cv2.LINE_AA)
    return view


def shown(canvas: np.ndarray, tools: Tools) -> np.ndarray:
    """What the editor shows for ``tools``: the canvas picture with the working mask tinted in."""
    return editor_background(canvas, resize_mask(tools.mask, canvas.shape[:2]), tools.opacity)


class ToolHandlers:
    """Mask tools of the Correct tab; each returns (editor value, click view, tools, message)."""

    def __init__(self, review: ReviewHandlers) -> None:
        self.review = review

    def _state(self, editing: Editing | None, tools: Tools | None) -> tuple[np.ndarray, Tools]:
        """The canvas picture ``uint8 [h, w, 3]`` and the working mask of what is open."""
        if editing is None:
            raise ValueError("open a mask version in the editor first")
        item = self.review.backend.item(editing.mask_version_id)
        if item.mask.shape != (editing.height, editing.width):
            raise ValueError("the stored image changed size since the editor opened it; reopen the item")
        if tools is None or tools.mask_version_id != editing.mask_version_id:
            tools = Tools(editing.mask_version_id, editing.expression_id, item.mask.astype(bool))
        return self.review.canvas(item, editing.bands), tools

    def _baked(self, editing: Editing | None, tools: Tools | None, value: Any) -> tuple[np.ndarray, Tools]:
        """As :meth:`_state`, with the editor's strokes baked into the working mask."""
        canvas, tools = self._state(editing, tools)
        if value and value.get("layers"):
            tools = replace(tools, mask=editor_mask(value, shown(canvas, tools), tools.mask))
        return canvas, tools

    def _show(self, canvas: np.ndarray, tools: Tools, message: str) -> tuple[dict[str, Any], np.ndarray, Tools, str]:
        background = shown(canvas, tools)
        value = {"background": background, "layers": [], "composite": None}
        return value, click_view(background, tools.points), tools, message

    def _edit(self, canvas: np.ndarray, tools: Tools, mask: np.ndarray, message: str) -> tuple:
        if np.array_equal(mask, tools.mask):
            return self._show(canvas, replace(tools, points=()), f"{message}: nothing changed")
        changed = int(np.count_nonzero(mask != tools.mask))
        edited = replace(tools, mask=mask, history=tools.history.push(tools.mask), points=())
        return self._show(canvas, edited, f"{message}: {changed:,} pixels changed (Undo takes it back)")

    def _on_canvas(self, canvas: np.ndarray, tools: Tools, edit: Any) -> np.ndarray:
        """Run ``edit(mask, picture)`` on the canvas; its change is applied at full size."""
        small = resize_mask(tools.mask, canvas.shape[:2])
        after = edit(small, canvas)
        full = tools.mask.shape
        return (tools.mask | resize_mask(after & ~small, full)) & ~resize_mask(small & ~after, full)

    @user_errors
    def click(
        self,
        editing: Editing | None,
        tools: Tools | None,
        value: Any,
        tool: str,
        source: str | None,
        event: gr.SelectData,
    ) -> tuple[dict[str, Any], np.ndarray, Tools, str]:
        """A click on the tools' picture at ``event.index`` (x, y): add or remove the region
        there (from ``source``, a key of :data:`REGION_SOURCES`), or put a polygon vertex (a
        click near the first vertex closes the polygon)."""
        if tool not in CLICK_TOOLS:
            raise ValueError(f"pick a tool first: one of {', '.join(CLICK_TOOLS)}")
        canvas, tools = self._baked(editing, tools, value)
        point = regions.check_click(tuple(event.index[:2]), canvas.shape[:2])
        if tool in ("Add region", "Remove region"):
            tools, options = self._region_options(editing, canvas, tools, source)
            edit = regions.add_region if tool == "Add region" else regions.remove_region
            mask = self._on_canvas(canvas, tools, lambda m, picture: edit(m, picture, point, **options))
            return self._edit(canvas, tools, mask, tool)
        if shapes.closes_polygon(tools.points, point):
            return self._close(canvas, tools, tool)
        points = (*tools.points, (float(point[0]), float(point[1])))
        hint = "click the first vertex (circled) or *Close polygon* to apply it" if len(points) >= 3 else ""
        return self._show(canvas, replace(tools, points=points), f"polygon: {len(points)} vertices {hint}".strip())

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

    def _close(self, canvas: np.ndarray, tools: Tools, tool: str) -> tuple:
        height, width = tools.mask.shape
        scale_x, scale_y = width / canvas.shape[1], height / canvas.shape[0]
        # vertices are pixel centres on the canvas: map centre to centre at full size
        points = [
            (min((x + 0.5) * scale_x - 0.5, width - 1), min((y + 0.5) * scale_y - 0.5, height - 1))
            for x, y in tools.points
        ]
        mask = shapes.polygon(tools.mask, points, add=tool != "Polygon: remove")
        return self._edit(canvas, tools, mask, "polygon " + ("added" if tool != "Polygon: remove" else "cut out"))

    @user_errors
    def close_polygon(
        self, editing: Editing | None, tools: Tools | None, value: Any, tool: str
    ) -> tuple[dict[str, Any], np.ndarray, Tools, str]:
        """Apply the open polygon (added, or cut out with *Polygon: remove*)."""
        canvas, tools = self._baked(editing, tools, value)
        if len(tools.points) < 3:
            raise ValueError(f"a polygon needs at least 3 vertices, it has {len(tools.points)}: click on the picture")
        return self._close(canvas, tools, tool)

    @user_errors
    def fill_holes(
        self, editing: Editing | None, tools: Tools | None, value: Any, max_area: Any
    ) -> tuple[dict[str, Any], np.ndarray, Tools, str]:
        """Fill the mask's holes of at most ``max_area`` pixels (all holes when left empty)."""
        limit = None if max_area in (None, "", 0) else check_area(max_area, "the largest hole")
        canvas, tools = self._baked(editing, tools, value)
        return self._edit(canvas, tools, shapes.fill_holes(tools.mask, limit), "fill holes")

    @user_errors
    def remove_specks(
        self, editing: Editing | None, tools: Tools | None, value: Any, min_area: Any
    ) -> tuple[dict[str, Any], np.ndarray, Tools, str]:
        """Remove the mask's pieces of fewer than ``min_area`` pixels."""
        area = check_area(min_area, "the smallest piece to keep")
        canvas, tools = self._baked(editing, tools, value)
        return self._edit(canvas, tools, shapes.remove_specks(tools.mask, area), "remove specks")

    @user_errors
    def undo(
        self, editing: Editing | None, tools: Tools | None, value: Any
    ) -> tuple[dict[str, Any], np.ndarray, Tools, str]:
        """Take back the last polygon vertex, else the last tool's edit (strokes drawn since are
        kept: they are baked in first, and Ctrl+Z undoes strokes)."""
        canvas, tools = self._baked(editing, tools, value)
        if tools.points:
            return self._show(canvas, replace(tools, points=tools.points[:-1]), "last polygon vertex taken back")
        mask, history = tools.history.pop()
        return self._show(canvas, replace(tools, mask=mask, history=history), f"undone ({len(history)} more to undo)")

    @user_errors
    def set_opacity(
        self, editing: Editing | None, tools: Tools | None, value: Any, opacity: Any
    ) -> tuple[dict[str, Any], np.ndarray, Tools, str]:
        """Show the mask at ``opacity`` (0.05 to 1); strokes drawn so far are kept (baked in)."""
        level = float(opacity) if opacity not in (None, "") else MASK_OPACITY
        if not 0.05 <= level <= 1.0:
            raise ValueError(f"the mask opacity must be between 0.05 and 1, got {opacity!r}")
        canvas, tools = self._baked(editing, tools, value)
        return self._show(canvas, replace(tools, opacity=level), f"mask opacity {level:.2f}")

    @user_errors
    def refresh(self, editing: Editing | None, tools: Tools | None) -> tuple[np.ndarray | None, Tools | None]:
        """After opening or saving: the click view and the working mask. A save of the open mask
        carries the undo history and opacity over to the new version; anything else starts afresh."""
        if editing is None:
            return None, None
        same = tools is not None and tools.expression_id == editing.expression_id
        canvas, fresh = self._state(editing, None)
        if same and tools.mask_version_id != editing.mask_version_id:
            fresh = fresh.carried(tools)
        elif same:
            fresh = tools
        return click_view(shown(canvas, fresh), fresh.points), fresh
