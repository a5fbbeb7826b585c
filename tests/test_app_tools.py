"""The Correct tab's mask tools (annotate.app.tools) against the fake backend: region clicks as the
mask canvas sends them, fill holes, remove specks, refusals, and a save that stores exactly the
mask the canvas shows."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
from PIL import Image
from test_app_handlers import FakeBackend, canvas_reply

from annotate.app.handlers import SegmentHandlers
from annotate.app.mask_canvas import read_canvas
from annotate.app.review import ReviewHandlers
from annotate.app.tools import REGION_SOURCES, ToolHandlers

SMALL, MODEL = "Small (roofs)", "Model's map"


@pytest.fixture
def opened(tmp_path):
    """The fake model's mask of a scene open in the canvas: (backend, review, tools, value, editing).
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
    return backend, review, ToolHandlers(review), canvas_reply(value), editing


def click(x, y, mode="add"):
    return SimpleNamespace(_data={"x": x, "y": y, "mode": mode})


def test_add_and_remove_region_from_canvas_clicks(opened):
    backend, _, kit, value, editing = opened
    stored = backend.versions[editing.mask_version_id]["mask"].copy()
    assert np.array_equal(read_canvas(value).mask, stored), "the canvas opens on the stored mask"
    value, tools, message = kit.region(editing, None, value, SMALL, click(10, 38))
    assert tools.mask[34:44, 4:18].all() and tools.mask[10:30, 20:50].all()
    assert (tools.mask & ~stored).sum() == 140 and "140 pixels changed" in message and value["message"] == message
    assert np.array_equal(read_canvas(value).mask, tools.mask) and "image" not in value  # the picture is kept
    value, tools, _ = kit.region(editing, tools, canvas_reply(value), SMALL, click(30, 20, "remove"))
    assert not tools.mask[10:30, 20:50].any() and tools.mask[34:44, 4:18].all()
    assert np.array_equal(backend.versions[editing.mask_version_id]["mask"], stored)  # nothing saved yet


def test_region_from_the_model_map_runs_the_model_once_and_every_size_adds_the_roof(opened, monkeypatch):
    backend, _, kit, value, editing = opened
    assert set(REGION_SOURCES) == {SMALL, "Medium (fields)", "Large (lakes, sand)", MODEL}
    runs = []
    monkeypatch.setattr(backend, "predict", lambda *a, **k: runs.append(a) or type(backend).predict(backend, *a, **k))
    # the fake model's map is blue / 255: the roof 0.35, the sand 0.24, the pond 0.90
    after, tools, message = kit.region(editing, None, value, MODEL, click(10, 38))
    assert tools.mask[34:44, 4:18].all() and "140 pixels changed" in message
    assert tools.probability.shape == (48, 64) and len(runs) == 1
    _, tools, _ = kit.region(editing, tools, canvas_reply(after), MODEL, click(30, 20, "remove"))
    assert not tools.mask[10:30, 20:50].any() and len(runs) == 1  # the map was kept
    for source in ("Medium (fields)", "Large (lakes, sand)"):
        _, sized, _ = kit.region(editing, None, value, source, click(10, 38))
        assert sized.mask[34:44, 4:18].all() and dict(sized.pixels).keys() == {REGION_SOURCES[source][1]}


def test_tools_start_from_what_the_canvas_shows(opened):
    """Strokes and polygons drawn in the browser are in the mask the canvas sends: every tool
    keeps them, and the save stores the canvas's mask bit for bit."""
    backend, review, kit, value, editing = opened
    drawn = read_canvas(value).mask.copy()
    drawn[13:24, 26:37] = False  # a polygon cut out in the browser: a hole in the pond
    drawn[40:42, 58:60] = True  # a brush dab: a speck
    after, tools, _ = kit.fill_holes(editing, None, canvas_reply(value, drawn), 100)
    assert not tools.mask[13:24, 26:37].any() and tools.mask[40:42, 58:60].all()  # too big; the dab kept
    after, tools, message = kit.fill_holes(editing, tools, canvas_reply(after), None)
    assert tools.mask[13:24, 26:37].all() and "121 pixels changed" in message
    after, tools, _ = kit.remove_specks(editing, tools, canvas_reply(after), 5)
    assert not tools.mask[40:42, 58:60].any() and tools.mask[10:30, 20:50].all()
    for bad, match in [(0, "from 1"), ("many", "number of pixels"), (2.5, "whole number")]:
        with pytest.raises(gr.Error, match=match):
            kit.remove_specks(editing, tools, canvas_reply(after), bad)
    # one more edit in the browser after the last tool, then save: stored = what the canvas shows
    shown = read_canvas(after).mask.copy()
    shown[44:48, 0:4] = True
    _, saved, _ = review.save_from_editor(editing, canvas_reply(after, shown), "", "ana", tools)
    stored = backend.versions[saved.mask_version_id]["mask"]
    assert stored.dtype == bool and np.packbits(stored).tobytes() == np.packbits(shown).tobytes()
    # after the save the tools follow the new version, keeping what they computed
    followed = kit.refresh(saved, tools)
    assert followed.mask_version_id == saved.mask_version_id and np.array_equal(followed.mask, stored)


