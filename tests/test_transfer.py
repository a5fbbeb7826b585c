"""Import / export: RefSegRS, PNG folder, RRSIS-D, COCO and GeoTIFF; export then re-import gives
identical expressions and masks."""

from __future__ import annotations

import hashlib
import io
import json
from functools import partial

import numpy as np
import pytest
from store_backends import png_bytes

from annotate import make_store
from annotate.store import repository as repo
from annotate.store import runs
from annotate.store.cli import main as cli
from annotate.store.export import export_store
from annotate.store.transfer import export_items, import_dataset, import_samples, sample_image_file
from sbanet.data import ReferringSample


def _geotiff_bytes() -> bytes:
    from rasterio.io import MemoryFile
    from rasterio.transform import from_origin

    profile = dict(driver="GTiff", width=36, height=28, count=4, dtype="uint16", crs="EPSG:32631",
                   transform=from_origin(600000.0, 5700000.0, 2.0, 2.0))  # fmt: skip
    with MemoryFile() as memory:
        with memory.open(**profile) as dst:
            dst.write(np.random.default_rng(7).integers(1, 2046, (4, 28, 36), dtype=np.uint16))
        return memory.read()


def _jpeg_bytes() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(8).integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def _box(shape, y0, y1, x0, x1) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[y0:y1, x0:x1] = True
    return mask


@pytest.fixture
def store(tmp_path):
    """3 images (PNG, JPEG, georeferenced 16-bit 4-band GeoTIFF), 6 expressions over 3 splits; two
    expressions of one image share a mask; one mask was corrected; one newer draft is pending."""
    store = make_store(f"sqlite:///{tmp_path / 'source.sqlite'}", tmp_path / "source")
    with store.Session.begin() as s:
        model = runs.add_model_version(s, name="base", checkpoint="/ckpt", preset="sbanet_tiny")
        png = repo.add_image(s, store.files, png_bytes(24, 32, seed=3), "roofs.png")
        jpg = repo.add_image(s, store.files, _jpeg_bytes(), "field.jpg")
        geo = repo.add_image(s, store.files, _geotiff_bytes(), "scene.tif")

        def sample(image, text, split, category, mask, status="accepted"):
            e = repo.add_expression(s, image.id, text, author="ana", split=split, category=category)
            repo.add_mask_version(s, e.id, mask, kind="correction", author="ana", status=status)
            return e

        shared = _box((24, 32), 2, 9, 3, 20)
        sample(png, "the red roof", "train", "building", shared)
        sample(png, "the roof at the top", "train", "building", shared)
        sample(png, "the bottom right corner", "val", "land", _box((24, 32), 15, 24, 20, 32))
        fixed = sample(jpg, "the field", "test", "land", _box((30, 40), 0, 30, 0, 10))
        v = repo.latest_mask(s, fixed.id)
        repo.add_mask_version(s, fixed.id, _box((30, 40), 0, 30, 0, 12), kind="correction", author="bo",
                              parent_id=v.id, status="accepted")  # fmt: skip
        repo.add_mask_version(
            s, fixed.id, _box((30, 40), 0, 5, 0, 5), kind="prediction", author="model", model_version_id=model.id
        )  # fmt: skip  (a newer draft: not accepted)
        sample(geo, "the pond", "train", "water", _box((28, 36), 10, 20, 5, 30))
        sample(geo, "the road on the left", "val", "road", _box((28, 36), 0, 28, 0, 3))
    yield store
    store.close()


def _content(store, selection="accepted") -> list[tuple]:
    """What must survive a round trip: text, split, category, mask and image pixels."""
    with store.ReadSession() as session:
        rows = []
        for item in export_items(session, selection):
            mask = repo.mask_array(item.version)
            pixels = repo.load_image_array(store.files, item.image)
            rows.append((
                item.expression.text, item.expression.split, item.expression.category,
                hashlib.sha256(np.packbits(mask).tobytes() + bytes(str(mask.shape), "ascii")).hexdigest(),
                hashlib.sha256(pixels.tobytes() + bytes(str((pixels.shape, pixels.dtype)), "ascii")).hexdigest(),
            ))  # fmt: skip
        return sorted(rows)


@pytest.mark.parametrize(("fmt", "kind"), [("refsegrs", "refsegrs"), ("rrsisd", "rrsisd"), ("png", "folder")])
def test_export_then_import_gives_identical_masks_and_expressions(store, tmp_path, fmt, kind):
    out = tmp_path / fmt
    summary = export_store(store, out, fmt)
    assert summary.exported == 6
    with make_store(f"sqlite:///{tmp_path / 'copy.sqlite'}", tmp_path / "copy") as copy:
        report = import_dataset(copy, kind, out)
        assert (report.added, report.images) == (6, 3)
        assert _content(copy) == _content(store)
        with copy.ReadSession() as session:  # imported masks are accepted human versions by "import"
            versions = repo.newest_versions(session)
            assert {(v.kind, v.status, v.author) for v in versions} == {("correction", "accepted", "import")}
        again = import_dataset(copy, kind, out)  # idempotent
        assert (again.added, again.skipped) == (0, 6)


