"""The app's handlers against a fake backend: no model, no database, no server."""

from __future__ import annotations

import itertools
import threading
import time
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from annotate.app.backend import Item, ModelRef, Recorded
from annotate.app.downloads import Downloads
from annotate.app.handlers import ModelFirst, SegmentHandlers
from annotate.app.mask_canvas import png_url, read_canvas
from annotate.app.review import ReviewHandlers
from sbanet.inference.predictor import AttentionMaps, Prediction


def fake_attention(expression: str) -> AttentionMaps:
    tokens = ["[CLS]", *expression.split(), "[SEP]"]
    n = len(tokens)
    rng = np.random.default_rng(len(expression))
    return AttentionMaps(
        tokens,
        [rng.dirichlet(np.ones(n), size=(s, s)).astype(np.float32) for s in (8, 4, 2, 1)],
        [rng.dirichlet(np.ones(s * s)).reshape(s, s).astype(np.float32) for s in (8, 4, 2, 1)],
        [rng.dirichlet(np.ones(n)).astype(np.float32) for _ in range(4)],
        np.full((2, 2), 0.25, np.float32),
    )


class FakeBackend:
    """The :class:`annotate.app.backend.Backend` interface over dicts; "the model" finds blue pixels."""

    model_name = "fake-model"

    def __init__(self, tmp_path):
        self.downloads = Downloads(tmp_path / "downloads")
        self.ids = itertools.count(1)
        self.images: dict[int, object] = {}
        self.versions: dict[int, dict] = {}
        self.expressions: dict[tuple[int, str], int] = {}

    def predict(self, image, expressions, threshold=0.5):
        probability = image[..., 2].astype(np.float32) / 255.0
        predictions = [Prediction(e, probability > threshold, probability, fake_attention(e)) for e in expressions]
        return predictions, ModelRef(1, self.model_name)

    def record_segmentation(self, image, predictions, model, author):
        image_id = next((i for i, im in self.images.items() if im.sha256 == image.sha256), None)
        if image_id is None:
            image_id = next(self.ids)
            self.images[image_id] = image
        expression_ids, version_ids = [], []
        for p in predictions:
            expression_id = self.expressions.setdefault((image_id, p.expression), next(self.ids))
            version_id = next(self.ids)
            self.versions[version_id] = dict(
                expression_id=expression_id,
                image_id=image_id,
                expression=p.expression,
                mask=p.mask,
                kind="prediction",
                status="draft",
                author=author,
                parent=None,
                uncertainty=0.5,
            )
            expression_ids.append(expression_id)
            version_ids.append(version_id)
        return Recorded(image_id, expression_ids, version_ids)

    def item(self, mask_version_id):
        if mask_version_id not in self.versions:
            raise ValueError(f"unknown mask version id {mask_version_id}")
        v = self.versions[mask_version_id]
        image = self.images[v["image_id"]]
        return Item(
            mask_version_id,
            v["expression_id"],
            v["image_id"],
            v["expression"],
            image.name,
            image.path,
            image.sha256,
            v["mask"],
            v["status"],
            v["kind"],
            False,
        )

    def save_correction(self, parent_id, mask, author, note=None, request_id=None):
        parent = self.versions[parent_id]
        new_id = next(self.ids)
        self.versions[new_id] = {
            **parent,
            "mask": mask,
            "kind": "correction",
            "status": "submitted",
            "author": author,
            "parent": parent_id,
            "uncertainty": None,
        }
        return new_id

    def set_status(self, mask_version_id, status, author, note=None):
        self.versions[mask_version_id]["status"] = status
        return status

    def _row(self, version_id):
        v = self.versions[version_id]
        return {
            "mask_version": version_id,
            "expression_id": v["expression_id"],
            "image": "scene.png",
            "expression": v["expression"],
            "kind": v["kind"],
            "status": v["status"],
            "author": v["author"],
            "area_px": int(v["mask"].sum()),
            "uncertainty": v["uncertainty"],
            "parent": v["parent"],
            "created": "2026-01-01 00:00:00",
        }

    def history(self, expression_id):
        return [
            self._row(i)
            for i in sorted(self.versions, reverse=True)
            if self.versions[i]["expression_id"] == expression_id
        ]

    def review_queue(self, status, order, limit=100):
        rows = [self._row(i) for i in sorted(self.versions, reverse=True) if self.versions[i]["status"] == status]
        return rows[:limit]


