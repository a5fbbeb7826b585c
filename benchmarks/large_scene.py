"""Large-scene benchmark: time and peak memory of `python -m sbanet.predict` on a big GeoTIFF,
plus the polygon figures on the spacenet sample.

    python -m benchmarks.large_scene --size 4000 --preset sbanet_lite --json benchmarks/results/large_scene.json

The scene is a mosaic of the real spacenet panchromatic tile (``sample_geotiff.tif``, 900 x 900,
uint16, EPSG:32616, 0.5 m), mirrored to ``size x size`` pixels with the tile's CRS and pixel
size, written as a tiled, deflate-compressed GeoTIFF into a temporary folder (never committed).
The command runs in a child process; its peak resident memory is the child's ``ru_maxrss``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
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

ROOT = Path(__file__).resolve().parents[1]
SPACENET = ROOT.parent / "shared" / "data" / "spacenet-sample"
BASELINE_SIZE = 256  # one tile: process start, imports, model and tokenizer, no scene to speak of


def mirrored(index: np.ndarray, length: int) -> np.ndarray:
    """Indices into ``length`` pixels that run forwards, backwards, forwards... (no seams)."""
    index = index % (2 * length)
    return np.where(index < length, index, 2 * length - 1 - index)


def build_mosaic(path: Path, size: int) -> Path:
    """Mirror-tile the spacenet scene to ``size x size`` (written by 1024-row bands)."""
    with rasterio.open(SPACENET / "sample_geotiff.tif") as src:
        tile, profile = src.read(1), src.profile
    profile.update(width=size, height=size, tiled=True, blockxsize=256, blockysize=256, compress="deflate")
    profile.pop("photometric", None)
    rows = tile[:, mirrored(np.arange(size), tile.shape[1])]  # [900, size]
    with rasterio.open(path, "w", **profile) as dst:
        for top in range(0, size, 1024):
            height = min(1024, size - top)
            index = mirrored(np.arange(top, top + height), tile.shape[0])
            dst.write(rows[index], 1, window=Window(0, top, size, height))
    return path


def run_cli(args: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MiB) of the child, and its output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"command failed ({done.returncode}):\n{done.stderr}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak <= before:
        print("warning: an earlier child had a higher peak; the figure is an upper bound", file=sys.stderr)
    return seconds, peak / 1024, done.stdout.strip()


def polygon_figures() -> dict[str, float | int]:
    """sample_fp_mask.tif vectorised on sample_geotiff.tif's grid vs geotiff_labels.geojson."""
    from sbanet.geo import geo_metadata
    from sbanet.vector import mask_iou, mask_to_polygons, rasterize_polygons
    from sbanet.writers import read_mask

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=4000, help="scene side in pixels")
    parser.add_argument("--preset", default="sbanet_lite", help="model preset (random weights)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    if not SPACENET.is_dir():
        raise SystemExit(f"needs the spacenet sample at {SPACENET}")
    results: dict = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count()}
    results["polygons"] = polygon_figures()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:

        def command(size: int) -> list[str]:
            scene = build_mosaic(Path(tmp) / f"scene{size}.tif", size)
            line = [sys.executable, "-m", "sbanet.predict", str(scene), "all buildings", "--preset", args.preset]
            line += ["--device", "cpu", "--batch-size", str(args.batch_size), "-q"]
            return [*line, "--out", str(Path(tmp) / "mask.tif"), "--vector", str(Path(tmp) / "buildings.gpkg")]

        # the same command on a scene of one small tile first: what the process costs without a scene
        base_seconds, base_peak_mib, _ = run_cli(command(BASELINE_SIZE))
        scene_command = command(args.size)
        seconds, peak_mib, output = run_cli(scene_command)
        with rasterio.open(Path(tmp) / "mask.tif") as ds:
            assert ds.width == ds.height == args.size
    from sbanet.build import PRESET_CONFIGS
    from sbanet.tiling import tile_grid

    tile = PRESET_CONFIGS[args.preset]().image_size
    megapixels = args.size**2 / 1e6
    results["scene"] = {
        "command": shlex.join(scene_command).replace(tmp, "$TMP"),
        "pixels": f"{args.size}x{args.size}",
        "preset": args.preset,
        "tiles": f"{sum(map(len, tile_grid(args.size, args.size, tile, tile // 4)))} of {tile}x{tile}",
        "seconds": round(seconds, 1),
        "seconds_per_megapixel": round(seconds / megapixels, 2),
        "peak_rss_mib": round(peak_mib),
        f"baseline_{BASELINE_SIZE}px_seconds": round(base_seconds, 1),
        f"baseline_{BASELINE_SIZE}px_peak_rss_mib": round(base_peak_mib),
        "scene_rgb_mib_if_held": round(args.size**2 * 3 / 2**20),
        "output": output.replace(tmp, "$TMP"),
        "load_average_1min_before_after": [round(load_before, 1), round(os.getloadavg()[0], 1)],
    }
    print("| measure | value |\n| --- | --- |")
    for key, value in {**results["polygons"], **results["scene"]}.items():
        print(f"| {key} | {value:.4g} |" if isinstance(value, float) else f"| {key} | {value} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
