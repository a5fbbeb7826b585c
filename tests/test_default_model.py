"""The shipped default model (sbanet/assets/sbanet-lite-landcover, v5): it loads offline, segments
water, buildings and roads in the dubai-aerial validation tile (never trained on) far better than
chance, and gets the app's example scenes right. Its GID-MTL classes: tests/test_gid_wordings.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import shared_data
from training_fixtures import single_thread

from sbanet.checkpoint import checkpoint_metadata
from sbanet.data.example_scenes import EXAMPLES, example_scenes, score_scene
from sbanet.data.land_cover import class_cases, decode_label_mask, find_pairs
from sbanet.data.semantic import DUBAI_CLASSES
from sbanet.image import read_image, to_rgb8
from sbanet.inference.confidence import NOTHING_FOUND, ConfidenceThresholds
from sbanet.inference.predictor import Predictor
from sbanet.inference.shipped import SHIPPED_MODEL, default_model_source
from sbanet.training.metrics import mask_iou

# the shipped model's scores on real images: what users see, rerun under emulated CPUs
pytestmark = pytest.mark.numerics

# expression -> (the land-cover class it names, the least mean IoU accepted), in the words
# ("the water", "the buildings", "the roads"). Measured when v5 shipped (float16, whole tile-6
# images where the class covers >= 5 %): water 0.711 (chance 0.443, 8 images), "all buildings"
# 0.512 (chance 0.080, 2 images), roads 0.345 (chance 0.050, 1 image); v4 had 0.746, 0.489, 0.334.
CLASS_EXPRESSIONS = {"the water": ("water", 0.65), "the buildings": ("building", 0.4), "the roads": ("road", 0.28)}
MIN_FRACTION = 0.05  # score a class on an image only where it covers at least this share
PARAPHRASE_GAP = 0.05  # each wording within 0.05 mean IoU of the canonical one
# "nothing found" (the shipped thresholds): at least this share of tile 6's absent classes asked in
# each wording, at most this share of the classes there (>= MIN_FRACTION of the image). Measured
# when v5 shipped: 33 of 78 absent cases (42 %; v4 had 42, 54 %, so v5 was shipped with this
# regression for its gains beyond Dubai, docs/results.md) and few of the present ones; the
# issue's goal (>= 80 % of absent cases "nothing found") is not met.
ABSENT_NOTHING_FOUND, PRESENT_NOTHING_FOUND = 0.38, 0.05


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
    for needle in ("oIoU", "mIoU", "Pr@0.5", "text-blind", "Limitations", "python -m recipes.default_model.train"):
        assert needle in card
    assert metadata.get("val_tile6"), "the checkpoint records its validation metrics"


README_ROWS = {  # README.md's default-model table: row label -> (metadata key, group)
    "whole images, class-level": ("val_tile6_whole", "class-level"),
    "whole images, instance-level": ("val_tile6_whole", "instance-level"),
    "crops, class-level": ("val_tile6", "class-level"),
}


def test_the_readme_shows_the_shipped_numbers():
    """README.md's tile-6 rows are the shipped checkpoint's own metrics (no stale copy after a
    retraining): n and mIoU of each row, against ``config.json``'s metadata."""
    readme = (SHIPPED_MODEL.parents[2] / "README.md").read_text()
    metadata = json.loads((SHIPPED_MODEL / "config.json").read_text())["metadata"]
    for label, (key, group) in README_ROWS.items():
        rows = [line for line in readme.splitlines() if line.startswith(f"| {label}")]
        assert len(rows) == 1, f"README.md needs one row {label!r}"
        cells = [c.strip() for c in rows[0].strip("|").split("|")]
        shipped = metadata[key][group]
        assert int(cells[1]) == shipped["count"], (label, cells)
        assert float(cells[-1]) == round(100 * shipped["mIoU"], 2), (label, cells, shipped["mIoU"])


def test_it_is_the_default_source(monkeypatch):
    monkeypatch.delenv("SBANET_MODEL", raising=False)
    assert default_model_source() == str(SHIPPED_MODEL)


