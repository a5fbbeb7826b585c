"""The Segment tab's ground sampling distance field: parsing, the choice per upload, and the
result saying at which scale the model ran."""

from __future__ import annotations

import gradio as gr
import numpy as np
import pytest
from conftest import shared_data
from PIL import Image

from annotate.app.backend import ModelRef
from annotate.app.handlers import SegmentHandlers
from annotate.app.inputs import DecodedUploads
from annotate.app.scale import OFF, choose_scale, parse_field
from annotate.store.text import markdown_text
from sbanet.inference.gsd import TrainingGSD
from sbanet.inference.predictor import Predictor

TRAINING = TrainingGSD(1.7, "test")


class TinyBackend:
    """The parts of :class:`annotate.app.backend.Backend` that ``run_model`` uses, over a real predictor."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor

    @property
    def training_gsd(self) -> TrainingGSD | None:
        return self.predictor.training_gsd

    def predict(self, image, expressions, threshold=0.5, gsd=None):
        predictions = self.predictor.predict_batch(image, expressions, threshold=threshold, gsd=gsd)
        return predictions, ModelRef(None, "tiny")


@pytest.mark.parametrize(
    "text, expected", [("0.5", 0.5), (" 0.3 m/px", 0.3), ("2m", 2.0), ("auto", "auto"), ("OFF", OFF), ("", OFF)]
)
def test_the_field_reads_numbers_auto_and_off(text, expected):
    assert parse_field(text) == expected


@pytest.mark.parametrize("text", ["-1", "0", "abc", "1e9"])
def test_a_bad_field_is_a_value_error(text):
    with pytest.raises(ValueError, match="ground sampling distance"):
        parse_field(text)


def test_auto_reads_a_geotiffs_gsd_and_a_plain_image_states_none(tmp_path):
    uploads = DecodedUploads()
    geotiff = uploads.load(shared_data("spacenet-sample", "sample_geotiff.tif"))
    choice = choose_scale(geotiff, "auto", TRAINING)
    assert choice.gsd == (0.5, 0.5) and "EPSG:32616" in choice.note
    degrees = choose_scale(uploads.load(shared_data("spacenet-sample", "road_mask_input.tif")), "auto", TRAINING)
    assert degrees.gsd[0] == pytest.approx(0.2997, abs=1e-3) and "degrees" in degrees.note
    assert choose_scale(geotiff, "", TRAINING).gsd is None  # blank: as always
    assert choose_scale(geotiff, "auto", None).gsd is None  # a model without a training GSD
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "plain.png")
    plain = uploads.load(tmp_path / "plain.png")
    assert "states no GSD" in choose_scale(plain, "auto", TRAINING).note
    assert choose_scale(plain, "0.25", TRAINING).gsd == (0.25, 0.25)
    with pytest.raises(ValueError, match="records no training GSD"):
        choose_scale(plain, "0.25", None)


def test_the_result_says_which_scale_was_used(tiny_model, tokenizer, tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "scene.png")
    predictor = Predictor(tiny_model, tokenizer, fast=False, training_gsd=TRAINING)
    handlers = SegmentHandlers(TinyBackend(predictor))
    _, summary, session = handlers.run_model(str(tmp_path / "scene.png"), "the pond", "", 0.5, None, "0.5")
    assert session.predictions[0].mask.shape == (60, 80)
    expected = "scale: 0.5 m/px as typed; image 0.50 m/px, model 1.70 m/px: resampled x0.29 (60x80 -> 18x24)"
    assert session.scale == expected
    assert markdown_text(expected) in summary  # escaped: a CRS named by the file is user text
    _, summary, session = handlers.run_model(str(tmp_path / "scene.png"), "the pond", "", 0.5)
    assert "resampling to the training GSD is off" in session.scale and session.predictions[0].scale is None
    assert "resampling to the training GSD is off" in summary
    with pytest.raises(gr.Error, match="metres per pixel"):
        handlers.run_model(str(tmp_path / "scene.png"), "the pond", "", 0.5, None, "-3")
