"""Reading rasters for the model and for display: GeoTIFFs of any size, band count and type.

* :func:`geo_metadata` reads a file's header only (size, bands, CRS, transform, nodata): the
  annotation store keeps :meth:`GeoInfo.to_dict` per image so exports stay georeferenced.
* :func:`open_raster` opens a GeoTIFF / TIFF / PNG / JPEG (or wraps a numpy array) as a
  :class:`RasterSource` that reads 8-bit RGB windows on demand, so a scene never has to fit in
  memory and Pillow's decompression-bomb limit does not apply (rasterio reads windows).
* :func:`read_geoimage` reads a whole raster, a window of it, or a decimated view for display.

The 8-bit conversion is :mod:`sbanet.image`'s: bands chosen (default the first three, or the
single band repeated); ``uint8`` kept as it is; anything else stretched per band between its 2nd
and 98th percentile. Here the percentiles exclude nodata (and NaN), are computed once per scene
on a read decimated to at most :data:`STATS_MAX_PIXELS` pixels, and every window is stretched
with the same limits. Nodata pixels are 0 in the RGB and ``False`` in the ``valid`` mask.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.transform import Affine
from rasterio.windows import Window

from ..image import (
    DEFAULT_PERCENTILES,
    TIFF_SUFFIXES,
    apply_stretch,
    check_valid_pixels,
    read_image,
    select_bands,
    stretch_limits,
)

# percentiles of a huge raster come from a nearest-neighbour decimated read of about this size
STATS_MAX_PIXELS = 2_000_000


@dataclass(frozen=True)
class GeoInfo:
    """A raster's header. ``crs`` is ``"EPSG:n"`` where that is exact, else WKT, and None when the
    file has no georeferencing; ``transform`` is the affine ``(a, b, c, d, e, f)`` (rasterio order:
    ``x = a * col + b * row + c``, ``y = d * col + e * row + f``), the identity without one."""

    width: int
    height: int
    band_count: int
    dtype: str
    crs: str | None
    transform: tuple[float, float, float, float, float, float]
    nodata: float | None = None

    @property
    def affine(self) -> Affine:
        return Affine(*self.transform)

    @property
    def is_georeferenced(self) -> bool:
        return self.crs is not None

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` in the CRS's units (pixels without a CRS)."""
        xs, ys = zip(*(self.affine @ corner for corner in ((0, 0), (self.width, self.height))))
        return min(xs), min(ys), max(xs), max(ys)

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "transform": list(self.transform)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GeoInfo:
        return cls(**{**data, "transform": tuple(data["transform"])})


def crs_string(crs: CRS | None) -> str | None:
    """``"EPSG:n"`` when that names the CRS exactly, else its WKT; None for no CRS."""
    if not crs:  # None or an empty CRS
        return None
    text = crs.to_string()
    return text if CRS.from_user_input(text) == crs else crs.to_wkt()


def _info_of(dataset: Any) -> GeoInfo:
    return GeoInfo(
        width=dataset.width,
        height=dataset.height,
        band_count=dataset.count,
        dtype=str(dataset.dtypes[0]),
        crs=crs_string(dataset.crs),
        transform=tuple(dataset.transform)[:6],  # the identity when the file has none
        nodata=None if dataset.nodata is None else float(dataset.nodata),
    )