@pytest.fixture
def scene(tmp_path):
    image = np.full((48, 64, 3), (170, 150, 60), np.uint8)  # sand
    image[10:30, 20:50] = (20, 40, 230)  # the blue "pond" the fake model finds
    path = tmp_path / "scene.png"
    Image.fromarray(image).save(path)
    return path


@pytest.fixture
def backend(tmp_path):
    return FakeBackend(tmp_path)


def signed_in(name):
    return SimpleNamespace(username=name)


def test_segment_returns_overlay_probabilities_full_size_masks_and_records(backend, scene):
    handlers = SegmentHandlers(backend)
    overlay, gallery, files, summary, details, session = handlers.segment(
        str(scene), "the pond\nthe water", "", 0.5, "ana"
    )
    base, annotations = overlay.value["image"], overlay.value["annotations"]
    assert base is not None and [a["label"] for a in annotations] == ["the pond", "the water"]
    assert set(overlay.color_map) == {"the pond", "the water"}
    assert len(gallery) == 2 and gallery[0][1] == "P(the pond)"
    saved = np.asarray(Image.open(files[0])) > 0
    assert saved.shape == (48, 64) and saved[10:30, 20:50].all() and saved.sum() == 20 * 30
    assert "**2 expression(s)**" in summary and "model `fake-model`" in summary
    assert details["results"][0]["area_fraction"] == pytest.approx(600 / (48 * 64), abs=1e-4)
    assert [v["author"] for v in backend.versions.values()] == ["ana", "ana"]
    assert session.mask_version_ids == details_versions(details)


def details_versions(details):
    return [r["mask_version"] for r in details["results"]]


def test_preview_shows_the_upload_as_the_model_sees_it(backend, scene, tmp_path):
    handlers = SegmentHandlers(backend)
    picture, facts = handlers.preview(str(scene), "")
    assert picture.shape == (48, 64, 3) and "64×48 px" in facts and "3 band(s)" in facts
    assert handlers.preview(None, "") == (None, "")
    (tmp_path / "empty.tif").write_bytes(b"")
    picture, facts = handlers.preview(str(tmp_path / "empty.tif"), "")  # said under the upload
    assert picture is None and facts.startswith("⚠") and "empty" in facts and str(tmp_path) not in facts


def test_the_signed_in_user_is_the_annotator(backend, scene):
    SegmentHandlers(backend).segment(str(scene), "the pond", "", 0.5, "typed name", request=signed_in("ben"))
    assert [v["author"] for v in backend.versions.values()] == ["ben"]


@pytest.mark.parametrize(
    ("file", "expressions", "message"),
    [
        (None, "the pond", "upload an image"),
        ("scene", "   ", "at least one expression"),
        ("scene", "x" * 1200, "limit is"),
        ("junk", "the pond", "cannot read"),
    ],
)
def test_bad_segment_input_is_a_visible_error_and_saves_nothing(backend, scene, tmp_path, file, expressions, message):
    (tmp_path / "junk.png").write_bytes(b"\x89PNG broken")
    path = {"scene": str(scene), "junk": str(tmp_path / "junk.png"), None: None}[file]
    with pytest.raises(gr.Error, match=message):
        SegmentHandlers(backend).segment(path, expressions, "", 0.5, "ana")
    assert backend.versions == {} and backend.images == {}


def test_attention_views_follow_the_chosen_expression_and_word(backend, scene):
    handlers = SegmentHandlers(backend)
    *_, session = handlers.segment(str(scene), "the blue pond\nthe sand", "", 0.5, "ana")
    expressions, words = handlers.attention_choices(session)
    assert expressions["choices"] == [("the blue pond", "the blue pond"), ("the sand", "the sand")] or expressions[
        "choices"
    ] == ["the blue pond", "the sand"]
    assert words["value"] == "blue"  # the first word that is not a stop word
    assert handlers.word_choices(session, "the sand")["value"] == "sand"
    pictures = handlers.render_attention(session, "the sand", "sand")
    assert all(p is not None and p.ndim == 3 for p in pictures)
    api_pictures = SegmentHandlers(backend).attention_for(str(scene), "the blue pond", "pond", "")
    assert all(p.ndim == 3 for p in api_pictures)
    with pytest.raises(gr.Error, match="segment an image first"):
        handlers.render_attention(None, None, None)


