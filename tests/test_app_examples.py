"""The app's shipped examples: small real aerial images that the shipped model segments well."""

from __future__ import annotations

import pytest
from conftest import shared_data
from PIL import Image
from training_fixtures import single_thread

from annotate.app.examples import THUMBNAIL_SIDE, example_inputs
from sbanet.data.example_scenes import AERIAL_EXAMPLES, EXAMPLE_MIN_IOU, score_aerial_example
from sbanet.inference.confidence import NOTHING_FOUND, judge
from sbanet.inference.predictor import Predictor
from sbanet.inference.shipped import SHIPPED_MODEL

MAX_EXAMPLE_BYTES = 150 * 1024


def test_examples_are_small_real_images_with_thumbnails(tmp_path):
    assert 3 <= len(AERIAL_EXAMPLES) <= 4
    assert len({e.expressions for e in AERIAL_EXAMPLES}) >= 3, "varied expressions, not one chip repeated"
    rows = example_inputs(tmp_path)
    for example, row in zip(AERIAL_EXAMPLES, rows):
        assert example.path.stat().st_size <= MAX_EXAMPLE_BYTES
        with Image.open(row.image) as image, Image.open(row.thumbnail) as thumbnail:
            assert image.mode == "RGB" and min(image.size) >= 320
            assert max(thumbnail.size) == THUMBNAIL_SIDE
        assert row.expressions.splitlines() == list(example.expressions)
        assert row.caption == " · ".join(example.expressions)
    assert example_inputs(tmp_path) == rows  # a second start reuses the files


@pytest.mark.slow
def test_the_shipped_model_segments_every_example_well():
    tile6 = shared_data("dubai-aerial")
    if not (SHIPPED_MODEL / "config.json").is_file():
        pytest.fail(f"the shipped default model is missing from {SHIPPED_MODEL}")
    with single_thread():
        predictor = Predictor.from_pretrained(SHIPPED_MODEL)
        for example in AERIAL_EXAMPLES:
            ious = score_aerial_example(predictor, example, tile6)
            assert min(ious.values()) >= EXAMPLE_MIN_IOU, f"{example.filename}: {ious}"
            image = str(example.path)
            for prediction in predictor.predict_batch(image, list(example.expressions), return_attention=False):
                assert judge(prediction).label != NOTHING_FOUND, (example.filename, prediction.expression)
