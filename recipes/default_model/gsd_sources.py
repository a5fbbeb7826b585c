"""The ground sampling distance of each training source, and the training GSD a checkpoint records.

    python -m recipes.default_model.gsd_sources runs/v4_export   # add the block to a Dubai-only checkpoint

Each source's metres per pixel with its range and where it comes from (:data:`SOURCES`), and
:func:`training_gsd`: the metres one model-input pixel covered in training, the median over the
recipe's training crops and whole images of (source GSD x the crop's side / the input size),
each crop counted once. The recipe writes it into every checkpoint's metadata (``"gsd"``,
:class:`sbanet.inference.gsd.TrainingGSD`); the command above adds it to a checkpoint trained
before the block existed, leaving its weights and everything else as they are.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sbanet.checkpoint import CONFIG_FILE
from sbanet.data.semantic import crop_boxes
from sbanet.inference.gsd import SourceGSD, TrainingGSD

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
DUBAI = SourceGSD(
    1.0,
    0.7,
    1.5,
    "Not stated by the dataset (its Kaggle listing: 'aerial imagery of Dubai obtained by MBRSC satellites'). "
    "MBRSC's imagers: DubaiSat-1 2.5 m pan / 5 m multispectral, DubaiSat-2 1 m pan / 4 m multispectral "
    "(eoPortal), KhalifaSat 0.7 m pan. Measured here: a four-lane carriageway in tile5/image_part_005 spans "
    "~17 px (15-18 m of lanes and shoulders: 0.9-1.1 m/px), villas in tile4 are 10-12 px: pan-sharpened "
    "DubaiSat-2 at ~1 m, not DubaiSat-1. Range: image sizes differ per tile (509-1126 px), so tiles may "
    "have been resampled differently.",
)
GID = SourceGSD(
    4.0,
    2.5,
    4.0,
    "Gaofen-2's multispectral product is 4 m (3.2 m at nadir; its pan band is 0.8-1 m); GID's labelled "
    "scenes are multispectral. Measured here: two parallel airfield strips in gid15/traffic_land/10.jpg are "
    "16 and 18 px wide (45-60 m runways: 2.5-3.3 m/px); rural houses are 3-5 px.",
)
SPACENET = SourceGSD(
    0.5,
    0.24,
    0.5,
    "from each GeoTIFF's CRS and transform: sample_geotiff.tif 0.5 m (EPSG:32616), road_mask_input.tif "
    "0.30 x 0.24 m (EPSG:4326 at latitude 36.1)",
)
SOURCES = {"dubai-aerial": DUBAI, "gid-mtl": GID, "spacenet-sample": SPACENET}


def dubai_input_scales(data: Path, crop: int, tiles: tuple[int, ...] = (1, 2, 3, 4, 5)) -> list[float]:
    """Per training crop of the dubai-aerial conversion (``crop`` 0: whole images): its side
    (the square root of its area) over one input pixel, in source pixels per model pixel / size."""
    scales = []
    for tile in tiles:
        for path in sorted((data / "dubai-aerial" / f"tile{tile}").glob("image_part_[0-9][0-9][0-9].jpg")):
            width, height = Image.open(path).size
            scales += [((y1 - y0) * (x1 - x0)) ** 0.5 for y0, y1, x0, x1 in crop_boxes(height, width, crop)]
    return scales


def dubai_input_m(image_size: int, crops: tuple[int, ...], data: Path = DATA) -> np.ndarray:
    """Per dubai-aerial training crop (each crop size of ``crops``, 0 meaning whole images), the
    metres one ``image_size`` input pixel covered; ``ValueError`` without the images."""
    sides = [side for crop in crops for side in dubai_input_scales(data, crop)]
    if not sides:
        raise ValueError(f"no dubai-aerial images under {data}: the training GSD needs them")
    return np.asarray(sides) * DUBAI.m_per_px / image_size


def dubai_crops(roots: list[str]) -> tuple[int, ...]:
    """The dubai-aerial crop sizes a recipe's converted folders hold: ~512 px crops, and whole
    images (0) when one of its Dubai folders is a whole-image conversion."""
    whole = any("whole" in Path(root).name for root in roots if source_of(root) == "dubai-aerial")
    return (512, 0) if whole else (512,)


def training_gsd(image_size: int, crops: tuple[int, ...] = (512, 0), data: Path = DATA) -> TrainingGSD:
    """The dubai-aerial recipe's training GSD: the median over its training crops (each crop size of
    ``crops``, 0 meaning whole images) of the metres one ``image_size`` input pixel covered."""
    values = dubai_input_m(image_size, crops, data)
    how = (
        f"median over the {len(values)} training crops of dubai-aerial tiles 1-5 (crops of about "
        f"{' and '.join(f'{c} px' if c else 'whole images' for c in crops)}; each counted once) of the source GSD "
        f"({DUBAI.m_per_px} m) x the crop's side / {image_size} px; the crops span "
        f"{values.min():.2f}-{values.max():.2f} m per input pixel"
    )
    return TrainingGSD(round(float(np.median(values)), 3), how, {"dubai-aerial": DUBAI})


def conversion_input_scales(root: Path, split: str = "train") -> list[float]:
    """Per training image of a converted folder (``samples_<split>.jsonl``), the side (square root
    of the area) of its crop box in source pixels, each image counted once."""
    path = Path(root) / f"samples_{split}.jsonl"
    if not path.is_file():
        return []
    boxes = {}
    for line in path.read_text().splitlines():
        if line.strip():
            sample = json.loads(line)
            boxes[sample["image"]] = sample["box"]
    return [((y1 - y0) * (x1 - x0)) ** 0.5 for y0, y1, x0, x1 in boxes.values()]


def source_of(root: str | Path) -> str | None:
    """The training source a converted folder was made from, by its name (``None``: unknown)."""
    name = Path(root).as_posix()
    return "dubai-aerial" if "dubai" in Path(root).name else "gid-mtl" if "gid" in name else None


def mixed_training_gsd(image_size: int, roots: list[str], data: Path = DATA) -> TrainingGSD:
    """The training GSD of a recipe mixing sources (``roots``: its converted folders).

    Each source's own median (dubai-aerial: its crops and whole images, as :func:`training_gsd`;
    gid-mtl: its converted training images at :data:`GID`'s GSD) goes into the reasons, and the
    **finest** of them is the resampling target. Why the finest: a coarser target throws away
    detail no model pixel can recover, and it was measured to cost a source no recipe trains on
    (SpaceNet; docs/results.md, "Ground sampling distance", the v5 candidate) far more than it
    gained on the coarser source. Plain uploads are not resampled either way (the app's default)."""
    dubai = dubai_input_m(image_size, dubai_crops(roots), data)  # ValueError without the dubai-aerial images
    medians = {"dubai-aerial": (round(float(np.median(dubai)), 3), len(dubai))}
    gid = [side for r in roots if source_of(r) == "gid-mtl" for side in conversion_input_scales(Path(r))]
    if gid:
        medians["gid-mtl"] = (round(float(np.median(gid)) * GID.m_per_px / image_size, 3), len(gid))
    name, (target, _) = min(medians.items(), key=lambda kv: kv[1][0])
    each = "; ".join(f"{n} {m:.2f} m (median of {count} training images or crops)" for n, (m, count) in medians.items())
    how = (
        f"a mix of sources, each with its own scale per model-input pixel: {each}. The target is the finest "
        f"({name}): a coarser one discards detail, and resampling to it cost SpaceNet, a source no recipe "
        "trains on, more than it gained on the coarser source (docs/results.md, 'Ground sampling distance', "
        "the v5 candidate)"
    )
    sources = {"dubai-aerial": DUBAI, **({"gid-mtl": GID} if gid else {})}
    return TrainingGSD(target, how, sources)


def recipe_gsd(recipe: dict[str, Any]) -> dict[str, Any] | None:
    """The ``metadata["gsd"]`` block of a recipe trained on dubai-aerial conversions, alone
    (:func:`training_gsd`) or mixed with gid-mtl ones (:func:`mixed_training_gsd`); None when a
    data root is of another source, or when ``../shared/data/dubai-aerial`` is not there to
    measure the crops."""
    data = recipe["data"]
    roots = [data["root"], *(m["root"] for m in data.get("mix") or [])]
    if any(source_of(root) is None for root in roots):
        return None
    image_size = int((recipe["model"].get("overrides") or {}).get("image_size", 320))
    try:
        if all(source_of(root) == "dubai-aerial" for root in roots):
            return training_gsd(image_size, dubai_crops(roots)).to_metadata()
        return mixed_training_gsd(image_size, roots).to_metadata()
    except ValueError:  # the source images are not beside the project: the crops cannot be measured
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="a checkpoint folder trained by the dubai-aerial recipe")
    parser.add_argument("--data", type=Path, default=DATA, help="the shared data folder")
    args = parser.parse_args(argv)
    path = args.checkpoint / CONFIG_FILE
    if not path.is_file():
        print(f"error: {path} not found", file=sys.stderr)
        return 2
    header = json.loads(path.read_text())
    block = training_gsd(int(header["config"]["image_size"]), data=args.data).to_metadata()
    header.setdefault("metadata", {})["gsd"] = block
    path.write_text(json.dumps(header, indent=2))
    print(json.dumps(block, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