def test_attention_is_drawn_only_while_its_tab_is_open(backend, scene, monkeypatch):
    handlers = SegmentHandlers(backend)
    *_, session = handlers.segment(str(scene), "the blue pond", "", 0.5, "ana")
    drawn = []
    monkeypatch.setattr("annotate.app.handlers.attention_pictures", lambda *args: drawn.append(args) or (1, 2, 3, 4))
    assert handlers.attention_if_shown(session, "the blue pond", "blue", False, False) == (None,) * 4
    assert handlers.attention_if_shown(None, None, None, False, True) == (None,) * 4  # opened before any result
    assert drawn == []
    assert handlers.attention_if_shown(session, "the blue pond", "blue", False, True) == (1, 2, 3, 4)
    assert len(drawn) == 1 and drawn[0][2] == "blue"
    handlers.attention_if_shown(session, "the blue pond", "blue", False, True)  # the tab reopened
    assert len(drawn) == 1, "the same pictures were drawn twice"
    handlers.attention_if_shown(session, "the blue pond", "pond", False, True)  # another word
    handlers.attention_if_shown(session, "the blue pond", "blue", True, True)  # the shared scale
    *_, again = handlers.segment(str(scene), "the blue pond", "", 0.5, "ana")  # a new result
    handlers.attention_if_shown(again, "the blue pond", "blue", False, True)
    assert [(args[2], args[3]) for args in drawn] == [("blue", False), ("pond", False), ("blue", True), ("blue", False)]


def test_follow_up_work_waits_for_model_runs_in_line():
    models = ModelFirst(slots=1, patience=10.0)
    order: list[str] = []
    first_in, release = threading.Event(), threading.Event()

    def model_run(name: str, hold: threading.Event | None = None) -> None:
        with models.model_run():
            if hold is not None:
                first_in.set()
                hold.wait(10)
            order.append(name)

    def follow_up() -> None:
        order.append(f"follow-up {models.follow_up()}")

    first = threading.Thread(target=model_run, args=("model 1", release))
    first.start()
    first_in.wait(10)
    second = threading.Thread(target=model_run, args=("model 2",))  # waits for the slot
    second.start()
    waiting = threading.Thread(target=follow_up)
    waiting.start()
    time.sleep(0.2)
    assert order == [], "the follow-up ran while model runs were running or in line"
    release.set()
    for thread in (first, second, waiting):
        thread.join(10)
    assert order == ["model 1", "model 2", "follow-up True"]
    assert models.follow_up() is True  # no model run: no wait


def test_follow_up_work_is_delayed_never_starved():
    models = ModelFirst(slots=1, patience=0.05)
    with models.model_run():
        started = time.perf_counter()
        assert models.follow_up() is False  # the wait ran out: the work goes ahead
        assert time.perf_counter() - started >= 0.04
    with pytest.raises(ValueError, match="model_slots must be at least 1"):
        ModelFirst(slots=0)


def canvas_reply(value: dict, mask: np.ndarray | None = None) -> dict:
    """What the mask canvas sends back for ``value`` (from ``open_item`` or a tool): its key and
    size, and the mask it shows (``mask``, else the one it was given) as a 0/255 PNG."""
    shown = read_canvas(value).mask if mask is None else mask
    png = png_url(np.asarray(shown, bool).astype(np.uint8) * 255)
    return {"key": value["key"], "width": value["width"], "height": value["height"], "mask": png}


def test_correction_from_the_canvas_is_saved_with_its_author(backend, scene):
    *_, session = SegmentHandlers(backend).segment(str(scene), "the pond", "", 0.5, "ana")
    review = ReviewHandlers(backend)
    value, editing, info, history = review.open_item(session.mask_version_ids[0])
    assert (value["height"], value["width"]) == (48, 64) and value["image"].startswith("data:image/png;base64,")
    assert "mask version" in info and list(history["kind"]) == ["prediction"]
    shown = read_canvas(value).mask.copy()
    assert np.array_equal(shown, backend.versions[editing.mask_version_id]["mask"])
    shown[40:48, 0:16] = True  # a brush stroke in the browser
    message, saved, history = review.save_from_editor(editing, canvas_reply(value, shown), "", "ana")
    new = backend.versions[saved.mask_version_id]
    assert new["kind"] == "correction" and new["parent"] == editing.mask_version_id and new["author"] == "ana"
    assert new["mask"].shape == (48, 64) and np.array_equal(new["mask"], shown)
    assert new["mask"].sum() == 600 + 8 * 16
    assert f"mask version {saved.mask_version_id}" in message
    assert history["mask_version"].iloc[0] == saved.mask_version_id


