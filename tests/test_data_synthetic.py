"""Synthetic scenes: deterministic, plausible, and every expression true and unambiguous."""

from __future__ import annotations

import json
import re
from collections import Counter

import numpy as np
import pytest

from sbanet.data import load_samples
from sbanet.data.expressions import ExpressionConfig, Noun, Region, describe
from sbanet.data.synthetic import (
    ROOFS,
    VEHICLES,
    _streams,
    make_scene,
    render_scene,
    scene_layout,
    scene_seed,
    synthetic_samples,
)

SIZE = 224
SEEDS = range(12)


@pytest.fixture(scope="module")
def scenes():
    return {seed: make_scene(seed, SIZE) for seed in SEEDS}


def test_deterministic_by_seed(scenes):
    image, refs = make_scene(3, SIZE)
    np.testing.assert_array_equal(image, scenes[3][0])
    assert [r.expression for r in refs] == [r.expression for r in scenes[3][1]]
    np.testing.assert_array_equal(render_scene(3, SIZE), image)
    assert not np.array_equal(scenes[4][0], image)
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8


def test_every_expression_names_exactly_one_target(scenes):
    for _, refs in scenes.values():
        by_text: dict[str, np.ndarray] = {}
        for ref in refs:
            assert ref.mask.shape == (SIZE, SIZE) and ref.mask.dtype == bool and ref.mask.any()
            assert ref.expression == " ".join(ref.expression.split()) and ref.expression.islower()
            if ref.expression in by_text:  # the same words never name two different regions
                np.testing.assert_array_equal(by_text[ref.expression], ref.mask)
            by_text[ref.expression] = ref.mask


def test_the_language_is_varied(scenes):
    rules = Counter(r.rule.split("+")[0] if "+" in r.rule else r.rule for _, refs in scenes.values() for r in refs)
    for rule in ("class", "colour", "colour-group", "position", "extreme", "size", "relation", "half-group"):
        assert rules[rule] > 0, rules
    assert any(r.rule.startswith("colour+") for _, refs in scenes.values() for r in refs)
    texts = {r.expression for _, refs in scenes.values() for r in refs}
    assert {"the water", "all buildings"} & texts and len(texts) > 100


def _objects(seed):
    layout, _, _ = _streams(seed)
    return scene_layout(layout, SIZE)


def test_phrases_are_true_against_the_layout(scenes):
    checked = Counter()
    for seed, (image, refs) in scenes.items():
        objects = _objects(seed)
        for ref in refs:
            same = [o for o in objects if o.category == ref.category]
            target = [o for o in same if (o.mask & ref.mask).any()]
            text = ref.expression
            if ref.rule == "class":  # the whole class
                np.testing.assert_array_equal(ref.mask, np.logical_or.reduce([o.mask for o in same]))
                checked["class"] += 1
            elif ref.rule == "colour":
                (obj,) = target
                colour = re.search(r"the (\w+) ", text).group(1)
                assert obj.attributes["colour"] == colour
                assert sum(o.attributes["colour"] == colour for o in same) == 1
                palette = ROOFS if ref.category == "building" else VEHICLES
                # the painted pixels have that colour (rendering matches the words)
                painted = np.median(image[ref.mask].astype(int), axis=0)
                distance = {name: np.abs(painted - np.array(rgb)).sum() for name, rgb in palette.items()}
                assert min(distance, key=distance.get) == colour
                checked["colour"] += 1
            elif ref.rule == "size" and ("largest" in text or "biggest" in text):
                (obj,) = target
                others = [o.mask.sum() for o in same if o is not obj]
                assert obj.mask.sum() >= 1.5 * max(others)
                checked["size"] += 1
            elif ref.rule == "position" and ("top left" in text or "upper left" in text):
                ys, xs = np.nonzero(ref.mask)
                assert ys.mean() < SIZE / 3 and xs.mean() < SIZE / 3
                checked["position"] += 1
            elif ref.rule == "relation" and ("next to the water" in text or "beside the water" in text):
                (obj,) = target
                water = np.logical_or.reduce([o.mask for o in objects if o.category == "water"])
                wy, wx = np.nonzero(water)
                oy, ox = np.nonzero(obj.mask)
                gap = np.sqrt((oy[:, None] - wy[None, ::7]) ** 2 + (ox[:, None] - wx[None, ::7]) ** 2).min()
                assert gap <= 0.03 * SIZE + 2
                checked["relation"] += 1
    assert checked["class"] and checked["colour"] and checked["size"] and checked["position"], checked


