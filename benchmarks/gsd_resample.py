"""Does resampling to the model's training GSD help? With and without, side by side, one run.

    python -m benchmarks.gsd_resample --json benchmarks/results/gsd_resample.json

Every case with ground truth and a known GSD, read from ``../shared/data`` (never copied):

* ``spacenet``: "all buildings" on ``sample_geotiff.tif`` (0.5 m, EPSG:32616) and "the roads" on
  ``road_mask_input.tif`` (0.30 x 0.24 m from EPSG:4326), their GSD read from the files
  (:func:`sbanet.geo.resolution.raster_gsd`), the truth as :mod:`recipes.default_model.scale` makes it;
* ``gid``: the GID-MTL val split (every 10th image of each scene folder, :func:`sbanet.data.gid.gid_split`),
  224 px Gaofen-2 crops at about 4 m (``recipes.default_model.gsd_sources.GID``: not stated by
  the files, estimated), asked what the shipped model was taught: "the water" (gid5 water, gid15
  river + lake + pond), "all buildings" (gid5 built-up, gid15 industrial + residential), "the roads"
  (gid15 traffic), each where its class covers >= 5 % of the crop;
* ``dubai tile 6``: the model's own source (val tile) at its recorded GSD: resampling should not
  cost it much.

Columns, per case the mean IoU over its images: ``resize`` (the app today: the whole image resized
to the input size), ``gsd`` (:meth:`sbanet.inference.predictor.Predictor.predict_batch` with the
image's GSD: resampled to the checkpoint's training GSD), ``gsd lo`` / ``gsd hi`` (the same with
the Dubai GSD the training GSD rests on at the low / high end of its range: how much the
uncertain number matters), ``tiles`` (the scene command today: tiles of the input size at the
image's own scale) and ``gsd tiles`` (the scene command with the GSD: tiles covering the training
GSD's extent). ``chance``: the IoU of calling every pixel the class.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from recipes.default_model.gsd_sources import DATA, DUBAI, GID
from recipes.default_model.scale import CLASS_EXPRESSIONS, MIN_FRACTION, case_means, spacenet_scenes
from sbanet.data.gid import LABEL_SETS, gid_pairs, gid_split, read_labels
from sbanet.data.land_cover import class_cases
from sbanet.data.semantic import DUBAI_CLASSES
from sbanet.geo.raster import geo_metadata
from sbanet.geo.resolution import raster_gsd
from sbanet.geo.tiling import predict_scene, scaled_tile
from sbanet.image import read_image, to_rgb8
from sbanet.inference.predictor import Predictor
from sbanet.inference.shipped import default_model_source
from sbanet.training.metrics import mask_iou

GID_EXPRESSIONS = {
    "gid5": {"the water": ("water",), "all buildings": ("built-up",)},
    "gid15": {
        "the water": ("river", "lake", "pond"),
        "all buildings": ("industrial", "residential"),
        "the roads": ("traffic",),
    },
}
METHODS = ("resize", "gsd", "gsd lo", "gsd hi", "tiles", "gsd tiles")
Case = tuple[str, np.ndarray, tuple[float, float], dict[str, np.ndarray]]


def gid_cases(data: Path) -> Iterator[Case]:
    """``("gid", rgb, gsd, {expression: truth})`` for the GID-MTL val crops."""
    for label_set, expressions in GID_EXPRESSIONS.items():
        classes, merge = LABEL_SETS[label_set]
        names = [c.name for c in classes]
        pairs = gid_pairs(data / "gid-mtl", label_set)
        split = gid_split(pairs)
        for _, image, label in pairs:
            if split[image] != "val":
                continue
            labels = read_labels(label, merge)
            truth = {e: np.isin(labels, [names.index(c) for c in cs]) for e, cs in expressions.items()}
            present = {e: m for e, m in truth.items() if m.mean() >= MIN_FRACTION}
            if present:
                yield "gid", to_rgb8(read_image(image)), (GID.m_per_px, GID.m_per_px), present


def cases(data: Path, sources: set[str]) -> Iterator[Case]:
    """Every case of the module docstring whose source is in ``sources``."""
    if "spacenet" in sources:
        spacenet = data / "spacenet-sample"
        files = ("road_mask_input.tif", "sample_geotiff.tif")  # spacenet_scenes' order
        for name, (image, truth) in zip(files, spacenet_scenes(spacenet)):
            reading = raster_gsd(geo_metadata(spacenet / name))
            if reading.gsd is None:
                raise ValueError(f"{name}: {reading.reason}")
            yield "spacenet", to_rgb8(image), reading.gsd, truth
    if "gid" in sources:
        yield from gid_cases(data)
    if "dubai" in sources:
        tile6 = class_cases(data / "dubai-aerial" / "tile6", CLASS_EXPRESSIONS, DUBAI_CLASSES, MIN_FRACTION)
        for _, image, present in tile6:
            yield "dubai tile 6", image, (DUBAI.m_per_px, DUBAI.m_per_px), present


def segment(predictor: Predictor, rgb: np.ndarray, gsd: tuple[float, float], texts: list[str]) -> dict[str, list]:
    """``{method: [bool [H, W] per expression]}`` for every method of :data:`METHODS`."""
    low, high = DUBAI.low / DUBAI.m_per_px, DUBAI.high / DUBAI.m_per_px  # the training GSD scales with it

    def whole(g: tuple[float, float] | None) -> list[np.ndarray]:
        return [p.mask for p in predictor.predict_batch(rgb, texts, return_attention=False, gsd=g)]

    tile, _ = scaled_tile(predictor, rgb.shape[0], rgb.shape[1], gsd)
    return {
        "resize": whole(None),
        "gsd": whole(gsd),
        "gsd lo": whole((gsd[0] / low, gsd[1] / low)),
        "gsd hi": whole((gsd[0] / high, gsd[1] / high)),
        "tiles": list(predict_scene(predictor, rgb, texts).mask),
        "gsd tiles": list(predict_scene(predictor, rgb, texts, tile=tile).mask),
    }


def cpu_name() -> str:
    """The CPU's model name and core count (``/proc/cpuinfo``), else what ``platform`` says."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return f"{len(names)}-core {names[0]}" if names else platform.machine()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="checkpoint folder (default: the shipped model)")
    parser.add_argument("--data", type=Path, default=DATA, help="the shared data folder")
    parser.add_argument("--sources", default="spacenet,gid,dubai", help="comma-separated: spacenet, gid, dubai")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    if not (args.data / "spacenet-sample").is_dir():
        print(f"error: {args.data} lacks spacenet-sample/ (../shared/data/README.md)", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(args.threads)
    model = args.model or default_model_source()
    predictor = Predictor.from_pretrained(model)
    if predictor.training_gsd is None:
        print(f"error: {model} records no training GSD (recipes.default_model.gsd_sources)", file=sys.stderr)
        return 2
    start, load = time.time(), os.getloadavg()
    rows: dict[str, dict] = {}
    for source, rgb, gsd, truth in cases(args.data, set(args.sources.split(","))):
        texts = list(truth)
        masks = segment(predictor, rgb, gsd, texts)
        for k, text in enumerate(texts):
            row = rows.setdefault(f"{source}: {text}", {"chance": [], "iou": {m: [] for m in METHODS}})
            row["chance"].append(float(truth[text].mean()))
            for method in METHODS:
                row["iou"][method].append(mask_iou(masks[method][k], truth[text]))
    header = f"{'case':<28}{'n':>4}{'chance':>8}" + "".join(f"{m:>10}" for m in METHODS)
    print(f"model {model}, training GSD {predictor.training_gsd.input_m_per_px} m per input pixel\n{header}")
    result = {
        "model": str(model),
        "training_gsd": predictor.training_gsd.to_metadata(),
        "methods": list(METHODS),
        "command": "python -m benchmarks.gsd_resample " + " ".join(argv if argv is not None else sys.argv[1:]),
        "cpu": cpu_name(),
        "threads": args.threads,
        "load_average_start": load,
        "load_average_end": os.getloadavg(),
        "wall_s": None,
        "cases": {},
    }
    result["cases"] = case_means(rows, list(METHODS), widths=(28, 4, 10), keep_iou=True)
    result["wall_s"] = time.time() - start
    print(f"{result['wall_s']:.0f} s, load {load[0]:.2f} -> {result['load_average_end'][0]:.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
