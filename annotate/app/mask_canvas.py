"""The mask canvas: one Gradio component (a ``gr.HTML`` custom component, no build step) that shows
the picture with the mask over it and edits the mask in the browser.

In the browser (``mask_canvas.js``, then ``mask_canvas_input.js``): the mask is a layer drawn
over the picture at an opacity that only changes how it is drawn (the mask itself is never
touched, so no stroke can be lost); the wheel zooms around the pointer, the pan tool, the middle
button or Space + drag pan; brush and eraser paint the mask directly (pixels whose centre lies
within half the size of the stroke's path); the polygon puts a vertex per click and fills on a
click within 8 screen pixels of its first vertex (or Enter), even-odd at pixel centres; a region
click is sent to Python as the ``region`` event (``{"x", "y", "mode"}`` in canvas pixels); undo /
redo cover every edit, those made in Python included. On a touch screen one finger draws
(polygon and region act on a tap) and two fingers pinch to zoom and pan. Shortcuts (pointer over
the canvas or the canvas focused, no text box focused): B brush, E eraser, P polygon, R region,
H pan, X add/remove, [ ] size, , . opacity, Enter close polygon, Esc drop it, Backspace last
vertex, 0 fit, + - zoom, Ctrl+Z undo, Ctrl+Shift+Z / Ctrl+Y redo.

Values: Python sends :func:`canvas_value` (the picture, only when it changes, and the mask, as
PNG data URLs); the browser sends back the mask as a 0/255 PNG, which :func:`read_canvas` turns
into a :class:`CanvasMask`. Everything runs offline: the script and styles ship with the
package and Gradio's own ``gr.HTML`` runs them. :func:`canvas_page` puts the canvas alone on a
page (its browser test and ``benchmarks/canvas_latency.py`` drive it; a way to try the canvas
without a model or a store).
"""

from __future__ import annotations

import base64
import io
import uuid
from dataclasses import dataclass
from importlib import resources
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from ..edit import regions

PNG_PREFIX = "data:image/png;base64,"
SCRIPTS = ("mask_canvas.js", "mask_canvas_input.js")  # run as one function, in this order
MAX_SIDE = 8192  # a mask the browser sends back may not be larger than this a side


CSS = """
.mc-root { display: flex; flex-direction: column; gap: 6px; outline: none; }
.mc-bar { display: flex; flex-wrap: wrap; gap: 4px; align-items: center; font-size: 13px; }
.mc-bar button { padding: 3px 8px; border: 1px solid var(--border-color-primary, #ccc); border-radius: 6px;
  background: var(--button-secondary-background-fill, #f3f3f3); color: inherit; cursor: pointer; }
.mc-bar button.mc-on { background: var(--color-accent, #ff7c00); color: #fff; }
.mc-bar label { display: inline-flex; align-items: center; gap: 4px; }
.mc-bar input[type=range] { width: 90px; }
.mc-sep { width: 6px; }
.mc-stage { position: relative; height: HEIGHTpx; max-height: 80vh; overflow: hidden; touch-action: none;
  background: #222; border-radius: 6px; }
.mc-screen { position: absolute; inset: 0; width: 100%; height: 100%; cursor: crosshair; }
.mc-root[data-tool=pan] .mc-screen { cursor: grab; }
.mc-root[data-busy="1"] .mc-stage { opacity: 0.8; }
.mc-status { font-size: 13px; min-height: 1.2em; }
"""


@dataclass(frozen=True)
class CanvasMask:
    """What the browser sends: the mask it shows (``bool [h, w]``, the picture's size) and the
    key of the picture it was drawn on."""

    key: str
    mask: np.ndarray


