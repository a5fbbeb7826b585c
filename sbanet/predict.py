"""Command line: segment what expressions name in an image or a scene of any size.

    python -m sbanet.predict scene.tif "all buildings" --out mask.tif --vector buildings.gpkg
    python -m sbanet.predict image.png "the water" -o mask.png

Scenes are processed by overlapping tiles (:mod:`sbanet.tiling`) and written band by band, so
a GeoTIFF output never holds the scene in memory. GeoTIFF outputs keep the source's CRS and
transform; ``--vector`` writes polygons in that CRS (GeoPackage), ``--geojson`` in WGS 84. With
several expressions every output gets the expression as a suffix: ``mask_all-buildings.tif``.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .geo import RasterSource, open_raster, parse_bands
from .writers import PROBABILITY_DTYPES, ArrayWriter, GeoTiffWriter, TeeWriter, read_mask, write_mask_png

MASK_SUFFIXES = {".tif", ".tiff", ".png"}
SUFFIXES = {
    "out": MASK_SUFFIXES,
    "probability": {".tif", ".tiff"},
    "vector": {".gpkg"},
    "geojson": {".geojson", ".json"},
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sbanet.predict",
        description="Segment what each expression names in an image (PNG / JPEG / TIFF / GeoTIFF of any size).",
    )
    parser.add_argument("image", type=Path, help="the image or scene")
    parser.add_argument("expressions", nargs="+", help="what to segment, e.g. 'all buildings' (one output each)")
    out = parser.add_argument_group("outputs (at least one)")
    out.add_argument("-o", "--out", type=Path, help="mask: .tif (GeoTIFF: 1 target, 0 background, 255 nodata) or .png")
    out.add_argument("--probability", type=Path, help="probability GeoTIFF (.tif)")
    out.add_argument("--probability-dtype", choices=PROBABILITY_DTYPES, default="float32",
                     help="float32 in [0, 1] (NaN nodata) or uint8 round(p*254) (255 nodata)")  # fmt: skip
    out.add_argument("--vector", type=Path, help="polygons as a GeoPackage (.gpkg) in the image's CRS")
    out.add_argument("--geojson", type=Path, help="polygons as RFC 7946 GeoJSON in WGS 84 (georeferenced images)")
    out.add_argument("--simplify", type=float, default=0.0, help="polygon simplification tolerance, map units")
    out.add_argument("--min-area", type=float, default=0.0, help="drop polygons smaller than this, map units^2")
    model = parser.add_argument_group("model")
    choice = model.add_mutually_exclusive_group()
    choice.add_argument(
        "--model", help="checkpoint directory or hub id (default: $SBANET_MODEL, else the shipped model)"
    )
    choice.add_argument("--preset", help="a registered preset with random weights, for testing (e.g. sbanet_tiny)")
    model.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    model.add_argument(
        "--precision", default="auto", help="auto (the model's measured policy), fp32, bf16 or fp16 (CUDA only)"
    )
    run = parser.add_argument_group("inference")
    run.add_argument("--bands", type=_bands, help="1-based band numbers for R,G,B, e.g. 3,2,1 (or one band)")
    run.add_argument("--threshold", type=float, default=0.5, help="probability above which a pixel is the target")
    run.add_argument("--tile-overlap", type=int, default=None, help="pixels shared by tiles (default: tile size / 4)")
    run.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return parser


def _bands(text: str) -> tuple[int, ...]:
    try:
        return parse_bands(text)
    except ValueError as exc:  # argparse shows an ArgumentTypeError's own message
        raise argparse.ArgumentTypeError(str(exc)) from None


def slug(text: str, limit: int = 40) -> str:
    """``"All buildings!"`` -> ``"all-buildings"`` (for file names)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-") or "expression"


