"""The mask canvas alone on a page (:func:`canvas_page`): what its browser test and
``benchmarks/canvas_latency.py`` drive, and a way to try the canvas without a model or a store.
"""

from __future__ import annotations

import gradio as gr
import numpy as np

from ..edit import regions
from .mask_canvas import canvas_value, mask_canvas, read_canvas


def canvas_page(scene: np.ndarray, start: np.ndarray, saved: list[np.ndarray]) -> gr.Blocks:
    """A page with the canvas (``#canvas``), *Load* (``#load``: ``scene`` ``uint8 [h, w, 3]`` and
    the mask ``start`` ``bool [h, w]``), the canvas's ``region`` event on
    :mod:`annotate.edit.regions` (small superpixels) and *Save* (``#save``: appends the mask the
    canvas sent, ``bool [h, w]``, to ``saved`` and says "saved N" in ``#info``)."""
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
            mask = edit(shown.mask, scene, (int(data["x"]), int(data["y"])))
            return canvas_value(mask, key=shown.key, message=f"region {data['mode']}")

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