def png_url(array: np.ndarray) -> str:
    """``uint8 [h, w]`` or ``[h, w, 3]`` -> a PNG data URL (lossless)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG", compress_level=1)
    return PNG_PREFIX + base64.b64encode(buffer.getvalue()).decode("ascii")


def mask_from_url(url: Any, size: tuple[int, int]) -> np.ndarray:
    """A 0/255 PNG data URL from the browser -> ``bool [h, w]`` of ``size`` (``ValueError`` otherwise)."""
    if not isinstance(url, str) or not url.startswith(PNG_PREFIX):
        raise ValueError("the canvas sent no mask picture: reopen the item")
    try:
        with Image.open(io.BytesIO(base64.b64decode(url[len(PNG_PREFIX) :], validate=True))) as image:
            if max(image.size) > MAX_SIDE or image.format != "PNG":
                raise ValueError(f"the canvas sent a {image.format} of {image.size}, not a mask PNG")
            array = np.asarray(image.convert("L"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"the canvas's mask could not be read ({exc})") from None
    if array.shape != tuple(size):
        raise ValueError(f"the canvas's mask is {array.shape[1]}×{array.shape[0]}, the picture {size[1]}×{size[0]}")
    if not set(np.unique(array).tolist()) <= {0, 255}:
        raise ValueError("the canvas's mask is not black and white")
    return array == 255


def mask_canvas(*, height: int = 620, mask_colour: str = "#ff2e88", **kwargs: Any) -> gr.HTML:
    """The canvas component (see the module docstring): a ``gr.HTML`` whose value is a dict
    (:func:`canvas_value` makes it, :func:`read_canvas` reads it). ``height``: the drawing area's
    height in CSS pixels; ``mask_colour``: the layer's colour (``"#rrggbb"``); ``kwargs`` go to
    ``gr.HTML`` (``elem_id``, ...). A factory, not a subclass: Gradio writes a ``.pyi`` stub next
    to the module of every component class, which a read-only install cannot take."""
    files = resources.files("annotate.app")
    return gr.HTML(
        value=None,
        html_template=files.joinpath("mask_canvas.html").read_text(encoding="utf-8"),
        css_template=CSS.replace("HEIGHT", str(int(height))),
        js_on_load="\n".join(files.joinpath(name).read_text(encoding="utf-8") for name in SCRIPTS),
        apply_default_css=False,
        mask_colour=mask_colour,
        **kwargs,
    )


def canvas_value(mask: np.ndarray, picture: np.ndarray | None = None, key: str = "", message: str = "") -> dict:
    """What Python shows on the canvas: ``mask`` ``bool [h, w]`` and, when the picture changes,
    ``picture`` ``uint8 [h, w, 3]`` (``None``: the browser keeps the picture it shows, and its
    undo history, and takes the mask as an edit it can undo). ``key`` names the picture
    (:func:`annotate.app.review.canvas_key`); ``message`` is shown under the canvas."""
    mask = np.asarray(mask, bool)
    if mask.ndim != 2:
        raise ValueError(f"the canvas shows a 2-D mask, got shape {mask.shape}")
    out: dict[str, Any] = {
        "key": key,
        "width": int(mask.shape[1]),
        "height": int(mask.shape[0]),
        "mask": png_url(mask.astype(np.uint8) * 255),
        "message": message,
        "revision": uuid.uuid4().hex,  # a new value even when the mask is the same (unblocks the page)
    }
    if picture is not None:
        if picture.shape[:2] != mask.shape:
            raise ValueError(f"the picture is {picture.shape[:2]}, its mask {mask.shape}")
        out["image"] = png_url(np.asarray(picture, np.uint8)[..., :3])
    return out


def read_canvas(payload: Any) -> CanvasMask | None:
    """The browser's value -> :class:`CanvasMask` (``None`` before anything is shown)."""
    if not isinstance(payload, dict) or payload.get("mask") is None:
        return None
    try:
        size = (int(payload["height"]), int(payload["width"]))
    except (KeyError, TypeError, ValueError):
        raise ValueError("the canvas sent a mask without its size: reopen the item") from None
    if not (0 < size[0] <= MAX_SIDE and 0 < size[1] <= MAX_SIDE):
        raise ValueError(f"the canvas's size {size} is out of range")
    return CanvasMask(str(payload.get("key") or ""), mask_from_url(payload["mask"], size))


def canvas_page(scene: np.ndarray, start: np.ndarray, saved: list[np.ndarray]) -> gr.Blocks:
    """A page with the canvas (``#canvas``), *Load* (``#load``: ``scene`` ``uint8 [h, w, 3]`` and
    the mask ``start`` ``bool [h, w]``), the canvas's ``region`` event on
    :mod:`annotate.edit.regions` (small superpixels; a Shift- or Alt-click medium or large ones)
    and *Save* (``#save``: appends the mask the canvas sent, ``bool [h, w]``, to ``saved`` and
    says "saved N" in ``#info``)."""
    if scene.shape[:2] != start.shape:
        raise ValueError(f"the scene is {scene.shape[:2]}, the mask {start.shape}")
    with gr.Blocks() as demo:
        canvas = mask_canvas(elem_id="canvas", height=420)
        with gr.Row():
            load = gr.Button("Load", elem_id="load")
            save = gr.Button("Save", elem_id="save")
        info = gr.Markdown(elem_id="info")

        def region(value: dict, event: gr.EventData) -> dict:
            data, shown = event._data, read_canvas(value)
            if shown is None:
                raise gr.Error("load the picture first")
            edit = regions.add_region if data["mode"] == "add" else regions.remove_region
            scale = data.get("source") or regions.DEFAULT_SCALE  # a modifier click names a size here
            if scale not in regions.SCALES:
                raise gr.Error(f"this page has the superpixel sizes only, not {scale!r}")
            mask = edit(shown.mask, scene, (int(data["x"]), int(data["y"])), scale=scale)
            return canvas_value(mask, key=shown.key, message=f"region {data['mode']} {scale}")

        def keep(value: dict) -> str:
            shown = read_canvas(value)
            if shown is None:
                raise gr.Error("load the picture first")
            saved.append(shown.mask.copy())
            return f"saved {len(saved)}"

        load.click(lambda: canvas_value(start, scene, key="scene", message="loaded"), None, canvas)
        canvas.region(region, canvas, canvas, show_progress="hidden")
        save.click(keep, canvas, info)
    return demo