def open_dataset(path: str | Path) -> Any:
    """``rasterio.open`` for reading, with ``ValueError`` for missing or unreadable files."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"image file not found: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"image file is empty: {path.name}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioIOError as exc:
        raise ValueError(f"cannot read {path.name} as a raster: {exc}") from exc


def geo_metadata(path: str | Path) -> GeoInfo:
    """The header of a raster file (nothing decoded). ``ValueError`` for missing / unreadable files."""
    with open_dataset(path) as dataset:
        return _info_of(dataset)


def parse_bands(text: str) -> tuple[int, ...]:
    """``"3,2,1"`` (1-based band numbers, as in GDAL and QGIS) -> 0-based ``(2, 1, 0)``."""
    try:
        numbers = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"bands must be 1 or 3 band numbers like '3,2,1', got {text!r}") from None
    if len(numbers) not in (1, 3) or min(numbers) < 1:
        raise ValueError(f"bands must be 1 or 3 band numbers counted from 1, like '3,2,1', got {text!r}")
    return tuple(n - 1 for n in numbers)


class RasterSource:
    """A raster read window by window as 8-bit RGB (see the module docstring).

    Subclasses give :meth:`_read` (the chosen bands in their own dtype) and ``info``.
    """

    info: GeoInfo

    def __init__(
        self,
        info: GeoInfo,
        bands: Sequence[int] | None = None,
        percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    ) -> None:
        self.info = info
        # select_bands validates the choice against the band count, on a 1x1 stand-in
        self.bands = tuple(int(b) for b in select_bands(np.arange(info.band_count)[None, None], bands)[0, 0])
        self.percentiles = percentiles
        self.limits: np.ndarray | None = None
        if np.dtype(info.dtype) != np.uint8:  # uint8 is shown as it is (sbanet.image.to_rgb8)
            sample, valid = self._read(None, self._stats_shape())
            self.limits = stretch_limits(sample, percentiles, valid)
            if np.isnan(self.limits).all():  # every band read is NaN / inf / nodata everywhere
                check_valid_pixels(np.zeros(1, bool))

    @property
    def height(self) -> int:
        return self.info.height

    @property
    def width(self) -> int:
        return self.info.width

    def _stats_shape(self) -> tuple[int, int] | None:
        factor = math.sqrt(self.width * self.height / STATS_MAX_PIXELS)
        if factor <= 1:
            return None
        return max(1, round(self.height / factor)), max(1, round(self.width / factor))

    def _read(self, window: Window | None, out_shape: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
        """The chosen bands ``[h, w, 3]`` (own dtype) and ``valid`` ``bool [h, w]``."""
        raise NotImplementedError

    def read(
        self, window: Window | None = None, out_shape: tuple[int, int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """RGB ``uint8 [h, w, 3]`` of a window (default: all), optionally resampled (nearest) to
        ``out_shape``, and ``valid`` ``bool [h, w]`` (False at nodata, where the RGB is 0)."""
        data, valid = self._read(window, out_shape)
        if self.limits is None:
            rgb = np.where(valid[..., None], data, 0).astype(np.uint8)
        else:
            rgb = apply_stretch(data, self.limits, valid)
        return np.ascontiguousarray(rgb), valid

    def close(self) -> None:
        """Release the file (nothing to do for arrays)."""

    def __enter__(self) -> RasterSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RasterioSource(RasterSource):
    """A raster file read through rasterio windows (GeoTIFF and anything else GDAL reads)."""

    def __init__(
        self,
        path: str | Path,
        bands: Sequence[int] | None = None,
        percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    ) -> None:
        self.path = Path(path)
        self.dataset = open_dataset(path)
        try:
            super().__init__(_info_of(self.dataset), bands, percentiles)
        except Exception:
            self.dataset.close()
            raise

    def _read(self, window: Window | None, out_shape: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
        indexes = [b + 1 for b in self.bands]
        unique = sorted(set(indexes))
        kwargs: dict[str, Any] = {"window": window}
        if out_shape is not None:
            kwargs["out_shape"] = (len(unique), *out_shape)
        data = self.dataset.read(unique, **kwargs)
        masks = self.dataset.read_masks(unique, **kwargs)
        valid = masks.all(axis=0)
        if np.issubdtype(data.dtype, np.floating):
            valid &= np.isfinite(data).all(axis=0)
        data = np.moveaxis(data[[unique.index(i) for i in indexes]], 0, -1)
        return data, valid

    def close(self) -> None:
        self.dataset.close()


class ArraySource(RasterSource):
    """A numpy image ``[H, W]`` or ``[H, W, C]`` (already in memory) as a source; no CRS."""

    def __init__(
        self,
        array: np.ndarray,
        bands: Sequence[int] | None = None,
        percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
        info: GeoInfo | None = None,
    ) -> None:
        array = np.asarray(array)
        if array.dtype == bool:
            array = array.astype(np.uint8) * 255
        if array.size == 0 or array.ndim not in (2, 3) or min(array.shape[:2]) == 0:
            raise ValueError(f"the image is empty or not 2-D (shape {array.shape})")
        self.array = array if array.ndim == 3 else array[..., None]
        # uint8 RGBA / gray + alpha: the alpha band is not an image band (as in to_rgb8)
        if self.array.dtype == np.uint8 and self.array.shape[2] in (2, 4) and bands is None:
            self.array = self.array[..., : self.array.shape[2] - 1]
        height, width, count = self.array.shape
        identity = tuple(Affine.identity())[:6]
        info = info or GeoInfo(width, height, count, str(self.array.dtype), None, identity, None)
        super().__init__(info, bands, percentiles)

    def _read(self, window: Window | None, out_shape: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
        data = self.array
        if window is not None:
            (r0, r1), (c0, c1) = window.toranges()
            data = data[r0:r1, c0:c1]
        if out_shape is not None:  # nearest neighbour, like rasterio's default resampling
            rows = (np.arange(out_shape[0]) + 0.5) * data.shape[0] / out_shape[0]
            cols = (np.arange(out_shape[1]) + 0.5) * data.shape[1] / out_shape[1]
            data = data[rows.astype(int)][:, cols.astype(int)]
        data = data[..., list(self.bands)]
        valid = np.isfinite(data).all(axis=2) if np.issubdtype(data.dtype, np.floating) else None
        if valid is None:
            valid = np.ones(data.shape[:2], dtype=bool)
        return data, valid


def open_raster(
    image: str | Path | np.ndarray,
    bands: Sequence[int] | None = None,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
) -> RasterSource:
    """A path or numpy array -> :class:`RasterSource` (close it, or use it as a context manager).

    TIFFs (and plain images too large for Pillow) are read through rasterio windows; PNG /
    JPEG files Pillow accepts are decoded by :func:`sbanet.image.read_image` (palettes, modes).
    ``bands`` are 0-based indices (see :func:`parse_bands` for the 1-based command-line form).
    """
    if isinstance(image, np.ndarray):
        return ArraySource(image, bands, percentiles)
    if not isinstance(image, (str, Path)):
        raise ValueError(f"unsupported image type {type(image).__name__}: pass a path or a numpy array")
    path = Path(image)
    if path.suffix.lower() in TIFF_SUFFIXES:
        return RasterioSource(path, bands, percentiles)
    try:
        array = read_image(path)
    except ValueError as exc:
        if "too large" not in str(exc):
            raise
        return RasterioSource(path, bands, percentiles)  # Pillow refused it: read by windows
    return ArraySource(array, bands, percentiles)


@dataclass(frozen=True)
class GeoImage:
    """An 8-bit RGB view of a raster with its georeferencing.

    rgb: ``uint8 [h, w, 3]`` (0 at nodata); valid: ``bool [h, w]``; transform: the affine of
    *this* grid (a window or a decimated read differs from the file's); info: the file's header.
    """

    rgb: np.ndarray
    valid: np.ndarray
    transform: Affine
    info: GeoInfo

    @property
    def crs(self) -> str | None:
        return self.info.crs

    @property
    def width(self) -> int:
        return self.rgb.shape[1]

    @property
    def height(self) -> int:
        return self.rgb.shape[0]

    @property
    def band_count(self) -> int:
        return self.info.band_count

    @property
    def dtype(self) -> str:
        return self.info.dtype

    @property
    def nodata(self) -> float | None:
        return self.info.nodata


def read_geoimage(
    image: str | Path | np.ndarray | RasterSource,
    bands: Sequence[int] | None = None,
    window: Window | None = None,
    max_size: int | None = None,
) -> GeoImage:
    """Read a raster (or a ``window`` of it) as :class:`GeoImage`; ``max_size`` caps the longer
    side by a decimated read (for display of huge scenes: only that many pixels are decoded)."""
    if max_size is not None and max_size < 1:
        raise ValueError(f"max_size must be a positive number of pixels, got {max_size}")
    source = image if isinstance(image, RasterSource) else open_raster(image, bands)
    try:
        window = window or Window(0, 0, source.width, source.height)
        window = window.intersection(Window(0, 0, source.width, source.height))
        height, width = int(window.height), int(window.width)
        out_shape = None
        if max_size is not None and max(height, width) > max_size:
            scale = max_size / max(height, width)
            out_shape = (max(1, round(height * scale)), max(1, round(width * scale)))
        rgb, valid = source.read(window, out_shape)
        transform = source.info.affine @ Affine.translation(window.col_off, window.row_off)
        transform @= Affine.scale(width / rgb.shape[1], height / rgb.shape[0])
        return GeoImage(rgb, valid, transform, source.info)
    finally:
        if source is not image:
            source.close()
