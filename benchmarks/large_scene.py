"""Large-scene and many-scene benchmark of `python -m sbanet.predict` (the shipped model by
default): time, megapixels per second and peak memory, plus the polygon figures on the spacenet
sample.

    python -m benchmarks.large_scene --json benchmarks/results/large_scene.json

Scene: the real spacenet panchromatic tile (``sample_geotiff.tif``, 900 x 900, uint16,
EPSG:32616, 0.5 m) mirrored to ``size x size`` pixels with the tile's CRS and pixel size,
written as a tiled, deflate-compressed GeoTIFF into a temporary folder (never committed).
Folder: ``--folder-scenes`` such mosaics of ``--folder-size`` pixels (each from another offset),
segmented by one command in one process, then by ``torchrun --standalone --nproc-per-node 2``.
Every command runs in a child process; its peak resident memory is the largest ``ru_maxrss``
of the child processes (for torchrun: of one worker, not their sum).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import shapely
from rasterio.windows import Window
from shapely.geometry import shape

from sbanet.geo.tiling import default_overlap, tile_count

ROOT = Path(__file__).resolve().parents[1]
SPACENET = ROOT.parent / "shared" / "data" / "spacenet-sample"
BASELINE_SIZE = 256  # one tile: process start, imports, model and tokenizer, no scene to speak of


def mirrored(index: np.ndarray, length: int) -> np.ndarray:
    """Indices into ``length`` pixels that run forwards, backwards, forwards... (no seams)."""
    index = index % (2 * length)
    return np.where(index < length, index, 2 * length - 1 - index)


def build_mosaic(path: Path, size: int, offset: int = 0) -> Path:
    """Mirror-tile the spacenet scene to ``size x size``, starting ``offset`` pixels into it
    down and across (written by 1024-row bands)."""
    with rasterio.open(SPACENET / "sample_geotiff.tif") as src:
        tile, profile = src.read(1), src.profile
    profile.update(width=size, height=size, tiled=True, blockxsize=256, blockysize=256, compress="deflate")
    profile.pop("photometric", None)
    rows = tile[:, mirrored(np.arange(size) + offset, tile.shape[1])]  # [900, size]
    with rasterio.open(path, "w", **profile) as dst:
        for top in range(0, size, 1024):
            height = min(1024, size - top)
            index = mirrored(np.arange(top, top + height) + offset, tile.shape[0])
            dst.write(rows[index], 1, window=Window(0, top, size, height))
    return path


def run_cli(args: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MiB) of the child or of its largest descendant, and its output."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=err, text=True, env=env)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        if child.returncode != 0:
            raise SystemExit(f"command failed ({child.returncode}):\n{err.read()}")
        return seconds, usage.ru_maxrss / 1024, out.read().strip()


def polygon_figures() -> dict[str, float | int]:
    """sample_fp_mask.tif vectorised on sample_geotiff.tif's grid vs geotiff_labels.geojson."""
    from sbanet.geo.raster import geo_metadata
    from sbanet.geo.vector import mask_to_polygons, rasterize_polygons
    from sbanet.geo.writers import read_mask
    from sbanet.training.metrics import mask_iou

    info = geo_metadata(SPACENET / "sample_geotiff.tif")
    mask = read_mask(SPACENET / "sample_fp_mask.tif")
    labels = [shape(f["geometry"]) for f in json.loads((SPACENET / "geotiff_labels.geojson").read_text())["features"]]
    polygons = mask_to_polygons(mask, info.transform)
    grid = (info.height, info.width)
    burnt_labels = rasterize_polygons(labels, grid, info.transform)
    round_trip = mask_to_polygons(burnt_labels, info.transform)
    union = shapely.union_all(round_trip), shapely.union_all(labels)
    return {
        "fp_mask_polygons": len(polygons),
        "label_polygons": len(labels),
        "fp_mask_vs_labels_raster_iou": mask_iou(rasterize_polygons(polygons, grid, info.transform), burnt_labels),
        "fp_mask_polygons_vs_mask_iou": mask_iou(rasterize_polygons(polygons, grid, info.transform), mask),
        "labels_round_trip_geometric_iou": union[0].intersection(union[1]).area / union[0].union(union[1]).area,
    }


def model_options(args: argparse.Namespace) -> tuple[list[str], str, int]:
    """Command-line model options, a label and the model's tile size."""
    if args.preset:
        from sbanet.build import PRESET_CONFIGS

        return ["--preset", args.preset], f"{args.preset} (random weights)", PRESET_CONFIGS[args.preset]().image_size
    from sbanet.checkpoint import checkpoint_metadata
    from sbanet.config import SBANetConfig
    from sbanet.inference.shipped import default_model_source

    source = default_model_source(args.model)
    config = SBANetConfig(**json.loads((Path(source) / "config.json").read_text())["config"])
    label = f"{Path(source).name} ({checkpoint_metadata(source).get('version', '?')})"
    return ["--model", source], label, config.image_size


