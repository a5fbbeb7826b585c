"""A raster's ground sampling distance (metres per pixel) from its CRS and transform.

Projected CRSs: the transform's pixel vectors times the CRS's linear unit in metres (feet and US
survey feet included). Geographic CRSs (degrees): the pixel's size in degrees times the length of
a degree of latitude and of longitude on the WGS 84 ellipsoid at the scene's centre latitude (the
usual series; other datums' ellipsoids differ from it by well under 0.1 %). A raster without a
CRS, or with units that are neither, states no GSD: :func:`raster_gsd` says why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rasterio.crs import CRS
from rasterio.errors import CRSError

from .raster import GeoInfo


@dataclass(frozen=True)
class GSDReading:
    """``gsd`` (rows, columns) metres per pixel, or None with ``reason`` saying why not."""

    gsd: tuple[float, float] | None
    reason: str

    def describe(self) -> str:
        return self.reason if self.gsd is None else f"{self.gsd[0]:.3g} x {self.gsd[1]:.3g} m/px ({self.reason})"


def metres_per_degree(latitude: float) -> tuple[float, float]:
    """Metres per degree of (latitude, longitude) at ``latitude`` degrees on the WGS 84 ellipsoid."""
    phi = math.radians(latitude)
    lat = 111132.92 - 559.82 * math.cos(2 * phi) + 1.175 * math.cos(4 * phi) - 0.0023 * math.cos(6 * phi)
    lon = 111412.84 * math.cos(phi) - 93.5 * math.cos(3 * phi) + 0.118 * math.cos(5 * phi)
    return lat, lon


def raster_gsd(info: GeoInfo) -> GSDReading:
    """The GSD ``info`` states, in metres per pixel (rows, columns), or why it states none."""
    if info.crs is None:
        return GSDReading(None, "no CRS: the image states no GSD")
    try:
        crs = CRS.from_user_input(info.crs)
    except CRSError as exc:
        return GSDReading(None, f"unreadable CRS ({exc}): no GSD")
    a, b, _, d, e, _ = info.transform
    column = math.hypot(a, d)  # one pixel to the right, in CRS units
    row = math.hypot(b, e)  # one pixel down
    if column == 0 or row == 0:
        return GSDReading(None, "degenerate transform: no GSD")
    if crs.is_geographic:
        top, bottom = info.affine @ (0, 0), info.affine @ (info.width, info.height)
        latitude = (top[1] + bottom[1]) / 2
        if not -90.0 <= latitude <= 90.0:
            return GSDReading(None, f"geographic CRS but the centre latitude is {latitude:g}: no GSD")
        lat_m, lon_m = metres_per_degree(latitude)
        # a north-up geographic raster: rows step in latitude, columns in longitude
        gy = math.hypot(b * lon_m, e * lat_m)
        gx = math.hypot(a * lon_m, d * lat_m)
        return GSDReading((gy, gx), f"{crs.to_string()} degrees at latitude {latitude:.3f}")
    if crs.is_projected:
        factor = crs.linear_units_factor[1]  # metres per CRS unit
        return GSDReading((row * factor, column * factor), f"{crs.to_string()} in {crs.linear_units_factor[0]}")
    return GSDReading(None, f"{crs.to_string()} is neither projected nor geographic: no GSD")