def test_open_with_an_empty_box_opens_the_proposed_mask(backend, scene):
    """On the Correct tab's first showing the page sends 0 for a box that already shows the
    proposal: Open then opens the proposal; a typed version wins; no segmentation, no proposal."""
    *_, session = SegmentHandlers(backend).segment(str(scene), "the pond\nthe road", "", 0.5, "ana")
    review = ReviewHandlers(backend)
    first, second = session.mask_version_ids
    for empty in (0, None, ""):
        assert review.open_from_session(session, empty)[1].mask_version_id == first
    assert review.open_from_session(session, second)[1].mask_version_id == second
    with pytest.raises(gr.Error, match="choose a mask version first"):
        review.open_from_session(None, 0)


def test_bad_corrections_are_refused_and_nothing_is_saved(backend, scene):
    *_, session = SegmentHandlers(backend).segment(str(scene), "the pond", "", 0.5, "ana")
    review = ReviewHandlers(backend)
    value, editing, *_ = review.open_item(session.mask_version_ids[0])
    value = canvas_reply(value)
    before = dict(backend.versions)
    with pytest.raises(gr.Error, match="type your name"):
        review.save_from_editor(editing, value, "", "  ")
    with pytest.raises(gr.Error, match="different image"):
        review.save_from_editor(editing, {**value, "key": "another picture"}, "", "ana")
    smaller = canvas_reply({**value, "width": 32}, np.zeros((48, 32), bool))
    with pytest.raises(gr.Error, match="different image"):
        review.save_from_editor(editing, smaller, "", "ana")
    with pytest.raises(gr.Error, match="not black and white"):
        review.save_from_editor(editing, {**value, "mask": png_url(np.full((48, 64), 7, np.uint8))}, "", "ana")
    with pytest.raises(gr.Error, match="open a mask version"):
        review.save_from_editor(None, value, "", "ana")
    with pytest.raises(gr.Error, match="unknown mask version"):
        review.open_item(999)
    with pytest.raises(gr.Error, match="not a mask version id"):
        review.open_item(1.5)
    assert backend.versions == before


def test_api_correction_review_and_queue(backend, scene, tmp_path):
    *_, session = SegmentHandlers(backend).segment(str(scene), "the pond\nthe road", "", 0.5, "ana")
    review = ReviewHandlers(backend)
    mask = np.zeros((48, 64), np.uint8)
    mask[0:10, 0:10] = 255
    Image.fromarray(mask).save(tmp_path / "fix.png")
    result = review.save_correction(session.mask_version_ids[0], str(tmp_path / "fix.png"), "", "ben")
    assert result["parent"] == session.mask_version_ids[0] and result["area_px"] == 100
    np.testing.assert_array_equal(backend.versions[result["mask_version"]]["mask"], mask > 0)
    Image.fromarray(mask[:, :32]).save(tmp_path / "small.png")
    with pytest.raises(gr.Error, match="the image is 64×48"):
        review.save_correction(session.mask_version_ids[0], str(tmp_path / "small.png"), "", "ben")

    reviewed, _ = review.set_status(result["mask_version"], "accepted", "looks right", "carla")
    assert reviewed == {"mask_version": result["mask_version"], "status": "accepted", "author": "carla"}
    with pytest.raises(gr.Error, match="status must be one of"):
        review.set_status(result["mask_version"], "approved", "", "carla")

    queue = review.review_queue("draft", "most uncertain first", 10)
    assert list(queue["mask_version"]) == session.mask_version_ids[::-1]
    with pytest.raises(gr.Error, match="order must be one of"):
        review.review_queue("draft", "random", 10)
    picked = review.pick_from_queue(queue, gr.SelectData(None, {"index": [1, 2], "value": "x"}))
    assert picked == session.mask_version_ids[0]