def output_paths(path: Path | None, expressions: Sequence[str]) -> list[Path | None]:
    """One path per expression: ``path`` itself for one, ``stem_<slug>.ext`` for several."""
    if path is None:
        return [None] * len(expressions)
    if len(expressions) == 1:
        return [path]
    paths: list[Path] = []
    for expression in expressions:
        candidate, n = path.with_name(f"{path.stem}_{slug(expression)}{path.suffix}"), 2
        while candidate in paths:
            candidate, n = path.with_name(f"{path.stem}_{slug(expression)}-{n}{path.suffix}"), n + 1
        paths.append(candidate)
    return paths


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse bad output names before any work is done."""
    if not any(getattr(args, name) for name in SUFFIXES):
        raise ValueError("nothing to write: give --out, --probability, --vector and/or --geojson")
    for name, suffixes in SUFFIXES.items():
        path = getattr(args, name)
        if path is not None and path.suffix.lower() not in suffixes:
            raise ValueError(f"--{name} must end in one of {sorted(suffixes)}, got {path.name}")
    if not 0.0 < args.threshold < 1.0:
        raise ValueError(f"--threshold must be in (0, 1), got {args.threshold}")


def load_predictor(args: argparse.Namespace) -> tuple[Any, str, str]:
    """The predictor, a label for the model and its version (polygon attributes)."""
    import torch

    from . import __version__
    from .build import build_preset
    from .predictor import Predictor

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.preset:
        model = build_preset(args.preset, pretrained=False).eval()
        predictor = Predictor(model, device=device, precision=args.precision)
        return predictor, f"{args.preset} (random weights)", f"sbanet {__version__}"
    from .checkpoint import checkpoint_metadata
    from .default_model import default_model_source

    source = default_model_source(args.model)
    version = checkpoint_metadata(source).get("version", f"sbanet {__version__}")
    label = source if not Path(source).exists() else Path(source).resolve().name
    return Predictor.from_pretrained(source, device=device, precision=args.precision), label, str(version)


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run the command; returns one summary per expression (paths written, target share, polygons)."""
    from .predictor import check_expression
    from .tiling import predict_scene
    from .vector import mask_to_polygons, write_geojson, write_geopackage

    check_outputs(args)
    texts = [check_expression(e) for e in args.expressions]
    source: RasterSource = open_raster(args.image, args.bands)
    with source:
        info = source.info
        if args.geojson and not info.is_georeferenced:
            raise ValueError(f"--geojson needs a georeferenced image; {args.image.name} has no CRS (use --vector)")
        predictor, model_label, model_version = load_predictor(args)
        paths = {name: output_paths(getattr(args, name), texts) for name in SUFFIXES}
        tif_masks = [p for p in paths["out"] if p is not None and p.suffix.lower() != ".png"]
        probabilities = [p for p in paths["probability"] if p is not None]
        writers: list[Any] = []
        if tif_masks or probabilities:
            writers.append(
                GeoTiffWriter(info, tif_masks, probabilities or None, args.threshold, args.probability_dtype)
            )
        in_memory = None
        needs_mask = args.vector or args.geojson or (args.out is not None and args.out.suffix.lower() == ".png")
        if needs_mask and not tif_masks:
            in_memory = ArrayWriter(len(texts), info.height, info.width, args.threshold, keep_probability=False)
            writers.append(in_memory)
        predict_scene(
            predictor,
            source,
            texts,
            overlap=args.tile_overlap,
            batch_size=args.batch_size,
            threshold=args.threshold,
            writer=TeeWriter(*writers),
            progress=not args.quiet,
        )
    summaries = []
    for k, text in enumerate(texts):
        mask_path = paths["out"][k]
        if mask_path is not None and mask_path.suffix.lower() == ".png":
            write_mask_png(mask_path, in_memory.mask[k])
        summary: dict[str, Any] = {"expression": text, **{name: paths[name][k] for name in SUFFIXES}}
        if needs_mask:
            mask = in_memory.mask[k] if in_memory is not None else read_mask(mask_path)
            summary["target_fraction"] = float(np.mean(mask))
            polygons = mask_to_polygons(mask, info.affine, args.simplify, args.min_area)
            attributes = {"expression": text, "model": model_label, "model_version": model_version}
            if args.vector:
                write_geopackage(paths["vector"][k], polygons, info.crs, attributes)
            if args.geojson:
                write_geojson(paths["geojson"][k], polygons, info.crs, attributes)
            summary["polygons"] = len(polygons)
        summaries.append(summary)
    return summaries


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        summaries = run(args)
    except ValueError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    for summary in summaries:
        written = ", ".join(str(summary[name]) for name in SUFFIXES if summary[name] is not None)
        details = ""
        if "polygons" in summary:
            details = f" ({summary['target_fraction']:.2%} of the image, {summary['polygons']} polygons)"
        print(f"{summary['expression']!r}: {written}{details}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
