"""The Correct tab's mask tools (annotate.app.tools) against the fake backend: each tool, undo,
opacity without lost strokes, and a save that stores exactly the mask the editor shows."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
from PIL import Image
from test_app_handlers import FakeBackend

from annotate.app.handlers import SegmentHandlers
from annotate.app.render import BRUSH_ADD, editor_background, hex_to_rgb
from annotate.app.review import ReviewHandlers
from annotate.app.tools import REGION_SOURCES, ToolHandlers

SMALL, MODEL = "Small (roofs)", "Model's map"


@pytest.fixture
def opened(tmp_path):
    """The fake model's mask of a scene open in the editor: (backend, review, tools, value, editing).
    The model finds the blue pond (rows 10-30, cols 20-50) and misses the dark-blue roof (rows
    34-44, cols 4-18: blue < half)."""
    image = np.full((48, 64, 3), (170, 150, 60), np.uint8)
    image[10:30, 20:50] = (20, 40, 230)
    image[34:44, 4:18] = (40, 30, 90)
    Image.fromarray(image).save(tmp_path / "scene.png")
    backend = FakeBackend(tmp_path)
    *_, session = SegmentHandlers(backend).segment(str(tmp_path / "scene.png"), "the pond", "", 0.5, "ana")
    review = ReviewHandlers(backend)
    value, editing, *_ = review.open_item(session.mask_version_ids[0])
    return backend, review, ToolHandlers(review), value, editing


def click(x, y):
    return SimpleNamespace(index=[x, y])


def stroke(value, rows, cols):
    layer = np.zeros((*value["background"].shape[:2], 4), np.uint8)
    layer[rows, cols] = (*hex_to_rgb(BRUSH_ADD), 153)
    return {**value, "layers": [layer]}


def test_add_and_remove_region_then_undo(opened):
    backend, _, kit, value, editing = opened
    stored = backend.versions[editing.mask_version_id]["mask"].copy()
    value, view, tools, message = kit.click(editing, None, value, "Add region", SMALL, click(10, 38))
    assert tools.mask[34:44, 4:18].all() and tools.mask[10:30, 20:50].all()
    assert (tools.mask & ~stored).sum() == 140 and "140 pixels changed" in message
    assert value["layers"] == [] and view.shape == value["background"].shape
    value, _, tools, _ = kit.click(editing, tools, value, "Remove region", SMALL, click(30, 20))
    assert not tools.mask[10:30, 20:50].any() and tools.mask[34:44, 4:18].all()
    value, _, tools, message = kit.undo(editing, tools, value)
    assert tools.mask[10:30, 20:50].all() and "1 more to undo" in message
    _, _, tools, _ = kit.undo(editing, tools, value)
    assert np.array_equal(tools.mask, stored)
    with pytest.raises(gr.Error, match="nothing to undo"):
        kit.undo(editing, tools, value)
    assert np.array_equal(backend.versions[editing.mask_version_id]["mask"], stored)  # nothing saved yet


def test_region_from_the_model_map_runs_the_model_once_and_every_size_adds_the_roof(opened, monkeypatch):
    backend, _, kit, value, editing = opened
    assert set(REGION_SOURCES) == {SMALL, "Medium (fields)", "Large (lakes, sand)", MODEL}
    runs = []
    monkeypatch.setattr(backend, "predict", lambda *a, **k: runs.append(a) or type(backend).predict(backend, *a, **k))
    # the fake model's map is blue / 255: the roof 0.35, the sand 0.24, the pond 0.90
    value, _, tools, message = kit.click(editing, None, value, "Add region", MODEL, click(10, 38))
    assert tools.mask[34:44, 4:18].all() and "140 pixels changed" in message
    assert tools.probability.shape == (48, 64) and len(runs) == 1
    value, _, tools, _ = kit.click(editing, tools, value, "Remove region", MODEL, click(30, 20))
    assert not tools.mask[10:30, 20:50].any() and len(runs) == 1  # the map was kept
    for source in ("Medium (fields)", "Large (lakes, sand)"):
        _, _, sized, _ = kit.click(editing, None, value, "Add region", source, click(10, 38))
        assert sized.mask[34:44, 4:18].all() and dict(sized.pixels).keys() == {REGION_SOURCES[source][1]}


def test_polygon_snaps_to_the_first_vertex_and_undo_takes_back_vertices(opened):
    _, _, kit, value, editing = opened
    tools = None
    for x, y in [(2, 2), (20, 2), (20, 12)]:
        value, view, tools, message = kit.click(editing, tools, value, "Polygon: add", SMALL, click(x, y))
    assert len(tools.points) == 3 and "click the first vertex" in message
    assert tuple(view[2, 2]) != tuple(value["background"][2, 2])  # the open polygon is drawn on the view
    value, _, tools, _ = kit.undo(editing, tools, value)
    assert len(tools.points) == 2
    for x, y in [(20, 12), (2, 12)]:  # (2, 12) is 10 px from the first: no snap
        value, _, tools, _ = kit.click(editing, tools, value, "Polygon: add", SMALL, click(x, y))
    value, _, tools, message = kit.click(
        editing, tools, value, "Polygon: add", SMALL, click(3, 3)
    )  # near (2, 2): closes
    assert tools.points == () and "polygon added" in message
    assert tools.mask[2:13, 2:21].all() and tools.mask[:, :2].sum() == 0
    for x, y in [(25, 12), (35, 12), (35, 20)]:
        value, _, tools, _ = kit.click(editing, tools, value, "Polygon: remove", SMALL, click(x, y))
    value, _, tools, _ = kit.close_polygon(editing, tools, value, "Polygon: remove")
    assert not tools.mask[12:21, 35].any() and not tools.mask[12, 25:36].any() and tools.mask[25:30, 20:50].all()
    with pytest.raises(gr.Error, match="at least 3 vertices"):
        kit.close_polygon(editing, tools, value, "Polygon: add")


def test_fill_holes_and_remove_specks(opened):
    _, _, kit, value, editing = opened
    value = {**value, "layers": [np.zeros((48, 64, 4), np.uint8)]}
    value, _, tools, _ = kit.click(editing, None, value, "Polygon: remove", SMALL, click(26, 13))
    for x, y in [(36, 13), (36, 23), (26, 23)]:  # the last is 10 px from the first: no snap
        value, _, tools, _ = kit.click(editing, tools, value, "Polygon: remove", SMALL, click(x, y))
    value, _, tools, _ = kit.close_polygon(editing, tools, value, "Polygon: remove")
    assert not tools.mask[13:24, 26:37].any() and tools.mask[10:30, 20:50].sum() == 600 - 121  # a hole
    value, _, tools, _ = kit.fill_holes(editing, tools, stroke(value, slice(40, 42), slice(58, 60)), 100)
    assert not tools.mask[13:24, 26:37].any() and tools.mask[40:42, 58:60].all()  # too big; the stroke kept
    value, _, tools, message = kit.fill_holes(editing, tools, value, None)
    assert tools.mask[13:24, 26:37].all() and "121 pixels changed" in message
    value, _, tools, message = kit.remove_specks(editing, tools, value, 5)
    assert not tools.mask[40:42, 58:60].any() and tools.mask[10:30, 20:50].all()
    for bad, match in [(0, "from 1"), ("many", "number of pixels"), (2.5, "whole number")]:
        with pytest.raises(gr.Error, match=match):
            kit.remove_specks(editing, tools, value, bad)


def test_opacity_keeps_the_strokes_and_the_save_stores_what_the_editor_shows(opened):
    backend, review, kit, value, editing = opened
    image = np.asarray(Image.open(backend.images[1].path).convert("RGB"))
    value, _, tools, _ = kit.click(editing, None, value, "Add region", SMALL, click(10, 38))
    painted = stroke(value, slice(0, 4), slice(56, 64))
    value, view, tools, message = kit.set_opacity(editing, tools, painted, 0.8)
    assert "0.80" in message and tools.mask[0:4, 56:64].all() and value["layers"] == []
    assert np.array_equal(value["background"], editor_background(image, tools.mask, 0.8))  # the canvas shows tools.mask
    assert np.array_equal(view, value["background"])
    # one more stroke after the reload, then save: stored = what the canvas shows + that stroke, bit for bit
    last = stroke(value, slice(44, 48), slice(0, 4))
    _, saved, _ = review.save_from_editor(editing, last, "", "ana", tools)
    stored = backend.versions[saved.mask_version_id]["mask"]
    expected = tools.mask.copy()
    expected[44:48, 0:4] = True
    assert stored.dtype == bool and np.array_equal(stored, expected)
    assert np.packbits(stored).tobytes() == np.packbits(expected).tobytes()
    # after the save the tools follow the new version, with their undo history and opacity
    view, followed = kit.refresh(saved, tools)
    assert followed.mask_version_id == saved.mask_version_id and np.array_equal(followed.mask, stored)
    assert len(followed.history) == len(tools.history) and followed.opacity == 0.8
    with pytest.raises(gr.Error, match=r"between 0\.05 and 1"):
        kit.set_opacity(editing, tools, value, 3)


def test_tools_refuse_before_anything_is_open_and_strokes_over_another_image(opened):
    _, _, kit, value, editing = opened
    with pytest.raises(gr.Error, match="open a mask version"):
        kit.fill_holes(None, None, value, 10)
    with pytest.raises(gr.Error, match="pick a tool"):
        kit.click(editing, None, value, "Lasso", SMALL, click(1, 1))
    with pytest.raises(gr.Error, match="where a region comes from"):
        kit.click(editing, None, value, "Add region", "Huge", click(10, 38))
    with pytest.raises(gr.Error, match="outside the 64×48 image"):
        kit.click(editing, None, value, "Add region", SMALL, click(70, 1))
    other = {**value, "background": np.zeros_like(value["background"]), "layers": [np.zeros((48, 64, 4), np.uint8)]}
    with pytest.raises(gr.Error, match="different image"):
        kit.remove_specks(editing, None, other, 5)
    assert kit.refresh(None, None) == (None, None)
