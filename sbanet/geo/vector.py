"""Masks to polygons: GeoPackage in the image's own CRS, GeoJSON in WGS 84 (RFC 7946).

:func:`mask_to_polygons` traces a ``bool [H, W]`` mask (``rasterio.features.shapes``) into
shapely polygons in map coordinates (pixel coordinates for an image without georeferencing),
optionally simplified (tolerance in map units) and filtered by a minimum area (map units^2).

Each feature carries the attributes given (e.g. ``expression``, ``model``, ``model_version``)
plus ``area``: m^2 on the WGS 84 ellipsoid when the image is georeferenced (whatever its CRS),
pixels otherwise. GeoPackages are written with pyogrio (GDAL); GeoJSON needs no library: it is
reprojected with pyproj to longitude / latitude, exterior rings counter-clockwise and holes
clockwise (the right-hand rule), and carries no ``crs`` member.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from pyproj import CRS, Geod, Transformer
from rasterio import features
from rasterio.transform import Affine
from shapely.geometry import mapping, shape
from shapely.geometry.polygon import orient

WGS84 = "EPSG:4326"
GEOJSON_DECIMALS = 7  # about 1 cm at the equator


def as_affine(transform: Affine | Sequence[float] | None) -> Affine:
    """An ``Affine``, a 6-tuple ``(a, b, c, d, e, f)`` (see :class:`~sbanet.geo.raster.GeoInfo`) or None (pixels)."""
    if transform is None:
        return Affine.identity()
    return transform if isinstance(transform, Affine) else Affine(*tuple(transform)[:6])


def mask_to_polygons(
    mask: np.ndarray,
    transform: Affine | Sequence[float] | None = None,
    simplify: float = 0.0,
    min_area: float = 0.0,
) -> list[shapely.Polygon]:
    """Polygons of the ``True`` regions of ``bool [H, W]`` (4-connected), with their holes, in the
    coordinates ``transform`` maps pixels to (default: pixels). ``simplify``: Douglas-Peucker tolerance in map units
    (topology kept); ``min_area``: smaller polygons are dropped (map units^2)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask must be HxW, got shape {mask.shape}")
    if simplify < 0 or min_area < 0:
        raise ValueError(f"simplify and min_area must be >= 0, got {simplify} and {min_area}")
    transform = as_affine(transform)
    mask = mask.astype(bool)
    polygons = []
    for geometry, _ in features.shapes(mask.astype(np.uint8), mask=mask, transform=transform):
        polygon = shape(geometry)
        if simplify > 0:
            polygon = polygon.simplify(simplify, preserve_topology=True)
        if not polygon.is_empty and polygon.area >= min_area and polygon.area > 0:
            polygons.append(polygon)
    return polygons


def polygons_to_wgs84(polygons: Sequence[shapely.Geometry], crs: str) -> list[shapely.Geometry]:
    """Reproject polygons from ``crs`` to longitude / latitude (x = lon, y = lat)."""
    transformer = Transformer.from_crs(CRS.from_user_input(crs), CRS.from_epsg(4326), always_xy=True)
    return [
        shapely.transform(p, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1]))) for p in polygons
    ]


def polygon_areas(polygons: Sequence[shapely.Geometry], crs: str | None) -> list[float]:
    """Areas in m^2 on the WGS 84 ellipsoid (any CRS), or in map units^2 without a CRS."""
    if crs is None:
        return [float(p.area) for p in polygons]
    geod = Geod(ellps="WGS84")
    return [abs(geod.geometry_area_perimeter(p)[0]) for p in polygons_to_wgs84(polygons, crs)]


def _records(polygons: Sequence[shapely.Geometry], crs: str | None, attributes: dict[str, Any]) -> list[dict]:
    return [{**attributes, "area": round(area, 3)} for area in polygon_areas(polygons, crs)]


