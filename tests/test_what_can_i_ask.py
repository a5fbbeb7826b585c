"""What can I ask? The classes a checkpoint was taught: the app's chips, "not trained on" notes,
and the "not understood" refusal's examples (sbanet.inference.lexicon; handlers against a fake backend)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_app_handlers import FakeBackend

from annotate.app.handlers import SegmentHandlers, add_expression
from annotate.app.ui import build_ui
from sbanet.data.wording import DUBAI_PARAPHRASES, GID_PARAPHRASES
from sbanet.inference.lexicon import (
    Lexicon,
    NotUnderstoodError,
    converter_phrases,
    not_taught_message,
    taught_classes,
    untaught_subject,
)

SHIPPED = Path("sbanet/assets/sbanet-lite-landcover/config.json")
# the metadata blocks recipes.default_model.train writes: categories of the main conversion and of the others
DUBAI_ONLY = {"data": {"categories": {c: 1 for c in DUBAI_PARAPHRASES}}}
WITH_GID = {
    "data": {
        "categories": {c: 1 for c in DUBAI_PARAPHRASES},
        "conversions": {"runs/data/gid-referring-asked-cap10/gid15": {"categories": {"river": 1, "paddy": 1}}},
    }
}


def test_taught_classes_come_from_the_checkpoint_metadata() -> None:
    shipped = taught_classes(json.loads(SHIPPED.read_text())["metadata"])
    # v5: dubai-aerial's five classes and GID-MTL's (gid5 and gid15 label sets)
    assert {"water", "vegetation", "building", "road", "land", "river", "paddy", "industrial"} <= set(shipped)
    assert shipped["water"][: len(DUBAI_PARAPHRASES["water"])] == DUBAI_PARAPHRASES["water"]  # Dubai's first
    assert shipped["river"] == GID_PARAPHRASES["river"]
    mixed = taught_classes(WITH_GID)
    assert mixed["river"] == GID_PARAPHRASES["river"] and "paddy" in mixed
    assert taught_classes({"taught": {"ships": ["the ships"]}}) == {"ships": ("the ships",)}
    assert taught_classes(None) == {} and taught_classes({}) == {}


@pytest.mark.parametrize(
    ("expression", "subject"),
    [
        ("the ships", "ships"),
        ("a purple elephant", "purple elephant"),
        ("the tennis court", "tennis court"),
        ("the river", "river"),  # not taught to a Dubai-only model
        ("the water", None),
        ("all buildings", None),
        ("the largest building", None),  # instance-level phrases are taught with the classes
        ("the small water body next to a road", None),
        ("the road on the left", None),
        ("the houses", None),
        ("the", None),  # no content word: nothing to say
    ],
)
def test_untaught_subject_of_a_dubai_only_model(expression: str, subject: str | None) -> None:
    assert untaught_subject(expression, taught_classes(DUBAI_ONLY)) == subject


def test_untaught_needs_to_know_what_was_taught() -> None:
    assert untaught_subject("the ships", {}) is None  # unknown metadata: never claim "not trained"
    assert untaught_subject("the river", taught_classes(WITH_GID)) is None
    message = not_taught_message("ships", taught_classes(DUBAI_ONLY))
    assert message.startswith("this model was not trained on ships; it knows 'all buildings', 'the bare land'")
    assert "'the water'" in message


def test_not_understood_refusal_names_taught_wordings() -> None:
    tokenizer = type("T", (), {"get_vocab": lambda self: {"water": 1, "river": 2}})()
    lexicon = Lexicon.for_model(tokenizer, taught_classes(WITH_GID))
    with pytest.raises(
        NotUnderstoodError, match=re.escape("e.g. 'all buildings', 'the bare land', 'the roads', 'the vegetation'")
    ):
        lexicon.check("das Wasserxyz")
    with pytest.raises(
        NotUnderstoodError, match=re.escape("e.g. 'the water', 'all buildings'")
    ):  # no metadata: defaults
        Lexicon.for_model(tokenizer).check("🌊🌊")
    assert "paddies" in {w for p in converter_phrases() for w in p.split()}


def test_chips_fill_the_expression_box() -> None:
    assert add_expression("", "the water") == "the water"
    assert add_expression("all buildings\n", "the water") == "all buildings\nthe water"
    assert add_expression("the water", "the water") == "the water"  # not twice
    assert add_expression(None, "the roads") == "the roads"


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    image = np.full((48, 64, 3), (170, 150, 60), np.uint8)
    image[10:30, 20:50] = (20, 40, 230)
    Image.fromarray(image).save(tmp_path / "scene.png")
    return tmp_path / "scene.png"


def test_app_says_the_model_was_not_trained_on_ships(tmp_path: Path, scene: Path) -> None:
    backend = FakeBackend(tmp_path)
    backend.model_metadata = DUBAI_ONLY
    handlers = SegmentHandlers(backend)
    assert list(handlers.taught) == list(DUBAI_PARAPHRASES)
    _, _, _, summary, details, session = handlers.segment(str(scene), "the ships\nthe water", "", 0.5, "ana")
    ships, water = details["results"]
    assert ships["untaught"].startswith("this model was not trained on ships")
    assert water["untaught"] is None
    assert "this model was not trained on ships" in summary
    assert summary.count("not trained on") == 1
    assert session.untaught[0] == ships["untaught"]


def test_without_metadata_the_app_claims_nothing(tmp_path: Path, scene: Path) -> None:
    handlers = SegmentHandlers(FakeBackend(tmp_path))  # no model_metadata at all
    assert handlers.taught == {}
    *_, details, _ = handlers.segment(str(scene), "the ships", "", 0.5, "ana")
    assert details["results"][0]["untaught"] is None


def test_the_segment_tab_offers_the_taught_classes_as_chips(tmp_path: Path) -> None:
    backend = FakeBackend(tmp_path)
    backend.model_metadata = DUBAI_ONLY
    demo = build_ui(backend)
    buttons = {b.value for b in demo.blocks.values() if "sbanet-chip" in (getattr(b, "elem_classes", None) or [])}
    assert buttons == {w[0] for w in DUBAI_PARAPHRASES.values()}


def test_classes_that_share_a_canonical_wording_get_one_chip(tmp_path: Path) -> None:
    """The shipped model (v5) knows GID's cropland and farmland, woodland and forest, both
    answering to "the farmland" / "the forest" first: one chip each, not two."""
    backend = FakeBackend(tmp_path)
    backend.model_metadata = json.loads(SHIPPED.read_text())["metadata"]
    demo = build_ui(backend)
    labels = [b.value for b in demo.blocks.values() if "sbanet-chip" in (getattr(b, "elem_classes", None) or [])]
    assert len(labels) == len(set(labels)) and {"the farmland", "the river", "the water"} <= set(labels)