def test_large_images_are_edited_on_a_smaller_canvas_and_changed_at_full_size(tmp_path, monkeypatch):
    import annotate.app.review

    monkeypatch.setattr(annotate.app.review, "EDITOR_SIDE", 32)  # as a 4000 px image on a 2048 canvas
    image = np.full((48, 64, 3), (170, 150, 60), np.uint8)
    image[10:30, 20:50] = (20, 40, 230)
    Image.fromarray(image).save(tmp_path / "big.png")
    backend = FakeBackend(tmp_path)
    *_, session = SegmentHandlers(backend).segment(str(tmp_path / "big.png"), "the pond", "", 0.5, "ana")
    review = ReviewHandlers(backend)
    value, editing, *_ = review.open_item(session.mask_version_ids[0])
    assert (value["height"], value["width"]) == (24, 32) and read_canvas(value).mask[5:15, 10:25].all()
    shown = read_canvas(value).mask.copy()
    shown[0:2, 0:4] = True  # a dab on the half-size canvas
    _, saved, _ = review.save_from_editor(editing, canvas_reply(value, shown), "", "ana")
    mask = backend.versions[saved.mask_version_id]["mask"]
    assert mask.shape == (48, 64) and mask[0:4, 0:8].all() and mask[10:30, 20:50].all()
    assert mask.sum() == 600 + 32  # the untouched pixels keep their full-size value


def test_refusals_before_anything_is_open_and_for_another_picture(opened):
    _, review, kit, value, editing = opened
    with pytest.raises(gr.Error, match="open a mask version"):
        kit.fill_holes(None, None, value, 10)
    other = {**value, "key": "another picture"}
    with pytest.raises(gr.Error, match="different image"):
        kit.remove_specks(editing, None, other, 5)
    with pytest.raises(gr.Error, match="different image"):
        review.save_from_editor(editing, other, "", "ana")
    with pytest.raises(gr.Error, match="nothing to save"):
        review.save_from_editor(editing, None, "", "ana")
    assert kit.refresh(None, None) is None


@pytest.mark.parametrize(
    ("source", "event", "says"),
    [
        ("Huge", click(10, 38), "where a region comes from"),
        (SMALL, click(70, 1), "outside the 64×48 image"),
        (SMALL, click(10, 38, "lasso"), "adds or removes"),
        (SMALL, click(None, 38), "needs its x and y"),
    ],
)
def test_a_refused_region_click_gives_the_canvas_its_own_mask_back(opened, source, event, says):
    """The canvas waits for an answer to a region click: a refusal is a warning, and the canvas
    gets the mask it sent (so it goes on), the working mask unchanged (skipped)."""
    _, _, kit, value, editing = opened
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gr.Warning outside a request
        answer, tools, message = kit.region(editing, None, value, source, event)
    assert says in message and answer["message"] == message
    assert np.array_equal(read_canvas(answer).mask, read_canvas(value).mask) and answer["key"] == value["key"]
    assert isinstance(tools, type(gr.skip()))


def test_save_and_open_next_stores_the_canvas_mask_and_opens_the_next_picture(opened, tmp_path):
    backend, review, _, value, editing = opened
    shown = read_canvas(value).mask.copy()
    shown[0:3, 0:5] = True  # an edit in the browser
    *_, session = SegmentHandlers(backend).segment(str(tmp_path / "scene.png"), "the sand", "", 0.5, "ana")
    message, now, _, nxt, info, next_id = review.save_and_next(
        editing, canvas_reply(value, shown), "", "ana", "draft", "newest first"
    )
    saved_id = int(message.split("mask version ")[1].split("*")[0])
    assert np.packbits(backend.versions[saved_id]["mask"]).tobytes() == np.packbits(shown).tobytes()
    assert next_id == now.mask_version_id == session.mask_version_ids[0] and f"version **{next_id}**" in info
    assert nxt["image"].startswith("data:image/png;base64,"), "the canvas gets the next picture"
    assert np.array_equal(read_canvas(nxt).mask, backend.versions[next_id]["mask"])