def test_water_buildings_and_roads_on_the_validation_tile(predictor):
    """Whole validation images, as a user uploads them: IoU of "the water" / "the buildings" / "the roads"
    against the land-cover mask, compared with chance (every pixel called the class, whose IoU
    is the class's share of the image): at least the floor, and 0.15 above chance."""
    scores: dict[str, list[tuple[float, float]]] = {e: [] for e in CLASS_EXPRESSIONS}
    names = {e: c for e, (c, _) in CLASS_EXPRESSIONS.items()}
    for _, image, wanted in class_cases(shared_data("dubai-aerial", "tile6"), names, DUBAI_CLASSES, MIN_FRACTION):
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


@pytest.mark.parametrize("name", ["water", "road", "building"])
def test_paraphrases_score_like_the_canonical_wording(predictor, name):
    """Whole tile-6 images where the class covers >= 5 %: each wording people use ("the sea",
    "the streets", "the houses", "the rooftops") scores within PARAPHRASE_GAP of the canonical one
    (mean IoU). v4 met that for water, roads and buildings (largest gaps 0.018, 0.020, 0.025) and
    still depended on the wording for bare land and vegetation ("the open land" 0.10 below "the
    bare land"); v5's spreads on tile 6's class-level cases are all within 5.3 points (its card)."""
    cls = next(c for c in DUBAI_CLASSES if c.name == name)
    wordings = list(cls.paraphrases)
    scores: dict[str, list[float]] = {w: [] for w in wordings}
    for _, image, wanted in class_cases(shared_data("dubai-aerial", "tile6"), {wordings[0]: name}, DUBAI_CLASSES, 0.05):
        truth = wanted[wordings[0]]
        for p in predictor.predict_batch(image, wordings, return_attention=False):
            scores[p.expression].append(mask_iou(p.mask, truth))
    means = {w: float(np.mean(v)) for w, v in scores.items()}
    gaps = {w: round(abs(m - means[wordings[0]]), 3) for w, m in means.items()}
    assert max(gaps.values()) <= PARAPHRASE_GAP, f"{name}: {means}"


def test_absent_classes_are_answered_nothing_found(predictor):
    """Whole tile-6 images: a class with no pixel in the image, asked in each of its wordings, gets
    the verdict "nothing found" (Predictor.judge: the thresholds the checkpoint carries, as the
    app and the API answer) in at least ABSENT_NOTHING_FOUND of the cases, while the classes
    that are there are refused in at most PRESENT_NOTHING_FOUND of theirs."""
    assert predictor.thresholds == ConfidenceThresholds.from_metadata(checkpoint_metadata(SHIPPED_MODEL))
    refused: dict[bool, list[bool]] = {True: [], False: []}  # class there? -> "nothing found" per case
    for _, image_path, mask_path in find_pairs(shared_data("dubai-aerial", "tile6")):
        labels, _ = decode_label_mask(to_rgb8(read_image(mask_path)), DUBAI_CLASSES)
        shares = {c: float((labels == n).mean()) for n, c in enumerate(DUBAI_CLASSES) if c.paraphrases}
        asked = [
            (w, share > 0) for c, share in shares.items() if share == 0 or share >= MIN_FRACTION for w in c.paraphrases
        ]
        predictions = predictor.predict_batch(
            to_rgb8(read_image(image_path)), [w for w, _ in asked], return_attention=False
        )
        for (_, there), prediction in zip(asked, predictions):
            refused[there].append(predictor.judge(prediction).label == NOTHING_FOUND)
    absent, present = (float(np.mean(refused[k])) for k in (False, True))
    assert len(refused[False]) >= 30 and len(refused[True]) >= 100, {k: len(v) for k, v in refused.items()}
    assert absent >= ABSENT_NOTHING_FOUND, f"absent classes answered 'nothing found' in {absent:.1%}"
    assert present <= PRESENT_NOTHING_FOUND, f"present classes refused in {present:.1%}"
