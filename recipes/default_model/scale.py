"""How a model does on whole real images as a user uploads them, and at which scale.

    python -m recipes.default_model.scale --model sbanet/assets/sbanet-lite-landcover \\
        --json benchmarks/results/default_model_scale.json

Cases, read from ``../shared/data`` (never copied): the nine dubai-aerial tile-6 images (the
default model's validation tile), each scored for "the water", "all buildings", "the roads" and
"the vegetation" against the land-cover mask wherever the class covers >= 5 % of the image; and
the SpaceNet samples (panchromatic 16-bit GeoTIFFs of a US suburb), "the roads" against
``sample_road_raster_mask.tif`` and "all buildings" against the rasterised
``geotiff_labels.geojson``. Chance is the IoU of calling every pixel the class (its share).

Scales: ``resize`` is what the app does (the whole image resized to the input size); a number
``f`` resizes the image by ``f`` and runs :func:`sbanet.geo.tiling.predict_scene` (tiles of the input
size), so ``f = 512 / 320 ...`` matches the scale of ~512 px training crops. Prints a table and
writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from sbanet.data.land_cover import class_cases
from sbanet.data.semantic import DUBAI_CLASSES
from sbanet.geo.tiling import predict_scene
from sbanet.image import read_image, to_rgb8
from sbanet.inference.predictor import Predictor
from sbanet.inference.shipped import default_model_source
from sbanet.training.metrics import mask_iou

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
CLASS_EXPRESSIONS = {
    "the water": "water",
    "all buildings": "building",
    "the roads": "road",
    "the vegetation": "vegetation",
}
MIN_FRACTION = 0.05


def cases(data: Path) -> Iterator[tuple[str, np.ndarray, dict[str, np.ndarray]]]:
    """``(source, image uint8 [H, W, 3], {expression: truth bool [H, W]})`` for every case."""

    tile6 = class_cases(data / "dubai-aerial" / "tile6", CLASS_EXPRESSIONS, DUBAI_CLASSES, MIN_FRACTION)
    for _, image, present in tile6:
        yield "dubai tile 6", image, present
    for image, truth in spacenet_scenes(data / "spacenet-sample"):
        yield "spacenet", to_rgb8(image), truth


def spacenet_scenes(spacenet: Path) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """The two SpaceNet scenes as read (uint16 ``[H, W]`` or ``[H, W, 1]``), each with its truth
    ``{expression: bool [H, W]}``: "the roads" from ``sample_road_raster_mask.tif``, "all
    buildings" from ``geotiff_labels.geojson`` rasterised on the image's grid
    (``sample_fp_mask.tif`` shows another tile's buildings: docs/benchmarks.md)."""
    import rasterio
    from rasterio.features import rasterize

    roads = np.asarray(read_image(spacenet / "sample_road_raster_mask.tif")).squeeze() > 0
    yield read_image(spacenet / "road_mask_input.tif"), {"the roads": roads}
    with rasterio.open(spacenet / "sample_geotiff.tif") as src:
        features = json.loads((spacenet / "geotiff_labels.geojson").read_text())["features"]
        shapes = [(f["geometry"], 1) for f in features]
        buildings = rasterize(shapes, out_shape=(src.height, src.width), transform=src.transform) > 0
    yield read_image(spacenet / "sample_geotiff.tif"), {"all buildings": buildings}


def case_means(
    rows: dict[str, dict], columns: list[str], widths: tuple[int, int, int] = (34, 3, 9), keep_iou: bool = False
) -> dict[str, dict]:
    """Per case (``{"chance": [...], "iou": {column: [...]}}``): the count, the mean chance and the
    mean IoU per column, each printed as a table row (``widths``: case, count and column widths);
    ``keep_iou`` keeps the per-image IoUs too. Returns ``{case: summary}``."""
    out = {}
    for key, row in rows.items():
        means = {c: float(np.mean(v)) for c, v in row["iou"].items()}
        n, chance = len(row["chance"]), float(np.mean(row["chance"]))
        case, count, column = widths
        print(f"{key:<{case}}{n:>{count}}{chance:>8.3f}" + "".join(f"{means[c]:>{column}.3f}" for c in columns))
        out[key] = {"n": n, "chance": chance, "mean_iou": means, **({"iou": row["iou"]} if keep_iou else {})}
    return out


def segment(predictor, image: np.ndarray, texts: list[str], scale: float | None) -> dict[str, np.ndarray]:
    """``{expression: bool [H, W]}``: plain resize (``scale`` None) or tiles at ``scale``."""

    if scale is None:
        return {p.expression: p.mask for p in predictor.predict_batch(image, texts, return_attention=False)}
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    masks = predict_scene(predictor, small, texts).mask.astype(np.uint8)
    return {t: cv2.resize(masks[k], (w, h), interpolation=cv2.INTER_NEAREST) > 0 for k, t in enumerate(texts)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="checkpoint folder or hub id (default: the shipped model)")
    parser.add_argument("--scales", default="resize,0.625,1.0", help="comma-separated: resize and/or factors")
    parser.add_argument("--data", type=Path, default=DATA, help="the shared data folder")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    if not (args.data / "dubai-aerial").is_dir() or not (args.data / "spacenet-sample").is_dir():
        print(f"error: {args.data} lacks dubai-aerial/ or spacenet-sample/ (../shared/data/README.md)", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(args.threads)
    model = args.model or default_model_source()
    predictor = Predictor.from_pretrained(model)
    scales = [None if s == "resize" else float(s) for s in args.scales.split(",")]
    loaded = list(cases(args.data))
    labels = ["resize" if s is None else f"x{s:g}" for s in scales]
    rows: dict[str, dict] = {}
    for source, image, truth in loaded:
        for expression, mask in truth.items():
            row = rows.setdefault(f"{source}: {expression}", {"chance": [], "iou": {label: [] for label in labels}})
            row["chance"].append(float(mask.mean()))
        for scale, label in zip(scales, labels):
            for expression, mask in segment(predictor, image, list(truth), scale).items():
                rows[f"{source}: {expression}"]["iou"][label].append(mask_iou(mask, truth[expression]))
    print(f"model {model}\n{'case':<34}{'n':>3}{'chance':>8}" + "".join(f"{lab:>9}" for lab in labels))
    result = {"model": str(model), "scales": labels, "cases": case_means(rows, labels)}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
