"""Land-cover -> referring conversion on a hand-made palette dataset and on a real Dubai tile."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import numpy as np
import pytest
from conftest import shared_data
from PIL import Image

from sbanet.data import load_samples
from sbanet.data.land_cover import LandCoverClass, class_cases, decode_label_mask, load_palette
from sbanet.data.semantic import REPORT_FILE, ConversionConfig, convert, crop_boxes, fill_ratio, main
from sbanet.data.writer import FolderWriter

RED, BLUE, GREY, NEAR_RED, BLACK = (255, 0, 0), (0, 0, 255), (128, 128, 128), (250, 6, 4), (0, 0, 0)
PALETTE = [
    {"name": "house", "rgb": RED, "singular": "house", "plural": "houses", "irregular": {"singular": "house block"}},
    {"name": "lake", "rgb": BLUE, "singular": "lake", "plural": "lakes", "mass": "water"},
    {"name": "void", "rgb": GREY},
]


def _scene(variant: int):
    """120 x 120: a big house top left, a small one bottom right, an L-shaped one bottom left,
    a lake on the right; a few off-palette pixels."""
    mask = np.zeros((120, 120, 3), np.uint8)
    mask[...] = GREY
    mask[5:35, 5:35] = RED
    mask[100:110, 100:110] = RED
    mask[80:112, 4:12] = RED  # an L: vertical bar + foot
    mask[104:112, 4:40] = RED
    mask[40:70, 85:115] = BLUE
    mask[50, 50] = NEAR_RED  # JPEG-like noise near a palette colour -> that class
    mask[60, 60] = BLACK  # far from every colour -> unlabeled
    rng = np.random.default_rng(variant)
    image = (mask.astype(int) // 2 + rng.integers(0, 60, mask.shape)).astype(np.uint8)
    return image, mask


@pytest.fixture(scope="module")
def palette_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("landcover")
    for group, variant in (("tile1", 1), ("tile2", 2)):
        (root / group).mkdir()
        image, mask = _scene(variant)
        Image.fromarray(image).save(root / group / "part_001.jpg", quality=95)
        Image.fromarray(mask).save(root / group / "part_001_mask.png")
    (root / "palette.json").write_text(json.dumps(PALETTE))
    return root


def test_decode_label_mask_maps_off_palette_pixels():
    _, mask = _scene(0)
    classes = [LandCoverClass("house", RED), LandCoverClass("lake", BLUE), LandCoverClass("void", GREY)]
    labels, off = decode_label_mask(mask, classes, tolerance=20)
    assert labels[10, 10] == 0 and labels[50, 50] == 0  # near-red -> house
    assert labels[45, 100] == 1 and labels[60, 60] == -1 and labels[0, 0] == 2
    assert off == {NEAR_RED: (1, 0), BLACK: (1, -1)}


def test_class_cases_keep_the_classes_that_cover_enough(palette_dataset):
    classes = load_palette(palette_dataset / "palette.json")
    # house: 30x30 + 10x10 + the L (8x32 + 28x8) = 1480 of 14400 pixels (+ 1 near-red) ~ 10.3 %;
    # lake: 30x30 = 6.25 %
    cases = list(class_cases(palette_dataset / "tile1", {"the houses": "house", "the lake": "lake"}, classes, 0.08))
    assert len(cases) == 1
    path, image, truth = cases[0]
    assert path.name == "part_001.jpg" and image.shape == (120, 120, 3) and image.dtype == np.uint8
    assert list(truth) == ["the houses"] and truth["the houses"].sum() == 1481
    assert list(class_cases(palette_dataset / "tile1", {"the lake": "lake"}, classes, 0.07)) == []
    with pytest.raises(ValueError, match="not in the palette"):
        next(class_cases(palette_dataset, {"the roads": "road"}, classes))


def test_crop_boxes_and_fill_ratio():
    assert crop_boxes(100, 100, 0) == [(0, 100, 0, 100)]
    boxes = crop_boxes(1058, 1126, 512)
    assert len(boxes) == 4 and boxes[-1] == (529, 1058, 563, 1126)
    assert sum((y1 - y0) * (x1 - x0) for y0, y1, x0, x1 in boxes) == 1058 * 1126
    square = np.zeros((50, 50), bool)
    square[10:30, 10:30] = True
    assert fill_ratio(square) > 0.95
    ell = np.zeros((50, 50), bool)
    ell[5:45, 5:12] = True
    ell[38:45, 5:45] = True
    assert fill_ratio(ell) < 0.5


def test_convert_palette_dataset(palette_dataset, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--input", str(palette_dataset), "--output", str(out), "--palette", str(palette_dataset / "palette.json")]
    report = main([*argv, "--crop", "0", "--val-tiles", "2", "--colour-tolerance", "20"])
    printed = capsys.readouterr().out
    assert "rule" in printed and "class" in printed and "2 of rgb(250, 6, 4) -> house" in printed
    assert "2 of rgb(0, 0, 0) -> unlabeled" in printed
    assert json.loads((out / REPORT_FILE).read_text()) == report
    assert report["images"] == 2 and report["crops"] == 2
    assert sum(report["rules"].values()) == report["samples"] == sum(report["samples_per_split"].values())
    assert set(report["samples_per_split"]) == {"train", "val"}

    train = load_samples("folder", out, "train")
    val = load_samples("folder", out, "val")
    assert len(train) + len(val) == report["samples"]
    by_text = {s.expression: s for s in train}
    _, mask = _scene(1)
    house = (mask == RED).all(-1) | (mask == NEAR_RED).all(-1)
    water = by_text.get("the water") or by_text["all the water"]
    np.testing.assert_array_equal(water.load_mask(), (mask == BLUE).all(-1))
    assert water.category == "lake"
    houses = next(s for t, s in by_text.items() if t in ("all houses", "the houses", "every house"))
    np.testing.assert_array_equal(houses.load_mask(), house)
    largest = by_text.get("the largest house") or by_text["the biggest house"]
    expected = np.zeros_like(house)
    expected[5:35, 5:35] = True
    np.testing.assert_array_equal(largest.load_mask(), expected)
    # the L-shaped footprint is named by its irregular noun, the small square as a house
    assert any("house block" in t for t in by_text)
    assert not any(t.endswith("house block") and "largest" in t for t in by_text)
    # the samples of one crop share one image file (hard links) and one image id
    assert len({s.image_id for s in train}) == 1
    files = {os.stat(out / "images" / f"{s.ref_id}.png").st_ino for s in train}
    assert len(files) == 1 or os.name == "nt"
    assert train[0].load_image().shape == (120, 120, 3)
    # deterministic
    config = ConversionConfig(crop=0, colour_tolerance=20, val_groups=("2",))
    again = convert(palette_dataset, tmp_path / "again", config, load_palette(palette_dataset / "palette.json"))
    assert (tmp_path / "again" / "output_phrase_train.txt").read_text() == (out / "output_phrase_train.txt").read_text()
    assert again["rules"] == report["rules"]


def test_refuses_a_non_empty_output_and_bad_input(palette_dataset, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        convert(palette_dataset, tmp_path / "out")
    with pytest.raises(ValueError, match="no <name>"):
        convert(tmp_path / "out", tmp_path / "elsewhere")
    with pytest.raises(SystemExit):
        main(["--input", str(tmp_path / "missing"), "--output", str(tmp_path / "o2")])


def test_writer_validates(tmp_path):
    with FolderWriter(tmp_path / "w") as writer:
        image = np.zeros((8, 8, 3), np.uint8)
        with pytest.raises(ValueError, match="differ in size"):
            writer.add("train", "a", "img", image, np.zeros((4, 4), bool), "x")
        with pytest.raises(ValueError, match="without spaces"):
            writer.add("train", "a b", "img", image, np.zeros((8, 8), bool), "x")
    with pytest.raises(ValueError, match="image_format"):
        FolderWriter(tmp_path / "v", image_format="gif")


def test_one_real_dubai_tile(tmp_path):
    tile = shared_data("dubai-aerial", "tile2")
    source = tmp_path / "in" / "tile2"
    source.mkdir(parents=True)
    for part in ("001", "004", "007"):  # three of its nine 509 x 544 images (links, not copies)
        for name in (f"image_part_{part}.jpg", f"image_part_{part}_mask.png"):
            (source / name).symlink_to(tile / name)
    report = convert(source.parent, tmp_path / "out", ConversionConfig(val_groups=("2",)))
    assert report["images"] == 3 and report["samples_per_split"].keys() == {"val"}
    assert report["rules"]["class"] >= 3 and report["samples"] > 15
    assert {"building", "road", "land"} <= set(report["categories"])
    samples = load_samples("folder", tmp_path / "out", "val")
    assert len(samples) == report["samples"]
    for sample in samples[:: max(1, len(samples) // 10)]:
        mask = sample.load_mask()
        assert mask.any() and mask.shape == sample.load_image().shape[:2]


def test_paraphrases_and_absent_class_negatives(palette_dataset, tmp_path):
    palette = [
        {**PALETTE[0], "paraphrases": ["all houses", "the homes", "the dwellings"]},
        {**PALETTE[1], "paraphrases": ["the water", "the pond", "the lake"]},
        PALETTE[2],
    ]
    (tmp_path / "palette.json").write_text(json.dumps(palette))
    classes = load_palette(tmp_path / "palette.json")
    assert classes[1].paraphrases == ("the water", "the pond", "the lake")
    config = ConversionConfig(crop=40, val_groups=("2",), colour_tolerance=20, paraphrases=True, negatives=1)
    report = convert(palette_dataset, tmp_path / "out", config, classes)
    samples = load_samples("folder", tmp_path / "out", "train")
    rules = {json.loads(line)["id"]: json.loads(line) for line in (tmp_path / "out" / "samples_train.jsonl").open()}
    class_level = [s for s in samples if rules[s.ref_id]["rule"] == "class"]
    assert class_level and {s.expression for s in class_level} <= set(classes[0].paraphrases + classes[1].paraphrases)
    absent = [s for s in samples if rules[s.ref_id]["rule"] == "absent"]
    # the lake lies in the right third only: crops elsewhere ask for it and expect nothing
    assert absent and report["rules"]["absent"] == len(absent) + report["rules_per_split"]["val"].get("absent", 0)
    for sample in absent:
        assert not sample.load_mask().any()
        assert sample.expression in classes[1].paraphrases + classes[0].paraphrases
    # off by default: the conversion is the one before either option existed
    plain = convert(palette_dataset, tmp_path / "plain", ConversionConfig(crop=40, colour_tolerance=20), classes)
    assert "absent" not in plain["rules"]
    with pytest.raises(ValueError, match="negatives"):
        convert(palette_dataset, tmp_path / "bad", ConversionConfig(negatives=-1), classes)


def test_negative_share_caps_each_class_empty_targets(palette_dataset, tmp_path):
    """``negative_share``: of the training samples naming a class at class level, at most that
    share has an empty target (counted over the crops so far), so no class learns "nothing" as its
    usual answer; the val split keeps every absent case (it is what "not found" is scored on)."""
    classes = load_palette(palette_dataset / "palette.json")
    base = ConversionConfig(crop=40, val_groups=("2",), colour_tolerance=20, negatives=2)
    uncapped = convert(palette_dataset, tmp_path / "all", base, classes)
    capped = convert(palette_dataset, tmp_path / "cap", replace(base, negative_share=0.2), classes)
    assert 0 < capped["rules"]["absent"] < uncapped["rules"]["absent"]
    for name, counts in capped["class_level_train"].items():
        assert counts["empty"] <= 0.2 * counts["named"], (name, counts)
    lake = uncapped["class_level_train"]["lake"]
    assert lake["empty"] > 0.2 * lake["named"]  # the fixture's lake is absent from most crops
    assert capped["rules_per_split"]["val"]["absent"] == uncapped["rules_per_split"]["val"]["absent"]
    # 1.0 (the default) is no cap: the same conversion as before the option existed
    same = convert(palette_dataset, tmp_path / "same", replace(base, negative_share=1.0), classes)
    assert same["rules"] == uncapped["rules"]
    with pytest.raises(ValueError, match="negative_share"):
        convert(palette_dataset, tmp_path / "bad", replace(base, negative_share=1.5), classes)


def test_dubai_classes_have_five_paraphrases_each():
    from sbanet.data.semantic import DUBAI_CLASSES

    named = [c for c in DUBAI_CLASSES if c.noun is not None]
    assert {c.name for c in named} == {"building", "land", "road", "vegetation", "water"}
    for cls in named:
        assert len(set(cls.paraphrases)) >= 5, cls.name