def test_rrsisd_export_uses_the_published_layout(store, tmp_path):
    from sbanet.data.rrsisd import load_refs

    export_store(store, tmp_path / "r", "rrsisd")
    refs = load_refs(tmp_path / "r" / "rrsisd" / "refs(unc).p")  # the data branch's safe unpickler
    instances = json.loads((tmp_path / "r" / "rrsisd" / "instances.json").read_text())
    assert len(refs) == 5  # the two expressions sharing a mask are one ref with two sentences
    assert sorted(len(r["sentences"]) for r in refs) == [1, 1, 1, 1, 2]
    assert set(refs[0]) == {
        "ref_id",
        "ann_id",
        "image_id",
        "category_id",
        "split",
        "file_name",
        "sent_ids",
        "sentences",
    }
    assert set(refs[0]["sentences"][0]) == {"tokens", "raw", "sent_id", "sent"}
    annotation = instances["annotations"][0]
    assert set(annotation) == {"id", "image_id", "categories_id", "segmentation", "area", "bbox", "iscrowd"}
    assert isinstance(annotation["segmentation"], list) and set(annotation["segmentation"][0]) == {"size", "counts"}
    assert {c["name"] for c in instances["categories"]} == {"building", "land", "water", "road"}
    assert len(list((tmp_path / "r" / "images" / "rrsisd" / "JPEGImages").iterdir())) == 3


def test_coco_export_decodes_with_pycocotools(store, tmp_path):
    from pycocotools.coco import COCO

    export_store(store, tmp_path / "c", "coco", selection="latest")
    coco = COCO(str(tmp_path / "c" / "annotations.json"))
    with store.ReadSession() as session:
        for item in export_items(session, "latest"):
            annotation = coco.anns[item.expression.id]
            assert annotation["expression"] == item.expression.text
            np.testing.assert_array_equal(coco.annToMask(annotation).astype(bool), repo.mask_array(item.version))
    field = next(a for a in coco.anns.values() if a["expression"] == "the field")
    assert (field["status"], field["author"]) == ("draft", "model")  # "latest" includes the pending draft
    geo = next(i for i in coco.imgs.values() if "crs" in i)
    assert geo["crs"] == "EPSG:32631" and len(geo["transform"]) == 6


def test_geotiff_export_keeps_crs_and_transform(store, tmp_path):
    import rasterio

    summary = export_store(store, tmp_path / "g", "geotiff")
    assert (summary.exported, summary.skipped) == (2, 4)
    records = [json.loads(line) for line in (tmp_path / "g" / "expressions.jsonl").read_text().splitlines()]
    with store.ReadSession() as session:
        by_text = {i.expression.text: i for i in export_items(session)}
        for record in records:
            item = by_text[record["expression"]]
            with rasterio.open(tmp_path / "g" / "masks" / f"{record['id']}.tif") as dataset:
                assert dataset.crs.to_epsg() == 32631
                assert list(dataset.transform)[:6] == pytest.approx(item.image.transform)
                np.testing.assert_array_equal(dataset.read(1).astype(bool), repo.mask_array(item.version))


def test_export_refuses_a_used_folder_and_an_empty_selection(store, tmp_path):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("x")
    with pytest.raises(ValueError, match="not an empty folder"):
        export_store(store, tmp_path / "used", "coco")
    with pytest.raises(ValueError, match="format must be one of"):
        export_store(store, tmp_path / "new", "yolo")
    empty = make_store(f"sqlite:///{tmp_path / 'empty.sqlite'}", tmp_path / "empty")
    with empty, pytest.raises(ValueError, match="nothing to export"):
        export_store(empty, tmp_path / "new", "coco")


def test_samples_without_a_file_are_stored_as_lossless_png(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    mask = _box((20, 30), 1, 5, 1, 5)
    sample = ReferringSample("synthetic/0", "synthetic/img-0", "the square", "train",
                             partial(np.copy, pixels), partial(np.copy, mask))  # fmt: skip
    data, name = sample_image_file(sample)
    assert name == "synthetic_img-0.png" and data.startswith(b"\x89PNG")
    wrong_size = ReferringSample("synthetic/1", "synthetic/img-1", "the disc", "train",
                                 partial(np.copy, pixels[:10]), partial(np.copy, mask))  # fmt: skip
    empty_text = ReferringSample("synthetic/2", "synthetic/img-0", " ", "train",
                                 partial(np.copy, pixels), partial(np.copy, mask))  # fmt: skip
    with make_store(f"sqlite:///{tmp_path / 's.sqlite'}", tmp_path / "s") as store:
        report = import_samples(store, [wrong_size, sample, empty_text, sample])
        assert (report.added, report.skipped, report.images) == (1, 1, 1)
        assert len(report.invalid) == 2 and "synthetic/1: the mask is 20x30" in report.invalid[0]
        assert "synthetic/2: the expression is empty" in report.invalid[1]
        with store.ReadSession() as session:
            (item,) = export_items(session)
            np.testing.assert_array_equal(repo.load_image_array(store.files, item.image), pixels)
            np.testing.assert_array_equal(repo.mask_array(item.version), mask)


def test_cli_import_export_stats(store, tmp_path, capsys):
    base = ["--store", store.url, "--data-dir", str(store.data_dir)]
    assert cli([*base, "export", "refsegrs", str(tmp_path / "out")]) == 0
    target = ["--store", f"sqlite:///{tmp_path / 'cli.sqlite'}", "--data-dir", str(tmp_path / "cli")]
    assert cli([*target, "import", "refsegrs", str(tmp_path / "out"), "--splits", "train", "val"]) == 0
    assert "imported 5 expressions on 2 images (train: 3, val: 2)" in capsys.readouterr().out
    assert cli([*target, "stats"]) == 0
    assert "mask status: accepted 5" in capsys.readouterr().out
    assert cli([*target, "db", "current"]) == 0
    assert "up to date" in capsys.readouterr().out
    assert cli([*target, "import", "rrsisd", str(tmp_path / "missing")]) == 2
    assert "refs file not found" in capsys.readouterr().err