def _square(y0, x0, size=20, shape=(100, 100)):
    mask = np.zeros(shape, bool)
    mask[y0 : y0 + size, x0 : x0 + size] = True
    return mask


NOUNS = {"building": Noun("building", "buildings"), "water": Noun("pond", "ponds", "water")}


def _texts(regions, **cfg):
    refs = describe(regions, NOUNS, np.random.default_rng(0), config=ExpressionConfig(max_per_referent=99, **cfg))
    return {r.expression: r for r in refs}


def _find(texts, *phrases):
    """The referent of whichever phrasing variant was chosen (KeyError if none was said)."""
    for phrase in phrases:
        if phrase in texts:
            return texts[phrase]
    raise KeyError(phrases)


def test_ambiguous_phrases_are_never_said():
    # two red buildings: "the red building" is ambiguous; a blue one is unique
    regions = [
        Region("building", _square(5, 5), {"colour": "red"}),
        Region("building", _square(70, 70), {"colour": "red"}),
        Region("building", _square(5, 75), {"colour": "blue"}),
    ]
    texts = _texts(regions)
    assert "the red building" not in texts and "the blue building" in texts
    assert _find(texts, "all red buildings", "the red buildings").members == (0, 1)
    assert _find(texts, "the building in the top left", "the building in the upper left corner").members == (0,)
    bottom_right = ("the red building in the bottom right", "the red building in the lower right corner")
    assert _find(texts, *bottom_right).members == (1,)
    # a centroid on the line between two thirds is borderline: only its (clear) side is said
    borderline = [Region("building", _square(23, 5)), Region("building", _square(70, 70))]
    said = {t for t, r in _texts(borderline).items() if r.rule == "position" and r.members == (0,)}
    assert said and said <= {"the building on the left", "the building on the left side"}


def test_size_relation_and_class_rules():
    pond = Region("water", _square(40, 40, 20))
    big, small, far = _square(0, 0, 30), _square(62, 45, 8), _square(85, 85, 10)
    texts = _texts([Region("building", big), Region("building", small), Region("building", far), pond])
    assert _find(texts, "the largest building", "the biggest building").members == (0,)
    assert _find(texts, "the building next to the water", "the building beside the water").members == (1,)
    water = _find(texts, "the water", "all the water")
    assert water.rule == "class"
    np.testing.assert_array_equal(water.mask, pond.mask)
    buildings = _find(texts, "all buildings", "the buildings", "every building")
    np.testing.assert_array_equal(buildings.mask, big | small | far)
    # similar sizes: no superlative
    similar = [Region("building", _square(0, 0, 20)), Region("building", _square(60, 60, 22))]
    assert not any("largest" in t or "smallest" in t for t in _texts(similar))


def test_synthetic_samples_and_registry():
    samples = synthetic_samples(None, "val", n_images=3, seed=7, size=SIZE)
    assert len({s.image_id for s in samples}) == 3 and {s.split for s in samples} == {"val"}
    assert len({s.sample_id for s in samples}) == len(samples)
    first = [s for s in samples if s.image_id == samples[0].image_id]
    image = first[0].load_image()
    assert image.shape == (SIZE, SIZE, 3)
    for sample in first:
        mask = sample.load_mask()
        assert mask.shape == (SIZE, SIZE) and mask.dtype == bool and mask.any()
    same = load_samples("synthetic", None, "val", n_images=3, seed=7, size=SIZE)
    assert [s.expression for s in same] == [s.expression for s in samples]
    train = load_samples("synthetic", None, "train", n_images=3, seed=7, size=SIZE)
    assert not np.array_equal(train[0].load_image(), image)  # splits never share scenes
    with pytest.raises(ValueError, match="size"):
        make_scene(0, 32)


def test_cli_writes_a_folder_dataset_and_benchmarks(tmp_path, capsys):
    from sbanet.data.synthetic import main

    main(["--output", str(tmp_path / "examples"), "--n-images", "2", "--size", "96", "--split", "test"])
    samples = load_samples("folder", tmp_path / "examples", "test")
    expected = [r.expression for i in range(2) for r in make_scene(scene_seed(0, "test", i), 96)[1]]
    assert [s.expression for s in samples] == expected
    assert len({s.image_id for s in samples}) == 2 and all(s.category for s in samples)
    main(["--bench", "2", "--size", "96", "--json", str(tmp_path / "bench.json")])
    assert "make_scene" in capsys.readouterr().out
    assert json.loads((tmp_path / "bench.json").read_text())["scenes"] == 2
