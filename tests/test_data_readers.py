"""Dataset readers on small fixtures written in the exact published formats."""

from __future__ import annotations

import json
import logging
import os
import pickle

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from sbanet.data import load_samples
from sbanet.data.rrsisd import IMAGE_DIR, INSTANCES_FILE, REFS_FILE, decode_segmentation, load_refs

RLE_SIZE = 800


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _box(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((RLE_SIZE, RLE_SIZE), bool)
    mask[y0:y1, x0:x1] = True
    return mask


@pytest.fixture(scope="module")
def rrsisd_root(tmp_path_factory):
    """3 images on disk (a 4th referenced but missing), 4 annotations (a 5th referenced but missing)."""
    root = tmp_path_factory.mktemp("rrsisd_data")
    (root / IMAGE_DIR).mkdir(parents=True)
    (root / REFS_FILE).parent.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for n in (1, 2, 3):
        pixels = rng.integers(0, 255, (RLE_SIZE, RLE_SIZE, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / IMAGE_DIR / f"{n:05d}.jpg", quality=90)
    boxes = {10: _box(0, 100, 0, 200), 11: _box(400, 800, 400, 800), 12: _box(50, 60, 700, 790), 13: _box(0, 1, 0, 1)}
    instances = {
        "images": [{"id": n, "file_name": f"{n:05d}.jpg", "height": 800, "width": 800} for n in (1, 2, 3, 4)],
        "annotations": [
            {"id": ann, "image_id": 1 + ann % 3, "categories_id": 1 + ann % 2, "segmentation": [_rle(box)], "area": 0}
            for ann, box in boxes.items()
        ],
        "categories": [{"id": 1, "name": "airplane"}, {"id": 2, "name": "ground track field"}],
    }
    (root / INSTANCES_FILE).write_text(json.dumps(instances))

    def ref(ref_id, ann_id, image_id, split, sentences, category_id=1):
        return {
            "ref_id": ref_id,
            "ann_id": ann_id,
            "image_id": image_id,
            "split": split,
            "file_name": f"{image_id:05d}.jpg",
            "category_id": category_id,
            "sent_ids": [100 * ref_id + k for k in range(len(sentences))],
            "sentences": [
                {"raw": s, "sent": s.lower(), "tokens": s.lower().split(), "sent_id": 100 * ref_id + k}
                for k, s in enumerate(sentences)
            ],
        }

    refs = [
        ref(0, 10, 2, "train", ["The airplane on the top left", "the  white plane\n"]),
        ref(1, 11, 3, "train", ["the large ground track field"], category_id=2),
        ref(2, 12, 1, "test", ["a thin airplane", "the airplane at the top right", "the small plane"]),
        ref(3, 13, 2, "val", ["one pixel"], category_id=2),
        ref(4, 99, 1, "train", ["its annotation is missing"]),
        ref(5, 10, 4, "train", ["its image is missing", "still missing"]),
    ]
    with (root / REFS_FILE).open("wb") as f:
        pickle.dump(refs, f)
    return root, boxes


def test_rrsisd_one_sample_per_sentence_with_masks_and_categories(rrsisd_root, caplog):
    root, boxes = rrsisd_root
    with caplog.at_level(logging.WARNING, logger="sbanet.data.rrsisd"):
        train = load_samples("rrsisd", root, "train")
    assert [s.expression for s in train] == [
        "The airplane on the top left",
        "the white plane",
        "the large ground track field",
    ]
    assert [s.sample_id for s in train] == ["rrsisd/ref-0/sent-0", "rrsisd/ref-0/sent-1", "rrsisd/ref-1/sent-100"]
    assert [s.category for s in train] == ["airplane", "airplane", "ground track field"]
    assert [s.ref_id for s in train] == ["0", "0", "1"]
    assert train[0].image_id == train[1].image_id == "rrsisd/2"
    np.testing.assert_array_equal(train[0].load_mask(), boxes[10])
    np.testing.assert_array_equal(train[2].load_mask(), boxes[11])
    assert train[0].load_mask().dtype == bool
    assert train[0].load_image().shape == (800, 800, 3)
    # skipped refs are counted and reported once
    records = [r for r in caplog.records if "skipped" in r.getMessage()]
    assert len(records) == 1
    message = records[0].getMessage()
    assert "skipped 2 refs (3 sentences): 1 without annotation, 1 without image file" in message

    test = load_samples("rrsisd", root, "test")
    assert len(test) == 3 and {s.split for s in test} == {"test"}
    np.testing.assert_array_equal(test[1].load_mask(), boxes[12])
    val = load_samples("rrsisd", root, "val")
    assert len(val) == 1 and val[0].load_mask().sum() == 1 and val[0].category == "ground track field"


def test_rrsisd_rejects_bad_split_and_missing_files(rrsisd_root, tmp_path):
    root, _ = rrsisd_root
    with pytest.raises(ValueError, match="split must be one of"):
        load_samples("rrsisd", root, "training")
    with pytest.raises(ValueError, match="refs file not found"):
        load_samples("rrsisd", tmp_path, "train")
    with pytest.raises(ValueError, match="unknown dataset"):
        load_samples("coco", root, "train")


class _Exploit:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


class _EvalExploit:
    def __reduce__(self):
        return (eval, ("1 + 1",))


@pytest.mark.parametrize("payload", ["system", "eval", "numpy"])
def test_malicious_or_foreign_pickles_are_refused(tmp_path, payload):
    target = tmp_path / "pwned"
    objects = {
        "system": [{"ref_id": 0, "sentences": _Exploit(target)}],
        "eval": [_EvalExploit()],
        "numpy": [{"ref_id": np.int64(3)}],
    }
    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps(objects[payload]))
    with pytest.raises(ValueError, match="refusing to load"):
        load_refs(path)
    assert not target.exists()


def test_refs_must_be_a_list_of_complete_refs(tmp_path):
    path = tmp_path / "refs.p"
    path.write_bytes(pickle.dumps({"refs": []}))
    with pytest.raises(ValueError, match="list of ref dicts"):
        load_refs(path)
    path.write_bytes(pickle.dumps([{"ref_id": 1, "split": "train"}]))
    with pytest.raises(ValueError, match="lacks the keys"):
        load_refs(path)
    path.write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="cannot read"):
        load_refs(path)


