"""Segment scenes of any size, one or thousands: plan, shard, predict, report.

What ``python -m sbanet.predict`` runs once its arguments are parsed, and what a program calls
with a :class:`SceneOptions`::

    options = SceneOptions(inputs=["archive/"], expressions=["all buildings"], out_dir=Path("results"))
    plan = plan_run(options)
    records = run_jobs(plan, options)

:func:`plan_run` turns the options into :class:`~sbanet.geo.scenes.SceneJob` s (one image with
named outputs, or many with an output folder) and refuses, before any work, every output that
would be an input, collide with another, or replace a file without ``--overwrite``.
:func:`run_jobs` joins the ``torchrun`` process group when there is one, takes this rank's
share of the scenes, predicts each (:func:`predict_job`: tiles -> GeoTIFFs written by windows,
polygons, all published atomically) and gathers every rank's records on rank 0, which writes
the summary.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from sbanet import __version__
from sbanet.build import build_preset
from sbanet.checkpoint import checkpoint_metadata
from sbanet.inference.gsd import WHOLE_MAX, check_gsd, no_scale_note
from sbanet.inference.precision import precision_from_env
from sbanet.inference.predictor import Predictor
from sbanet.inference.shipped import default_model_source
from sbanet.text_rules import check_expression
from sbanet.training.distributed import barrier, cleanup, gather_objects, init_from_env

from .raster import GeoInfo, geo_metadata, open_raster
from .resolution import raster_gsd
from .scene_summary import SceneRecord, write_summary
from .scenes import (
    KINDS,
    SceneJob,
    check_plan,
    find_inputs,
    make_folders,
    output_paths,
    plan_folder,
    shard,
    unique_slugs,
)
from .tiling import default_overlap, predict_scene, scaled_tile, tile_count
from .writers import (
    ArrayWriter,
    CountWriter,
    GeoTiffWriter,
    TeeWriter,
    count_mask,
    discard,
    partial_path,
    publish,
    read_mask,
    write_mask_png,
)

SINGLE_OPTIONS = {"out": "mask", "probability": "probability", "vector": "polygons", "geojson": "geojson"}
SUFFIXES = {
    "mask": {".tif", ".tiff", ".png"},
    "probability": {".tif", ".tiff"},
    "polygons": {".gpkg"},
    "geojson": {".geojson", ".json"},
}
GEOTIFF_SUFFIXES = {".tif", ".tiff"}
SUMMARY_NAMES = ("summary.csv", "summary.gpkg")


@dataclass(frozen=True)
class SceneOptions:
    """Everything a scene run is asked to do (``python -m sbanet.predict``'s options, by name).

    ``inputs``: image files, folders and glob patterns; ``expressions``: what to segment. One
    image writes the outputs named by ``out`` (mask), ``probability``, ``vector`` (GeoPackage)
    and ``geojson``; many write ``formats`` into ``out_dir``. ``precision`` None: ``$SBANET_PRECISION``
    when set, else ``"auto"`` (:mod:`sbanet.inference.precision`). ``gsd``: the images' metres
    per pixel (for images that state none; it overrides what a GeoTIFF states); without it a
    GeoTIFF's own GSD is used; either way each scene is resampled to the model's training GSD
    (:func:`scene_tile`) unless ``no_gsd``. An image of unknown GSD no longer than ``whole_max``
    pixels runs whole, resized to the input size (as the app does); a larger one is tiled.
    """

    inputs: Sequence[str]
    expressions: Sequence[str]
    out: Path | None = None
    probability: Path | None = None
    vector: Path | None = None
    geojson: Path | None = None
    out_dir: Path | None = None
    formats: tuple[str, ...] = ("mask", "polygons")
    probability_dtype: str = "float32"
    cog: bool = False
    simplify: float = 0.0
    min_area: float = 0.0
    overwrite: bool = False
    resume: bool = False
    model: str | None = None
    preset: str | None = None
    device: str | None = None
    precision: str | None = None
    bands: tuple[int, ...] | None = None
    threshold: float = 0.5
    tile_overlap: int | None = None
    batch_size: int = 4
    quiet: bool = False
    gsd: float | None = None
    no_gsd: bool = False
    whole_max: int = WHOLE_MAX


@dataclass
class ScenePlan:
    """The checked work of a run: expressions, every scene's job, where the summary goes."""

    texts: list[str]
    jobs: list[SceneJob]
    out_dir: Path | None = None
    summary_written: list[Path] = field(default_factory=list)
    created: list[Path] = field(default_factory=list)  # output folders the run made (deepest first)

    @property
    def summary_paths(self) -> list[Path]:
        return [] if self.out_dir is None else [self.out_dir / name for name in SUMMARY_NAMES]


def _single_job(args: SceneOptions, image: Path, texts: list[str]) -> SceneJob:
    outputs: dict[str, list[Path | None]] = {}
    for option, kind in SINGLE_OPTIONS.items():
        path = getattr(args, option)
        if path is None:
            continue
        if path.suffix.lower() not in SUFFIXES[kind]:
            raise ValueError(f"--{option} must end in one of {sorted(SUFFIXES[kind])}, got {path.name}")
        outputs[kind] = output_paths(path, texts)
    if not outputs:
        raise ValueError("nothing to write: give --out, --probability, --vector and/or --geojson, or --out-dir")
    return SceneJob(image, image.stem, outputs)


def plan_run(args: SceneOptions) -> ScenePlan:
    """Check the options and the file system; create the output folders. ``ValueError`` for
    anything wrong, before any model is loaded or file written."""
    if not 0.0 < args.threshold < 1.0:
        raise ValueError(f"--threshold must be in (0, 1), got {args.threshold}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.gsd is not None:
        if args.no_gsd:
            raise ValueError("--gsd and --no-gsd contradict each other: give one")
        check_gsd(args.gsd, "--gsd")
    inputs, expressions = list(args.inputs), list(args.expressions)
    if not expressions:
        raise ValueError("no expression given: name what to segment, e.g. 'all buildings' (or -e)")
    texts = [check_expression(e) for e in expressions]
    named = [f"--{option}" for option in SINGLE_OPTIONS if getattr(args, option) is not None]
    images = find_inputs(inputs)
    if args.out_dir is None:
        if len(images) != 1 or not Path(inputs[0]).is_file():
            raise ValueError(f"{len(images)} images: give an output folder with --out-dir")
        jobs, out_dir = [_single_job(args, images[0], texts)], None
    else:
        if named:
            raise ValueError(f"--out-dir names every output itself: drop {', '.join(named)}")
        if "mask" not in args.formats:
            raise ValueError("--formats must include mask (--resume and the summary read the masks)")
        out_dir = args.out_dir
        if any(Path(i).is_dir() and Path(i).resolve() == out_dir.resolve() for i in inputs):
            raise ValueError(f"--out-dir {out_dir} is an input folder: write the outputs to another folder")
        jobs = plan_folder(images, texts, out_dir, args.formats)
    plan = ScenePlan(texts, jobs, out_dir)
    plan.jobs = check_plan(jobs, plan.summary_paths, overwrite=args.overwrite, resume=args.resume)
    plan.created = make_folders([p for job in plan.jobs for p in job.paths()] + plan.summary_paths)
    return plan


def load_predictor(args: SceneOptions, device: Any) -> tuple[Predictor, str, str]:
    """The predictor, a label for the model and its version (polygon attributes)."""
    precision = args.precision or precision_from_env("auto")
    if args.preset:
        model = build_preset(args.preset, pretrained=False).eval()
        return (
            Predictor(model, device=device, precision=precision),
            f"{args.preset} (random weights)",
            f"sbanet {__version__}",
        )
    source = default_model_source(args.model)
    version = checkpoint_metadata(source).get("version", f"sbanet {__version__}")
    label = source if not Path(source).exists() else Path(source).resolve().name
    return Predictor.from_pretrained(source, device=device, precision=precision), label, str(version)


def scene_tile(predictor: Predictor, info: GeoInfo, args: SceneOptions) -> tuple[tuple[int, int] | None, str]:
    """``(tile, note)``: the source pixels per model tile (None: tiles of the input size) and, for
    people, the scale used or why none.

    At the model's training GSD when one is known: ``args.gsd``, else the one the raster states
    (:func:`sbanet.geo.resolution.raster_gsd`); ``ValueError`` when ``--gsd`` is given to a model
    that records no training GSD. Otherwise an image no longer than ``args.whole_max`` pixels is
    one tile, the whole image resized to the input size as the app and the training's whole images
    do (an expression such as "the road on the left" then means the image's left, not a tile's);
    a larger one is tiled at its own pixel size."""
    training = predictor.training_gsd
    reading = None
    if args.gsd is not None and not args.no_gsd:
        return scaled_tile(predictor, info.height, info.width, args.gsd)
    if not args.no_gsd:
        reading = raster_gsd(info)
        if training is not None and reading.gsd is not None:
            tile, note = scaled_tile(predictor, info.height, info.width, reading.gsd)
            return tile, f"{note} ({reading.reason})"
    if max(info.height, info.width) <= args.whole_max:
        tile, then = (info.height, info.width), "the whole image resized to the input size, as the app does"
    else:
        tile, then = None, f"over {args.whole_max} px: tiled at its own pixel size"
    note = no_scale_note(training, None if reading is None else reading.gsd, off=args.no_gsd, then=then)
    needs_reason = reading is not None and training is not None
    return tile, f"{note} ({reading.reason})" if needs_reason else note


def _header(path: Path) -> GeoInfo | None:
    try:
        return geo_metadata(path)
    except ValueError:  # reported when the scene's rank reads it
        return None


def predict_job(
    model: tuple[Predictor, str, str],
    job: SceneJob,
    texts: list[str],
    args: SceneOptions,
    callback: Callable[[int, int], Any] | None = None,
) -> SceneRecord:
    """Predict one scene and publish its pending outputs (a finished one is read back)."""
    count = len(texts)
    masks = job.outputs.get("mask", [None] * count)
    if job.finished:
        counts = [count_mask(p) for p in masks if p is not None and p.suffix.lower() in GEOTIFF_SUFFIXES]
        targets = tuple(c[0] for c in counts) if len(counts) == count else ()
        valid = counts[0][1] if counts else 0
        return SceneRecord(job.name, str(job.image), geo_metadata(job.image), valid, targets, (), "resumed")
    pending = {kind: job.pending(kind) or [None] * count for kind in KINDS}
    written = [p for paths in pending.values() for p in paths if p is not None]
    predictor, label, version = model
    try:
        with open_raster(job.image, args.bands) as source:
            info = source.info
            if any(pending["geojson"]) and not info.is_georeferenced:
                raise ValueError(f"GeoJSON needs a georeferenced image; {job.image.name} has no CRS (use polygons)")
            tif = [p if p is not None and p.suffix.lower() in GEOTIFF_SUFFIXES else None for p in pending["mask"]]
            png = [p if p is not None and p.suffix.lower() == ".png" else None for p in pending["mask"]]
            shapes = [pending["polygons"][k] or pending["geojson"][k] for k in range(count)]
            # the mask each expression's polygons / PNG come from: a GeoTIFF written now or kept
            files = [
                partial_path(tif[k]) if tif[k] else (masks[k] if masks[k] in job.done and png[k] is None else None)
                for k in range(count)
            ]
            counts = CountWriter(count, args.threshold)
            writers: list[Any] = [counts]
            if any(tif) or any(pending["probability"]):
                partials = [[partial_path(p) if p else None for p in pending[kind]] for kind in ("mask", "probability")]
                writers.append(GeoTiffWriter(info, *partials, args.threshold, args.probability_dtype))
            tile, scale = scene_tile(predictor, info, args)
            in_memory = None
            if any((shapes[k] or png[k]) and files[k] is None for k in range(count)):
                in_memory = ArrayWriter(count, info.height, info.width, args.threshold, keep_probability=False)
                writers.append(in_memory)
            predict_scene(
                predictor,
                source,
                texts,
                overlap=args.tile_overlap,
                batch_size=args.batch_size,
                threshold=args.threshold,
                writer=TeeWriter(*writers),
                callback=callback,
                tile=tile,
            )
        polygon_counts: list[int | None] = [None] * count
        for k, text in enumerate(texts):
            if not (shapes[k] or png[k]):
                continue
            mask = in_memory.mask[k] if files[k] is None else read_mask(files[k])
            if png[k]:
                write_mask_png(partial_path(png[k]), mask)
            if shapes[k]:
                from .vector import mask_to_polygons, write_geojson, write_geopackage  # shapely, pyproj

                polygons = mask_to_polygons(mask, info.affine, args.simplify, args.min_area)
                attributes = {"expression": text, "model": label, "model_version": version}
                if pending["polygons"][k]:
                    write_geopackage(partial_path(pending["polygons"][k]), polygons, info.crs, attributes)
                if pending["geojson"][k]:
                    write_geojson(partial_path(pending["geojson"][k]), polygons, info.crs, attributes)
                polygon_counts[k] = len(polygons)
        for path in written:
            publish(path, cog=args.cog and path.suffix.lower() in GEOTIFF_SUFFIXES)
    except BaseException:
        for path in written:
            discard(path)
        raise
    targets = tuple(int(t) for t in counts.target)
    return SceneRecord(job.name, str(job.image), info, counts.valid, targets, tuple(polygon_counts), scale=scale)


def run_jobs(plan: ScenePlan, args: SceneOptions) -> list[SceneRecord] | None:
    """This rank's scenes; on rank 0 every rank's records in the plan's order (None elsewhere)."""
    dist = init_from_env(args.device or "auto")
    try:
        headers = [_header(job.image) for job in plan.jobs]
        sizes = [0 if h is None else h.width * h.height for h in headers]
        mine = shard(plan.jobs, sizes, dist.rank, dist.world_size)
        todo = [job for job in mine if not job.finished]
        model = load_predictor(args, dist.device) if todo else None
        if model is not None:  # words the model cannot read: refused before any scene is written
            plan.texts = [model[0].check_expression(text) for text in plan.texts]
        barrier()  # every rank has checked the plan before any rank writes
        total = 0
        if model is not None:
            header = {job.image: h for job, h in zip(plan.jobs, headers)}
            known = [header[job.image] for job in todo if header[job.image] is not None]
            for h in known:
                tile = scene_tile(model[0], h, args)[0] or (model[0].config.image_size,) * 2
                overlap = [default_overlap(n) for n in tile] if args.tile_overlap is None else args.tile_overlap
                total += tile_count(h.height, h.width, tile, overlap)
        records = []
        with tqdm(total=total, unit="tile", disable=args.quiet or not dist.is_main) as bar:
            for n, job in enumerate(mine, 1):
                bar.set_description(f"scene {n}/{len(mine)} {job.name}"[:60])
                seen = [0]

                def advance(done: int, _total: int, seen: list[int] = seen) -> None:
                    bar.update(done - seen[0])
                    seen[0] = done

                try:
                    records.append(predict_job(model, job, plan.texts, args, advance))
                except ValueError as exc:
                    if plan.out_dir is None:
                        raise
                    records.append(SceneRecord(job.name, str(job.image), None, status=f"failed: {exc}"))
        gathered = [r for rank_records in gather_objects(records) for r in rank_records]
        if not dist.is_main:
            return None
        order = {str(job.image): i for i, job in enumerate(plan.jobs)}
        results = sorted(gathered, key=lambda r: order[r.image])
        if plan.out_dir is not None:
            plan.summary_written = write_summary(results, unique_slugs(plan.texts), *plan.summary_paths)
        return results
    finally:
        cleanup()
