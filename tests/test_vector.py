"""Masks to polygons on the real spacenet sample: GeoPackage in the native CRS, RFC 7946 GeoJSON."""

from __future__ import annotations

import json

import numpy as np
import pyogrio
import pytest
import shapely
from conftest import shared_data
from pyproj import Transformer
from scipy import ndimage
from shapely.geometry import shape

from sbanet.geo.raster import geo_metadata
from sbanet.geo.vector import (
    geojson_features,
    mask_to_polygons,
    rasterize_polygons,
    write_geojson,
    write_geopackage,
)
from sbanet.geo.writers import read_mask
from sbanet.training.metrics import mask_iou

ATTRIBUTES = {"expression": "all buildings", "model": "sbanet_tiny", "model_version": "sbanet 0.1.0"}


@pytest.fixture(scope="module")
def spacenet():
    """The panchromatic scene's header, its footprint mask and its labelled building polygons."""
    info = geo_metadata(shared_data("spacenet-sample", "sample_geotiff.tif"))
    mask = read_mask(shared_data("spacenet-sample", "sample_fp_mask.tif"))
    labels = json.loads(shared_data("spacenet-sample", "geotiff_labels.geojson").read_text())
    return info, mask, [shape(f["geometry"]) for f in labels["features"]]


def union_iou(a, b) -> float:
    ua, ub = shapely.union_all(a), shapely.union_all(b)
    return ua.intersection(ub).area / ua.union(ub).area


def test_footprint_mask_vectorised_on_the_scene_grid(spacenet):
    """sample_fp_mask.tif through sample_geotiff.tif's transform, compared with the labels."""
    info, mask, labels = spacenet
    polygons = mask_to_polygons(mask, info.transform)
    assert all(p.is_valid and p.geom_type == "Polygon" for p in polygons)
    # exact vectorisation: the polygons burn back into the very same pixels, one per component
    assert mask_iou(rasterize_polygons(polygons, mask.shape, info.transform), mask) == 1.0
    assert len(polygons) == ndimage.label(mask)[1]
    left, bottom, right, top = shapely.union_all(polygons).bounds
    assert info.bounds[0] <= left < right <= info.bounds[2] and info.bounds[1] <= bottom < top <= info.bounds[3]
    # the rasterised IoU with the labels equals the geometric one (the figure in docs/benchmarks.md)
    burnt = rasterize_polygons(labels, mask.shape, info.transform)
    raster_iou = mask_iou(rasterize_polygons(polygons, mask.shape, info.transform), burnt)
    assert raster_iou == pytest.approx(union_iou(polygons, labels), abs=0.01)


def test_labels_round_trip_through_a_mask(spacenet):
    """Labels -> mask on the scene grid -> polygons reproduce the labels (pixel-accurate)."""
    info, _, labels = spacenet
    burnt = rasterize_polygons(labels, (info.height, info.width), info.transform)
    polygons = mask_to_polygons(burnt, info.transform)
    assert union_iou(polygons, labels) > 0.95
    simplified = mask_to_polygons(burnt, info.transform, simplify=0.5, min_area=5.0)  # metres, m^2
    assert sum(len(p.exterior.coords) for p in simplified) < sum(len(p.exterior.coords) for p in polygons) / 2
    assert min(p.area for p in simplified) >= 5.0
    assert union_iou(simplified, labels) > 0.95


def test_geopackage_in_the_native_crs(spacenet, tmp_path):
    info, mask, _ = spacenet
    polygons = mask_to_polygons(mask, info.transform)
    path = write_geopackage(tmp_path / "b.gpkg", polygons, info.crs, ATTRIBUTES)
    meta = pyogrio.read_info(path)
    assert meta["crs"] == "EPSG:32616" and meta["features"] == len(polygons)
    assert list(meta["fields"]) == [*ATTRIBUTES, "area"]
    assert meta["geometry_type"] == "Polygon"
    _, _, geometry, fields = pyogrio.raw.read(path)
    read_back = shapely.from_wkb(geometry)
    assert all(a.equals(b) for a, b in zip(read_back, polygons))
    assert set(fields[0]) == {"all buildings"}
    np.testing.assert_allclose(fields[3], [p.area for p in polygons], rtol=2e-3)  # 0.5 m UTM pixels: m^2
    write_geopackage(path, polygons[:3], info.crs, ATTRIBUTES)  # a rerun replaces the file
    assert pyogrio.read_info(path)["features"] == 3


def test_geojson_is_rfc7946(spacenet, tmp_path):
    info, mask, _ = spacenet
    polygons = mask_to_polygons(mask, info.transform)
    path = write_geojson(tmp_path / "b.geojson", polygons, info.crs, ATTRIBUTES)
    data = json.loads(path.read_text())
    assert data["type"] == "FeatureCollection" and "crs" not in data
    assert len(data["features"]) == len(polygons)
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32616", always_xy=True)
    for feature, original in zip(data["features"], polygons):
        assert {**ATTRIBUTES, "area": pytest.approx(original.area, rel=2e-3)} == feature["properties"]
        polygon = shape(feature["geometry"])
        lon, lat = polygon.exterior.coords[0]
        assert -84.5 < lon < -84.4 and 33.6 < lat < 33.7  # lon / lat order (Atlanta)
        assert polygon.exterior.is_ccw and not any(ring.is_ccw for ring in polygon.interiors)  # right-hand rule
        back = shapely.transform(polygon, lambda xy: np.column_stack(to_utm.transform(xy[:, 0], xy[:, 1])))
        assert back.hausdorff_distance(original) < 0.02  # metres, after rounding to 1e-7 degrees
    donut = np.zeros((info.height, info.width), bool)
    donut[100:200, 100:200] = True
    donut[130:170, 130:170] = False
    (feature,) = geojson_features(mask_to_polygons(donut, info.transform), info.crs)["features"]
    outer, hole = (shapely.LinearRing(ring) for ring in feature["geometry"]["coordinates"])
    assert outer.is_ccw and not hole.is_ccw  # holes kept, clockwise
    assert feature["properties"]["area"] == pytest.approx((100 * 100 - 40 * 40) * 0.25, rel=2e-3)


def test_empty_masks_and_missing_crs(tmp_path):
    empty = np.zeros((20, 30), bool)
    assert mask_to_polygons(empty) == []
    write_geopackage(tmp_path / "e.gpkg", [], "EPSG:32616", ATTRIBUTES)
    assert pyogrio.read_info(tmp_path / "e.gpkg")["features"] == 0
    assert geojson_features([], "EPSG:32616", ATTRIBUTES)["features"] == []
    square = np.zeros((20, 30), bool)
    square[5:10, 5:15] = True
    (polygon,) = mask_to_polygons(square)  # pixel coordinates without a transform
    assert polygon.bounds == (5.0, 5.0, 15.0, 10.0)
    write_geopackage(tmp_path / "px.gpkg", [polygon], None, ATTRIBUTES)
    assert pyogrio.read_info(tmp_path / "px.gpkg")["crs"] is None
    with pytest.raises(ValueError, match="CRS"):
        geojson_features([polygon], None, ATTRIBUTES)
    with pytest.raises(ValueError, match=">= 0"):
        mask_to_polygons(square, simplify=-1)
    with pytest.raises(ValueError, match="HxW"):
        mask_to_polygons(np.zeros((2, 3, 4), bool))
