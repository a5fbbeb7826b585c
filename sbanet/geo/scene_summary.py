"""The table at the end of a many-scene run: one row per scene, the area of each expression.

``summary.csv`` has every scene; ``summary.gpkg`` (layer ``footprints``) has the georeferenced
ones, each as its footprint (the raster's bounds, densified) in WGS 84 so scenes in different
CRSs share one layer, with the same columns.

Columns: ``scene``, ``image``, ``status`` (``predicted``, ``resumed``: outputs already there
and read back, or ``failed: <reason>``), ``width``, ``height``, ``crs``, ``valid_pixels``
(pixels with data), ``area_unit``, and per expression ``<slug>_pixels`` (mask pixels),
``<slug>_fraction`` (of the valid pixels) and ``<slug>_area``. The area is in ``m^2`` for a
georeferenced scene: the mask pixels times the mean ground area of a pixel (the footprint's
area on the WGS 84 ellipsoid divided by the pixel count, so it agrees with the polygons'
``area`` up to how much the pixel area varies over the scene). An image without a CRS has no
ground area: its area is the pixel count and ``area_unit`` says ``pixels``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .raster import GeoInfo
from .writers import partial_path, publish

if TYPE_CHECKING:
    import shapely

# shapely and pyproj (sbanet.geo.vector) are imported where a summary is written: a one-image
# command, which writes none, does not pay their import

FOOTPRINT_LAYER = "footprints"
FOOTPRINT_POINTS_PER_SIDE = 16  # densified edges: a footprint stays close to its curved outline in WGS 84


@dataclass(frozen=True)
class SceneRecord:
    """What the run did with one scene (picklable: ranks send these to rank 0). Per expression:
    ``target_pixels`` and ``polygons`` (None where none were made this run); ``scale``: how the
    scene was resampled to the model's training GSD, or why not."""

    scene: str
    image: str
    info: GeoInfo | None
    valid_pixels: int = 0
    target_pixels: tuple[int, ...] = ()
    polygons: tuple[int | None, ...] = ()
    status: str = "predicted"
    scale: str = ""


def footprint(info: GeoInfo) -> shapely.Polygon:
    """The raster's outline in its own coordinates (pixels without a CRS), edges densified."""
    import shapely

    corners = [(0, 0), (info.width, 0), (info.width, info.height), (0, info.height)]
    outline = shapely.Polygon([info.affine @ corner for corner in corners])
    step = max(outline.length / (4 * FOOTPRINT_POINTS_PER_SIDE), 1e-12)
    return shapely.segmentize(outline, step)


def pixel_area(info: GeoInfo) -> tuple[float, str]:
    """Mean ground area of one pixel and its unit: ``m^2`` (georeferenced) or 1 ``pixels``."""
    if not info.is_georeferenced:
        return 1.0, "pixels"
    from .vector import polygon_areas

    (area,) = polygon_areas([footprint(info)], info.crs)
    return area / (info.width * info.height), "m^2"


def summary_rows(records: Sequence[SceneRecord], slugs: Sequence[str]) -> list[dict[str, Any]]:
    """One dict per record with the module docstring's columns (None where unknown)."""
    rows = []
    for record in records:
        info = record.info
        row: dict[str, Any] = {"scene": record.scene, "image": record.image, "status": record.status}
        row.update(width=None, height=None, crs=None, valid_pixels=None, area_unit=None)
        if info is not None:
            per_pixel, unit = pixel_area(info)
            row.update(width=info.width, height=info.height, crs=info.crs, area_unit=unit)
        for k, s in enumerate(slugs):
            row.update({f"{s}_pixels": None, f"{s}_fraction": None, f"{s}_area": None})
            if info is not None and record.target_pixels:
                pixels = record.target_pixels[k]
                row["valid_pixels"] = record.valid_pixels
                row[f"{s}_pixels"] = pixels
                row[f"{s}_fraction"] = round(pixels / record.valid_pixels, 6) if record.valid_pixels else 0.0
                row[f"{s}_area"] = round(pixels * per_pixel, 3)
        rows.append(row)
    return rows


def _csv_text(rows: Sequence[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    return out.getvalue()


def _column(values: list[Any]) -> np.ndarray:
    """A GeoPackage field: integers and reals as such (NaN for none), anything else text."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, int) for v in present) and len(present) == len(values):
        return np.array(values, dtype=np.int64)
    if present and all(isinstance(v, (int, float)) for v in present):
        return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    return np.array([None if v is None else str(v) for v in values], dtype=object)


def write_footprints(path: Path, records: Sequence[SceneRecord], rows: Sequence[dict[str, Any]]) -> bool:
    """The georeferenced scenes' footprints in WGS 84 with their rows; False when there are none."""
    import shapely
    from pyogrio.raw import write

    from .vector import polygons_to_wgs84

    keep = [(r, row) for r, row in zip(records, rows) if r.info is not None and r.info.is_georeferenced]
    if not keep:
        return False
    shapes = [polygons_to_wgs84([footprint(r.info)], r.info.crs)[0] for r, _ in keep]
    fields = list(rows[0])
    write(
        str(path),
        np.array([shapely.to_wkb(s) for s in shapes], dtype=object),
        field_data=[_column([row[f] for _, row in keep]) for f in fields],
        fields=fields,
        crs="EPSG:4326",
        geometry_type="Polygon",
        driver="GPKG",
        layer=FOOTPRINT_LAYER,
    )
    return True


def write_summary(records: Sequence[SceneRecord], slugs: Sequence[str], csv_path: Path, gpkg_path: Path) -> list[Path]:
    """Write ``csv_path`` and (when any scene is georeferenced) ``gpkg_path``, each atomically;
    returns the paths written."""
    if not records:
        raise ValueError("no scenes to summarise")
    rows = summary_rows(records, slugs)
    partial_path(csv_path).write_text(_csv_text(rows))
    written = [publish(csv_path)]
    partial_path(gpkg_path).unlink(missing_ok=True)
    if write_footprints(partial_path(gpkg_path), records, rows):
        written.append(publish(gpkg_path))
    else:  # no georeferenced scene: an older layer must not stand for this run
        gpkg_path.unlink(missing_ok=True)
    return written