def test_rle_counts_as_str_bytes_list_and_polygons():
    mask = np.zeros((30, 40), bool)
    mask[5:20, 10:35] = True
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    as_bytes = {"size": [30, 40], "counts": rle["counts"]}
    as_str = {"size": [30, 40], "counts": rle["counts"].decode()}
    flat = mask.flatten(order="F").astype(int)
    runs = np.diff(np.flatnonzero(np.diff(np.r_[-1, flat, -1]) != 0))
    uncompressed = {"size": [30, 40], "counts": ([0] if flat[0] else []) + runs.tolist()}
    for segmentation in ([as_bytes], [as_str], as_str, uncompressed):
        np.testing.assert_array_equal(decode_segmentation(segmentation), mask)
    square = decode_segmentation([[10.0, 5.0, 35.0, 5.0, 35.0, 20.0, 10.0, 20.0]], 30, 40)
    assert square.shape == (30, 40) and abs(int(square.sum()) - 15 * 25) <= 60
    with pytest.raises(ValueError, match="need the image height"):
        decode_segmentation([[0.0, 0.0, 5.0, 0.0, 5.0, 5.0]])


def _write_refsegrs(root, suffix=".tif"):
    (root / "images").mkdir()
    (root / "masks").mkdir()
    rng = np.random.default_rng(1)
    masks = {}
    for n in range(4):
        image = rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)
        mask = np.zeros((32, 48), np.uint8)
        mask[n * 4 : n * 4 + 10, 5:30] = 255
        mask[0, 0] = 50  # soft edge values at or below 50 are background
        mask[31, 47] = 51
        Image.fromarray(image).save(root / "images" / f"{n}{suffix}")
        Image.fromarray(mask).save(root / "masks" / f"{n}.tif")
        masks[str(n)] = mask > 50
    (root / "output_phrase_train.txt").write_text("0 road along the river\n1 the  vehicle on the left\n\n7 no files\n")
    (root / "output_phrase_test.txt").write_text("2 the building\n3 vegetation near the road\n")
    return masks


def test_refsegrs_reader(tmp_path, caplog):
    masks = _write_refsegrs(tmp_path)
    with caplog.at_level(logging.WARNING):
        train = load_samples("refsegrs", tmp_path, "train")
    assert [(s.sample_id, s.expression) for s in train] == [
        ("refsegrs/0", "road along the river"),
        ("refsegrs/1", "the vehicle on the left"),
    ]
    assert "skipped 1 of 3 lines" in caplog.text and caplog.text.count("skipped") == 1
    for sample in train:
        mask = sample.load_mask()
        assert mask.dtype == bool
        np.testing.assert_array_equal(mask, masks[sample.ref_id])
        assert not mask[0, 0] and mask[31, 47]
        assert sample.load_image().shape == (32, 48, 3)
    test = load_samples("refsegrs", tmp_path, "test")
    assert [s.expression for s in test] == ["the building", "vegetation near the road"]
    with pytest.raises(ValueError, match="phrase file not found"):
        load_samples("refsegrs", tmp_path, "val")


def test_folder_reader_takes_any_suffix_and_metadata(tmp_path):
    masks = _write_refsegrs(tmp_path, suffix=".png")
    assert load_samples("refsegrs", tmp_path, "test") == []  # RefSegRS images are .tif only
    lines = [{"id": "2", "image": "scene-a", "category": "building"}, {"id": "3", "image": "scene-a"}]
    (tmp_path / "samples_test.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    test = load_samples("folder", tmp_path, "test")
    assert [s.category for s in test] == ["building", None]
    assert test[0].image_id == test[1].image_id == "folder/scene-a"
    np.testing.assert_array_equal(test[1].load_mask(), masks["3"])


def test_malformed_phrase_line(tmp_path):
    _write_refsegrs(tmp_path)
    (tmp_path / "output_phrase_val.txt").write_text("0 fine\n1\n")
    with pytest.raises(ValueError, match=r"output_phrase_val.txt:2"):
        load_samples("refsegrs", tmp_path, "val")
