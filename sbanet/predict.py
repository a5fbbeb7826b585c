"""Command line: segment what expressions name in images and scenes of any size, one or thousands.

    python -m sbanet.predict scene.tif "all buildings" --out mask.tif --vector buildings.gpkg
    python -m sbanet.predict archive/ "all buildings" "the roads" --out-dir results/ --resume
    python -m sbanet.predict a.tif b.tif "scenes/*.tif" -e "the water" -d results/ --cog
    torchrun --standalone --nproc-per-node 2 -m sbanet.predict archive/ "all buildings" -d results/

One image: the outputs are named by ``-o`` / ``--probability`` / ``--vector`` / ``--geojson``
(with several expressions each gets the expression as a suffix: ``mask_all-buildings.tif``).
Many (``--out-dir``): the inputs are files, folders and glob patterns; outputs are
``<scene>__<expression-slug>.tif`` (mask), ``.gpkg`` (polygons), ``.probability.tif`` and
``.geojson`` as ``--formats`` asks (:mod:`sbanet.geo.scenes`), and ``summary.csv`` /
``summary.gpkg`` close the run (:mod:`sbanet.geo.scene_summary`). Under ``torchrun`` the scenes
are shared out over the ranks (GPUs, or CPU processes over gloo); each writes its own scenes'
outputs and rank 0 the summary.

An image of unknown GSD up to ``--whole-max`` pixels long runs whole, resized to the input size as
the app runs it (one forward, the same mask). Larger scenes are processed by overlapping tiles of
the model's input size, at its training GSD when the image states its own (:mod:`sbanet.geo.tiling`),
read and written by windows, so a scene never has to fit in memory; tiles without data are not
predicted. Every file is written beside its final name and moved into place when complete
(``--resume`` trusts what exists); no output may be an input, and an existing file is replaced
only with ``--overwrite``. User errors exit with status 2 and one line.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .geo.raster import parse_bands
from .geo.scenes import KINDS, output_paths, remove_empty_folders, slug
from .geo.writers import PROBABILITY_DTYPES
from .inference.gsd import WHOLE_MAX, check_gsd

if TYPE_CHECKING:
    from .geo.scene_run import SceneOptions, ScenePlan

__all__ = ["build_parser", "main", "output_paths", "slug"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sbanet.predict",
        description="Segment what each expression names in images (PNG / JPEG / TIFF / GeoTIFF of any size).",
    )
    parser.add_argument(
        "items",
        nargs="+",
        metavar="IMAGE [EXPRESSION ...]",
        help="an image, folder or glob pattern, then the expressions; with -e every item is an input",
    )
    parser.add_argument(
        "-e", "--expression", action="append", help="an expression (repeat for several); then all items are inputs"
    )
    one = parser.add_argument_group("outputs for one image")
    one.add_argument("-o", "--out", type=Path, help="mask: .tif (GeoTIFF: 1 target, 0 background, 255 nodata) or .png")
    one.add_argument("--probability", type=Path, help="probability GeoTIFF (.tif)")
    one.add_argument("--vector", type=Path, help="polygons as a GeoPackage (.gpkg) in the image's CRS")
    one.add_argument("--geojson", type=Path, help="polygons as RFC 7946 GeoJSON in WGS 84 (georeferenced images)")
    many = parser.add_argument_group("outputs for many images")
    many.add_argument("-d", "--out-dir", type=Path, help="folder for <scene>__<expression>.* and summary.csv/.gpkg")
    many.add_argument("--formats", type=_formats, default=("mask", "polygons"),
                      help=f"comma-separated from {','.join(KINDS)} (default mask,polygons; needs mask)")  # fmt: skip
    common = parser.add_argument_group("writing")
    common.add_argument("--probability-dtype", choices=PROBABILITY_DTYPES, default="float32",
                        help="float32 in [0, 1] (NaN nodata) or uint8 round(p*254) (255 nodata)")  # fmt: skip
    common.add_argument("--cog", action="store_true", help="write GeoTIFFs as Cloud-Optimized GeoTIFFs")
    common.add_argument("--simplify", type=float, default=0.0, help="polygon simplification tolerance, map units")
    common.add_argument("--min-area", type=float, default=0.0, help="drop polygons smaller than this, map units^2")
    existing = common.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    existing.add_argument("--resume", action="store_true", help="keep outputs that already exist, do the rest")
    model = parser.add_argument_group("model")
    choice = model.add_mutually_exclusive_group()
    choice.add_argument(
        "--model", help="checkpoint directory or hub id (default: $SBANET_MODEL, else the shipped model)"
    )
    choice.add_argument("--preset", help="a registered preset with random weights, for testing (e.g. sbanet_tiny)")
    model.add_argument("--device", default=None, help="torch device (default: this rank's GPU if any, else cpu)")
    model.add_argument(
        "--precision",
        default=None,
        help="auto (the model's measured policy), fp32, bf16 or fp16 (CUDA only); default $SBANET_PRECISION, else auto",
    )
    run = parser.add_argument_group("inference")
    run.add_argument("--bands", type=_bands, help="1-based band numbers for R,G,B, e.g. 3,2,1 (or one band)")
    run.add_argument("--threshold", type=float, default=0.5, help="probability above which a pixel is the target")
    run.add_argument("--tile-overlap", type=int, default=None, help="pixels shared by tiles (default: tile size / 8)")
    run.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass")
    scale = run.add_mutually_exclusive_group()
    scale.add_argument("--gsd", type=_gsd, metavar="M",
                       help="the images' metres per pixel (plain images; overrides a GeoTIFF's own): "
                       "resampled to the model's training GSD")  # fmt: skip
    scale.add_argument("--no-gsd", action="store_true",
                       help="do not resample GeoTIFFs that state a GSD to the model's training GSD")  # fmt: skip
    run.add_argument("--whole-max", type=_pixels, default=WHOLE_MAX, metavar="PX",
                     help="an image of unknown GSD no longer than this runs whole, resized to the input "
                     f"size as in the app; a larger one is tiled at its own pixels (default {WHOLE_MAX}; "
                     "0: always tile)")  # fmt: skip
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return parser


def _bands(text: str) -> tuple[int, ...]:
    try:
        return parse_bands(text)
    except ValueError as exc:  # argparse shows an ArgumentTypeError's own message
        raise argparse.ArgumentTypeError(str(exc)) from None


def _pixels(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of pixels, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more pixels, got {value}")
    return value


def _gsd(text: str) -> float:
    try:
        return check_gsd(text, "--gsd")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _formats(text: str) -> tuple[str, ...]:
    kinds = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(f"formats are a comma-separated choice of {','.join(KINDS)}, got {text!r}")
    return kinds


def _describe(plan: ScenePlan, results: list[Any]) -> list[str]:
    """Lines to print: per expression for one image, per run for many."""
    if plan.out_dir is None:
        job, record = plan.jobs[0], results[0]
        lines = []
        for k, text in enumerate(plan.texts):
            written = ", ".join(str(job.outputs[kind][k]) for kind in KINDS if kind in job.outputs)
            details = ""
            if record.polygons and record.polygons[k] is not None:
                fraction = record.target_pixels[k] / max(record.valid_pixels, 1)
                details = f" ({fraction:.2%} of the image, {record.polygons[k]} polygons)"
            lines.append(f"{text!r}: {written}{details}")
        return [*lines, record.scale] if record.scale else lines
    counts = {s: sum(r.status.startswith(s) for r in results) for s in ("predicted", "resumed", "failed")}
    summary = ", ".join(str(p) for p in plan.summary_written)
    return [f"{len(results)} scenes: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + f"; summary: {summary}"]


def scene_options(args: argparse.Namespace) -> SceneOptions:
    """The parsed command line as the scene runner's options: with ``-e`` every item is an
    input, else the first item is the image and the rest are expressions."""
    from .geo.scene_run import SceneOptions

    inputs, expressions = (args.items, args.expression) if args.expression else (args.items[:1], args.items[1:])
    named = {f.name: getattr(args, f.name) for f in fields(SceneOptions) if f.name not in ("inputs", "expressions")}
    return SceneOptions(inputs=inputs, expressions=expressions, **named)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # OpenMP threads that spin while they wait cost a whole command 1.2-2x its time on a shared
    # machine (docs/benchmarks.md, "Fast where people wait"); it takes effect only before torch loads
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # imported after parsing: --help and argument errors answer without loading torch
    from .geo.scene_run import plan_run, run_jobs

    plan = None
    try:
        options = scene_options(args)
        plan = plan_run(options)
        results = run_jobs(plan, options)
    except ValueError as exc:
        if plan is not None:  # refused before writing: leave no empty folder behind either
            remove_empty_folders(plan.created)
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    if results is None:  # not rank 0 of a torchrun job: rank 0 reports
        return 0
    for line in _describe(plan, results):
        print(line)
    failed = [r for r in results if r.status.startswith("failed")]
    for record in failed:
        print(f"{record.image}: {record.status}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
