"""Export the store's masks as training datasets and interchange files.

Formats (``export_store(store, out, fmt)``), one sample per expression, named ``e<expression id>``:

* ``refsegrs``: the RefSegRS layout the ``refsegrs`` reader reads: ``images/<id>.tif`` (the
  decoded pixels, dtype and bands kept), ``masks/<id>.tif`` (uint8 0/255),
  ``output_phrase_<split>.txt`` and ``samples_<split>.jsonl`` (image grouping and category).
* ``png``: the same layout with the original image files and ``masks/<id>.png`` (0/255); the
  ``folder`` reader reads it.
* ``rrsisd``: the RRSIS-D release layout (``rrsisd/refs(unc).p``, ``rrsisd/instances.json`` with
  RLE segmentations and the published key names, ``categories_id`` included, and
  ``images/rrsisd/JPEGImages/``). Expressions of one image with identical masks become the
  sentences of one ref, as in the release.
* ``coco``: ``annotations.json`` (COCO instances, RLE segmentations, one annotation per
  expression carrying its text and split) + ``images/``.
* ``geotiff``: for georeferenced images, ``masks/<id>.tif`` with the source CRS and affine
  transform (uint8: 1 target, 0 background, as :func:`sbanet.geo.writers.write_mask_geotiff`
  writes them), and ``expressions.jsonl``; other images are skipped and counted.

Images shared by several samples are written once and hard-linked where the filesystem allows.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from .database import Store
from .files import FileStore
from .masks import bbox, decode_mask, rle_json
from .models import Image
from .repository import load_image_array
from .transfer import ExportItem, export_items

FORMATS = ("refsegrs", "png", "rrsisd", "coco", "geotiff")
FOLDER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")  # what the "folder" reader reads
DEFAULT_CATEGORY = "object"


@dataclass(frozen=True)
class ExportSummary:
    format: str
    out: Path
    exported: int
    skipped: int = 0  # e.g. images without georeferencing in a GeoTIFF export


def sample_name(item: ExportItem) -> str:
    return f"e{item.expression.id}"


def _mask(item: ExportItem) -> np.ndarray:
    return decode_mask(item.version.rle, item.version.height, item.version.width)


class _Linker:
    """Writes each source image once per export and hard-links (else copies) further uses."""

    def __init__(self) -> None:
        self.first: dict[tuple[int, str], Path] = {}

    def place(self, key: tuple[int, str], target: Path, write: Callable[[Path], None]) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        if key in self.first:
            try:
                os.link(self.first[key], target)
            except OSError:
                shutil.copyfile(self.first[key], target)
            return
        write(target)
        self.first[key] = target


def _write_tiff(path: Path, array: np.ndarray) -> None:
    """Pixels as a TIFF that :func:`sbanet.image.read_image` reads back identically (bands last)."""
    import tifffile

    rgb = array.ndim == 3 and array.shape[2] == 3 and array.dtype == np.uint8
    tifffile.imwrite(path, array, photometric="rgb" if rgb else "minisblack", planarconfig="contig")


def _write_png(path: Path, mask: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(mask.astype(np.uint8) * 255).save(path)


def _pixels_as_tiff(files: FileStore, image: Image, path: Path) -> None:
    _write_tiff(path, load_image_array(files, image))


def write_phrase_folder(items: Sequence[ExportItem], files: FileStore, out: Path, original_images: bool) -> int:
    """RefSegRS (``original_images=False``: TIFF pixels) or the PNG/folder layout (original files)."""
    linker = _Linker()
    by_split: dict[str, list[ExportItem]] = defaultdict(list)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    for item in items:
        name, image = sample_name(item), item.image
        by_split[item.expression.split].append(item)
        suffix = Path(image.path).suffix.lower()
        if original_images and suffix in FOLDER_SUFFIXES:
            write = partial(shutil.copyfile, files.path(image.path))
        else:  # RefSegRS is TIFF only; the folder reader knows no BMP/WebP
            suffix, write = ".tif", partial(_pixels_as_tiff, files, image)
        linker.place((image.id, suffix), out / "images" / f"{name}{suffix}", write)
        mask = _mask(item)
        if original_images:
            _write_png(out / "masks" / f"{name}.png", mask)
        else:
            _write_tiff(out / "masks" / f"{name}.tif", mask.astype(np.uint8) * 255)
    for split, group in by_split.items():
        lines = [f"{sample_name(i)} {i.expression.text}\n" for i in group]
        (out / f"output_phrase_{split}.txt").write_text("".join(lines), encoding="utf-8")
        records = [
            {"id": sample_name(i), "image": f"image-{i.image.id}", "category": i.expression.category} for i in group
        ]
        (out / f"samples_{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return len(items)


def _categories(items: Sequence[ExportItem]) -> dict[str, int]:
    names = sorted({item.expression.category or DEFAULT_CATEGORY for item in items})
    return {name: k + 1 for k, name in enumerate(names)}


def _image_file_name(item: ExportItem) -> str:
    return f"{item.image.id:05d}{Path(item.image.path).suffix}"


def _copy_images(items: Sequence[ExportItem], files: FileStore, directory: Path) -> list[dict]:
    """Copy each image once as ``<image id><ext>``; returns COCO ``images`` records."""
    directory.mkdir(parents=True, exist_ok=True)
    records = {}
    for item in items:
        image = item.image
        if image.id not in records:
            shutil.copyfile(files.path(image.path), directory / _image_file_name(item))
            records[image.id] = {
                "id": image.id,
                "file_name": _image_file_name(item),
                "height": image.height,
                "width": image.width,
            }
    return list(records.values())


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def write_rrsisd(items: Sequence[ExportItem], files: FileStore, out: Path) -> int:
    """The RRSIS-D release layout (see the module docstring)."""
    categories = _categories(items)
    refs: dict[tuple, dict] = {}
    annotations = []
    for item in items:
        category = item.expression.category or DEFAULT_CATEGORY
        key = (item.image.id, item.version.rle, item.expression.split, category)
        if key not in refs:
            mask = _mask(item)
            annotation_id = len(annotations) + 1
            annotations.append(
                {
                    "segmentation": [rle_json(item.version.rle, item.version.height, item.version.width)],
                    "area": int(item.version.area),
                    "iscrowd": 0,
                    "image_id": item.image.id,
                    "bbox": bbox(mask),
                    "categories_id": categories[category],
                    "id": annotation_id,
                }
            )
            refs[key] = {
                "image_id": item.image.id,
                "split": item.expression.split,
                "sentences": [],
                "file_name": _image_file_name(item),
                "category_id": categories[category],
                "ann_id": annotation_id,
                "sent_ids": [],
                "ref_id": len(refs),
            }
        ref, tokens = refs[key], _tokens(item.expression.text)
        ref["sentences"].append(
            {"tokens": tokens, "raw": item.expression.text, "sent_id": item.expression.id, "sent": " ".join(tokens)}
        )
        ref["sent_ids"].append(item.expression.id)
    instances = {
        "images": _copy_images(items, files, out / "images" / "rrsisd" / "JPEGImages"),
        "annotations": annotations,
        "categories": [{"supercategory": name, "id": cid, "name": name} for name, cid in categories.items()],
    }
    (out / "rrsisd").mkdir(parents=True, exist_ok=True)
    (out / "rrsisd" / "instances.json").write_text(json.dumps(instances))
    with (out / "rrsisd" / "refs(unc).p").open("wb") as handle:
        pickle.dump(list(refs.values()), handle, protocol=2)
    return len(items)


def write_coco(items: Sequence[ExportItem], files: FileStore, out: Path) -> int:
    """COCO instances JSON with one RLE annotation per expression (text, split, provenance)."""
    categories = _categories(items)
    images = _copy_images(items, files, out / "images")
    for record in images:
        image = next(i.image for i in items if i.image.id == record["id"])
        if image.georeferenced:
            record.update(crs=image.crs, transform=image.transform)
    annotations = [
        {
            "id": item.expression.id,
            "image_id": item.image.id,
            "category_id": categories[item.expression.category or DEFAULT_CATEGORY],
            "segmentation": rle_json(item.version.rle, item.version.height, item.version.width),
            "area": int(item.version.area),
            "bbox": bbox(_mask(item)),
            "iscrowd": 0,
            "expression": item.expression.text,
            "split": item.expression.split,
            "mask_version_id": item.version.id,
            "status": item.version.status,
            "author": item.version.author,
        }
        for item in items
    ]
    coco = {
        "info": {"description": "sbanet annotation store export"},
        "images": images,
        "annotations": annotations,
        "categories": [{"supercategory": name, "id": cid, "name": name} for name, cid in categories.items()],
    }
    (out / "annotations.json").write_text(json.dumps(coco))
    return len(items)


def write_geotiff(items: Sequence[ExportItem], files: FileStore, out: Path) -> tuple[int, int]:
    """Masks of georeferenced images as mask GeoTIFFs on the source grid (:mod:`sbanet.geo.writers`)."""
    from sbanet.geo.raster import GeoInfo
    from sbanet.geo.writers import write_mask_geotiff

    (out / "masks").mkdir(parents=True, exist_ok=True)
    records, skipped = [], 0
    for item in items:
        image = item.image
        if not image.georeferenced:
            skipped += 1
            continue
        info = GeoInfo(image.width, image.height, image.bands, image.dtype, image.crs, tuple(image.transform))
        write_mask_geotiff(out / "masks" / f"{sample_name(item)}.tif", _mask(item), info)
        records.append({"id": sample_name(item), "expression": item.expression.text, "image": image.filename})
    (out / "expressions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return len(records), skipped


def export_store(
    store: Store,
    out: str | Path,
    fmt: str,
    *,
    selection: str = "accepted",
    splits: Sequence[str] | None = None,
) -> ExportSummary:
    """Write the chosen masks (``selection``: "accepted" or "latest") in format ``fmt`` into ``out``
    (a new or empty folder)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} exists and is not an empty folder; export into a new folder")
    with store.ReadSession() as session:
        items = export_items(session, selection, splits)
        if not items:
            raise ValueError(f"nothing to export: no expression has a {selection} mask")
        out.mkdir(parents=True, exist_ok=True)
        skipped = 0
        if fmt in ("refsegrs", "png"):
            exported = write_phrase_folder(items, store.files, out, original_images=fmt == "png")
        elif fmt == "rrsisd":
            exported = write_rrsisd(items, store.files, out)
        elif fmt == "coco":
            exported = write_coco(items, store.files, out)
        else:
            exported, skipped = write_geotiff(items, store.files, out)
    return ExportSummary(fmt, out, exported, skipped)
