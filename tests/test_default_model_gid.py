"""The shipped default model (v5) on GID-MTL's val images (every 10th image of each gid15 scene
folder, never trained on), asked for GID's classes in the wordings people use, and for classes
the image does not hold (the absent-class rule).

Only images where a class covers 5-60 % are scored for it: on GID's 224 px crops a class often
fills most of the image, and there answering with the whole image is already right, so those
cases say nothing about whether the words were understood."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import shared_data
from training_fixtures import single_thread

from sbanet.data.gid import LABEL_SETS, gid_pairs, gid_split, read_labels
from sbanet.image import read_image, to_rgb8
from sbanet.inference.confidence import NOTHING_FOUND
from sbanet.inference.predictor import Predictor
from sbanet.inference.shipped import SHIPPED_MODEL
from sbanet.training.metrics import mask_iou

pytestmark = pytest.mark.numerics  # the shipped model's scores on real images, rerun under emulated CPUs

SHARE = (0.05, 0.60)  # a class is scored where it covers this share of the image
# class -> the least margin of its canonical wording's mean IoU over the all-foreground mask (its
# share). Measured when v5 shipped (69 val images, one thread): river 0.592 vs 0.223 (3 images),
# industrial area 0.435 vs 0.262 (9), houses 0.338 vs 0.184 (13). Farmland (0.283 vs 0.240), the
# roads (0.204 vs 0.171) and the paddy fields (0.275 vs 0.289) are not yet above it: not tested.
ABOVE_CHANCE = {"river": 0.25, "industrial": 0.1, "residential": 0.1}
WORDING_GAP = 0.06  # each other wording's mean IoU within this of the canonical one's
# wordings that fall behind their class's canonical one when v5 shipped: "the canal" 0.300 (the
# river 0.592), "the industrial land" 0.300 (the industrial area 0.435)
WEAK_WORDINGS = {"the canal", "the industrial land"}
# "nothing found" on GID (the checkpoint's thresholds, fitted on Dubai tile 6): measured when v5
# shipped, 21 of 207 absent classes asked (10 %; of all 684 absent cases, 81: 12 %; the issue's
# goal is 80 %) and 11 of 67 present ones in the 5-60 % band (16 %; the goal is at most 5 %).
# Guards against falling further.
ABSENT_NOTHING_FOUND, PRESENT_NOTHING_FOUND = 0.07, 0.25
ABSENT_PER_IMAGE = 3


@pytest.fixture(scope="module")
def answers() -> dict[str, list]:
    """Every val image of gid15 asked for each class in the 5-60 % band (in each of its wordings
    for the classes of :data:`ABOVE_CHANCE`, else the canonical one) and for
    :data:`ABSENT_PER_IMAGE` of its absent classes in their canonical wording: ``{"scores":
    [(class, wording, IoU, share)], "absent": [nothing found?], "present": [nothing found?]}``."""
    root = shared_data("gid-mtl")
    classes, merge = LABEL_SETS["gid15"]
    pairs = gid_pairs(root, "gid15")
    split = gid_split(pairs)
    predictor = Predictor.from_pretrained(SHIPPED_MODEL)
    out: dict[str, list] = {"scores": [], "absent": [], "present": []}
    seen = 0  # val images so far
    with single_thread():
        for _, image_path, label_path in pairs:
            if split[image_path] != "val":
                continue
            labels = read_labels(label_path, merge)
            asked, absent = [], []  # (class, wording, truth or None); the classes with no pixel
            for index, cls in enumerate(classes):
                share = float((labels == index).mean())
                if cls.paraphrases and SHARE[0] <= share <= SHARE[1]:
                    wordings = cls.paraphrases if cls.name in ABOVE_CHANCE else cls.paraphrases[:1]
                    asked += [(cls.name, wording, labels == index) for wording in wordings]
                elif cls.paraphrases and share == 0:
                    absent.append(cls)
            # three absent classes per image, a different three from image to image (all of them
            # would be ten per image and triple the test's time for the same rate)
            absent = [absent[(seen + k) % len(absent)] for k in range(min(ABSENT_PER_IMAGE, len(absent)))]
            asked += [(cls.name, cls.paraphrases[0], None) for cls in absent]
            seen += 1
            image = to_rgb8(read_image(image_path))
            predictions = predictor.predict_batch(image, [w for _, w, _ in asked], return_attention=False)
            for (name, wording, truth), prediction in zip(asked, predictions):
                refused = predictor.judge(prediction).label == NOTHING_FOUND
                if truth is None:
                    out["absent"].append(refused)
                    continue
                canonical = next(c for c in classes if c.name == name).paraphrases[0]
                if wording == canonical:
                    out["present"].append(refused)
                out["scores"].append((name, wording, mask_iou(prediction.mask, truth), float(truth.mean())))
    return out


def _mean(scores: list, name: str, wording: str, column: int = 2) -> float:
    values = [row[column] for row in scores if row[0] == name and row[1] == wording]
    return float(np.mean(values)) if values else float("nan")


@pytest.mark.parametrize("name", sorted(ABOVE_CHANCE))
def test_gid_classes_beat_the_whole_image_where_they_cover_part_of_it(answers, name):
    classes, _ = LABEL_SETS["gid15"]
    canonical = next(c for c in classes if c.name == name).paraphrases[0]
    iou, chance = (_mean(answers["scores"], name, canonical, column) for column in (2, 3))
    assert iou - chance >= ABOVE_CHANCE[name], f"{canonical!r}: mean IoU {iou:.3f}, all-foreground {chance:.3f}"


@pytest.mark.parametrize("name", sorted(ABOVE_CHANCE))
def test_gid_wordings_score_like_the_canonical_one(answers, name):
    classes, _ = LABEL_SETS["gid15"]
    wordings = next(c for c in classes if c.name == name).paraphrases
    means = {w: _mean(answers["scores"], name, w) for w in wordings}
    gaps = {w: round(means[wordings[0]] - m, 3) for w, m in means.items() if w not in WEAK_WORDINGS}
    assert max(gaps.values()) <= WORDING_GAP, f"{name}: {means}"


def test_gid_absent_classes_are_answered_nothing_found_more_often_than_present_ones(answers):
    absent, present = (float(np.mean(answers[k])) for k in ("absent", "present"))
    assert len(answers["absent"]) >= 150 and len(answers["present"]) >= 40
    assert absent >= ABSENT_NOTHING_FOUND, f"absent GID classes answered 'nothing found' in {absent:.1%}"
    assert present <= PRESENT_NOTHING_FOUND, f"present GID classes refused in {present:.1%}"