def scene_benchmark(args: argparse.Namespace, tmp: Path, model: list[str], tile: int) -> dict:
    """The ``--size`` scene, after the same command on one small tile (the fixed cost)."""

    def command(size: int) -> list[str]:
        scene = build_mosaic(tmp / f"scene{size}.tif", size)
        line = [sys.executable, "-m", "sbanet.predict", str(scene), "all buildings", *model, "--device", "cpu"]
        line += ["--batch-size", str(args.batch_size), "-q", "--overwrite"]
        return [*line, "--out", str(tmp / "mask.tif"), "--vector", str(tmp / "buildings.gpkg")]

    base_seconds, base_peak_mib, _ = run_cli(command(BASELINE_SIZE))
    scene_command = command(args.size)
    load_before = os.getloadavg()[0]
    seconds, peak_mib, output = run_cli(scene_command)
    with rasterio.open(tmp / "mask.tif") as ds:
        assert ds.width == ds.height == args.size
    megapixels = args.size**2 / 1e6
    return {
        "command": shlex.join(scene_command).replace(str(tmp), "$TMP"),
        "pixels": f"{args.size}x{args.size}",
        "tiles": f"{tile_count(args.size, args.size, tile, default_overlap(tile))} of {tile}x{tile}",
        "seconds": round(seconds, 1),
        "megapixels_per_second": round(megapixels / seconds, 3),
        "seconds_without_fixed_cost": round(seconds - base_seconds, 1),
        "peak_rss_mib": round(peak_mib),
        f"baseline_{BASELINE_SIZE}px_seconds": round(base_seconds, 1),
        f"baseline_{BASELINE_SIZE}px_peak_rss_mib": round(base_peak_mib),
        "output": output.replace(str(tmp), "$TMP"),
        "load_average_1min_before_after": [round(load_before, 1), round(os.getloadavg()[0], 1)],
    }


def folder_benchmark(args: argparse.Namespace, tmp: Path, model: list[str]) -> dict:
    """``--folder-scenes`` scenes by one process, then by torchrun with 2 processes."""
    folder = tmp / "folder"
    folder.mkdir()
    for i in range(args.folder_scenes):
        build_mosaic(folder / f"scene{i:02d}.tif", args.folder_size, offset=37 * i)
    line = ["-m", "sbanet.predict", str(folder), "all buildings", *model, "--device", "cpu", "-q"]
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    results: dict = {"scenes": f"{args.folder_scenes} x {args.folder_size}x{args.folder_size}"}
    megapixels = args.folder_scenes * args.folder_size**2 / 1e6
    for name, prefix, threads in (("one_process", [], None), ("torchrun_2", launcher, "1")):
        env = {**os.environ, **({"OMP_NUM_THREADS": threads} if threads else {})}
        command = [sys.executable, *prefix, *line, "-d", str(tmp / name)]
        load_before = os.getloadavg()[0]
        seconds, peak_mib, output = run_cli(command, env)
        results[name] = {
            "command": shlex.join(command).replace(str(tmp), "$TMP"),
            "seconds": round(seconds, 1),
            "megapixels_per_second": round(megapixels / seconds, 3),
            "peak_rss_mib_one_process": round(peak_mib),
            "output": output.replace(str(tmp), "$TMP"),
            "load_average_1min_before_after": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        }
    same = all(
        np.array_equal(rasterio.open(a).read(1), rasterio.open(tmp / "torchrun_2" / a.name).read(1))
        for a in sorted((tmp / "one_process").glob("*.tif"))
    )
    results["masks_identical"] = same if "--preset" not in model else "n/a: each process draws its own random weights"
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=4000, help="scene side in pixels")
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--model", help="checkpoint (default: the shipped model)")
    choice.add_argument("--preset", help="a preset with random weights instead")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--folder-scenes", type=int, default=20, help="scenes in the folder benchmark (0: none)")
    parser.add_argument("--folder-size", type=int, default=640, help="side of each folder scene in pixels")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    if not SPACENET.is_dir():
        raise SystemExit(f"needs the spacenet sample at {SPACENET}")
    model, label, tile = model_options(args)
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.machine(),
    )
    results: dict = {"cpu": cpu, "cpus": os.cpu_count(), "model": label, "polygons": polygon_figures()}
    with tempfile.TemporaryDirectory() as tmp:
        results["scene"] = scene_benchmark(args, Path(tmp), model, tile)
        save(results, args.json)  # each part as soon as it is measured: the folder part is long
        if args.folder_scenes:
            results["folder"] = folder_benchmark(args, Path(tmp), model)
            save(results, args.json)
    print(json.dumps(results, indent=2))


def save(results: dict, path: Path | None) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
