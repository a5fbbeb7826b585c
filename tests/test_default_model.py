"""The shipped default model (sbanet/assets/sbanet-lite-dubai): it loads offline, segments water
and buildings in the dubai-aerial validation tile (never trained on) far better than chance, and
gets the app's example scenes right."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import shared_data
from PIL import Image
from training_fixtures import single_thread

from sbanet.data.semantic import DUBAI_CLASSES, decode_label_mask, find_pairs
from sbanet.default_model import SHIPPED_MODEL, default_model_source
from sbanet.examples import EXAMPLES, example_scenes, score_scene
from sbanet.predictor import Predictor
from sbanet.vector import mask_iou

# expression -> (the land-cover class it names, as the converter words class-level referents,
# the least mean IoU accepted). Measured when the model shipped: water 0.67 (chance 0.44),
# buildings 0.32 (chance 0.08), on the tile-6 images where the class covers >= 5 %.
CLASS_EXPRESSIONS = {"the water": ("water", 0.55), "all buildings": ("building", 0.2)}
MIN_FRACTION = 0.05  # score a class on an image only where it covers at least this share


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    if not (SHIPPED_MODEL / "config.json").is_file():
        pytest.fail(f"the shipped default model is missing from {SHIPPED_MODEL}")
    return Predictor.from_pretrained(SHIPPED_MODEL)


def test_the_shipped_checkpoint_is_small_and_complete():
    files = {p.name: p.stat().st_size for p in SHIPPED_MODEL.rglob("*") if p.is_file()}
    assert {"config.json", "model.safetensors", "README.md"} <= set(files)
    assert sum(files.values()) < 30 * 2**20
    metadata = json.loads((SHIPPED_MODEL / "config.json").read_text()).get("metadata", {})
    card = (SHIPPED_MODEL / "README.md").read_text()
    for needle in ("oIoU", "mIoU", "Pr@0.5", "text-blind", "Limitations", "python -m train.default_model"):
        assert needle in card
    assert metadata.get("val_tile6"), "the checkpoint records its validation metrics"


def test_it_is_the_default_source(monkeypatch):
    monkeypatch.delenv("SBANET_MODEL", raising=False)
    assert default_model_source() == str(SHIPPED_MODEL)


def test_water_and_buildings_on_the_validation_tile(predictor):
    """Whole validation images, as a user uploads them: IoU of "the water" / "all buildings"
    against the land-cover mask, compared with chance (every pixel called the class, whose IoU
    is the class's share of the image): at least the floor, and 0.15 above chance."""
    classes = [c.name for c in DUBAI_CLASSES]
    scores: dict[str, list[tuple[float, float]]] = {e: [] for e in CLASS_EXPRESSIONS}
    for _, image_path, mask_path in find_pairs(shared_data("dubai-aerial", "tile6")):
        image = np.asarray(Image.open(image_path).convert("RGB"))
        labels, _ = decode_label_mask(np.asarray(Image.open(mask_path).convert("RGB")), DUBAI_CLASSES)
        masks = {e: labels == classes.index(c) for e, (c, _) in CLASS_EXPRESSIONS.items()}
        wanted = {e: m for e, m in masks.items() if m.mean() >= MIN_FRACTION}
        if not wanted:
            continue
        for p in predictor.predict_batch(image, list(wanted), return_attention=False):
            truth = wanted[p.expression]
            scores[p.expression].append((mask_iou(p.mask, truth), float(truth.mean())))
    for expression, pairs in scores.items():
        name, floor = CLASS_EXPRESSIONS[expression]
        assert pairs, f"no validation image has enough {name}"
        iou, chance = (float(np.mean(v)) for v in zip(*pairs))
        assert iou > floor and iou > chance + 0.15, f"{expression!r}: mean IoU {iou:.3f}, chance {chance:.3f}"


def test_example_scenes_are_segmented_well(predictor):
    assert EXAMPLES, "the app needs example scenes"
    scenes = example_scenes()
    assert len(scenes) == len(EXAMPLES)
    for (seed, expressions), (scene_seed, image, texts) in zip(EXAMPLES, scenes):
        assert scene_seed == seed and texts == list(expressions) and image.dtype == np.uint8
        ious = score_scene(predictor, seed, expressions=list(expressions))
        assert min(ious.values()) > 0.55, f"scene {seed}: {ious}"