def _column(values: list[Any], kind: type) -> np.ndarray:
    """One attribute column with the dtype GDAL maps to a field type (text, integer, real)."""
    if kind is bool or kind is int:
        return np.array(values, dtype=np.int64)
    if kind is float:
        return np.array(values, dtype=np.float64)
    return np.array([None if v is None else str(v) for v in values], dtype=object)


def write_geopackage(
    path: str | Path,
    polygons: Sequence[shapely.Geometry],
    crs: str | None,
    attributes: dict[str, Any] | None = None,
    layer: str = "segments",
) -> Path:
    """Polygons in their own ``crs`` (None: pixel coordinates, no CRS) as a GeoPackage layer."""
    try:
        from pyogrio.raw import write
    except ImportError as exc:  # pragma: no cover - pyogrio is a requirement
        raise ValueError("writing GeoPackages needs pyogrio: pip install pyogrio") from exc
    attributes = {**(attributes or {}), "area": 0.0}
    records = _records(polygons, crs, attributes)
    columns = [_column([r[f] for r in records], type(value)) for f, value in attributes.items()]
    geometry_type = "Polygon" if all(p.geom_type == "Polygon" for p in polygons) else "MultiPolygon"
    if geometry_type == "MultiPolygon":
        polygons = [shapely.MultiPolygon([p]) if p.geom_type == "Polygon" else p for p in polygons]
    geometry = np.array([shapely.to_wkb(p) for p in polygons], dtype=object)
    path = Path(path)
    path.unlink(missing_ok=True)  # a rerun replaces the file rather than adding a layer
    with warnings.catch_warnings():  # no CRS is deliberate here: pixel coordinates
        warnings.filterwarnings("ignore", message="'crs' was not provided", category=UserWarning)
        write(
            str(path),
            geometry,
            field_data=columns,
            fields=list(attributes),
            crs=CRS.from_user_input(crs).to_wkt() if crs else None,
            geometry_type=geometry_type,
            driver="GPKG",
            layer=layer,
        )
    return path


def geojson_features(
    polygons: Sequence[shapely.Geometry], crs: str | None, attributes: dict[str, Any] | None = None
) -> dict[str, Any]:
    """An RFC 7946 FeatureCollection (WGS 84 lon / lat, right-hand rule, no ``crs`` member) of
    polygons in ``crs``; ``ValueError`` without a CRS (pixel coordinates have no place on Earth)."""
    if crs is None:
        raise ValueError("GeoJSON (RFC 7946) needs a georeferenced image: this one has no CRS")
    records = _records(polygons, crs, attributes or {})
    feats = []
    for polygon, record in zip(polygons_to_wgs84(polygons, crs), records):
        parts = [orient(p, sign=1.0) for p in getattr(polygon, "geoms", [polygon])]
        geometry = parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)
        geometry = shapely.set_precision(geometry, 10.0**-GEOJSON_DECIMALS, mode="pointwise")
        feats.append({"type": "Feature", "properties": record, "geometry": mapping(geometry)})
    return {"type": "FeatureCollection", "features": feats}


def write_geojson(
    path: str | Path, polygons: Sequence[shapely.Geometry], crs: str | None, attributes: dict[str, Any] | None = None
) -> Path:
    """Write :func:`geojson_features` to ``path``."""
    path = Path(path)
    path.write_text(json.dumps(geojson_features(polygons, crs, attributes)))
    return path


def rasterize_polygons(
    polygons: Sequence[shapely.Geometry], shape_hw: tuple[int, int], transform: Affine | Sequence[float]
) -> np.ndarray:
    """Burn polygons (in the grid's coordinates) into ``bool [H, W]`` (pixel centres inside)."""
    transform = as_affine(transform)
    if not polygons:
        return np.zeros(shape_hw, dtype=bool)
    burnt = features.rasterize(((p, 1) for p in polygons), out_shape=shape_hw, transform=transform, dtype=np.uint8)
    return burnt.astype(bool)
