"""Where a scene's probabilities go, band of rows by band of rows: memory, GeoTIFFs or a PNG.

A writer receives ``write(row, probability [K, r, W] float32, valid [r, W] bool)`` for
consecutive bands of rows (K expressions) and ``close()`` at the end (see
:func:`sbanet.geo.tiling.predict_scene`).

Mask GeoTIFFs: ``uint8``, 1 = the expression's target, 0 = background, 255 = nodata (where the
source has none), a colour table (white target, transparent nodata), deflate-compressed, tiled
when large, with the source's CRS and transform. Probability GeoTIFFs: ``float32`` in [0, 1] with
NaN as nodata, or ``uint8`` ``round(p * 254)`` with 255 as nodata.

Every file is first written to a partial path beside its final one (:func:`partial_path`) and
moved into place by :func:`publish` (``os.replace``, atomic within a folder), optionally
rewritten as a Cloud-Optimized GeoTIFF on the way: a killed run leaves no half-written output
under the final name.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from .raster import GeoInfo, open_dataset

MASK_NODATA = 255
MASK_COLORS = {0: (0, 0, 0, 255), 1: (255, 255, 255, 255), MASK_NODATA: (0, 0, 0, 0)}
PROBABILITY_DTYPES = ("float32", "uint8")
BLOCK = 256  # GeoTIFF tile size for outputs of at least 2 x 2 blocks


class SceneWriter(Protocol):
    def write(self, row: int, probability: np.ndarray, valid: np.ndarray) -> None: ...

    def close(self) -> None: ...


def check_threshold(threshold: float) -> float:
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    return float(threshold)


class ArrayWriter:
    """The whole result in memory: ``mask`` ``bool [K, H, W]`` and (``keep_probability``)
    ``probability`` ``uint8 [K, H, W]`` (probability x 255, rounded); ``valid`` ``bool [H, W]``."""

    def __init__(
        self, count: int, height: int, width: int, threshold: float = 0.5, keep_probability: bool = True
    ) -> None:
        self.threshold = check_threshold(threshold)
        self.mask = np.zeros((count, height, width), dtype=bool)
        self.probability = np.zeros((count, height, width), dtype=np.uint8) if keep_probability else None
        self.valid = np.zeros((height, width), dtype=bool)

    def write(self, row: int, probability: np.ndarray, valid: np.ndarray) -> None:
        rows = slice(row, row + probability.shape[1])
        self.mask[:, rows] = (probability > self.threshold) & valid
        self.valid[rows] = valid
        if self.probability is not None:
            self.probability[:, rows] = np.round(probability * 255.0).astype(np.uint8)

    def close(self) -> None:
        """Nothing to release."""


class CountWriter:
    """Counts only: ``target`` ``int64 [K]`` pixels above the threshold (valid pixels only) and
    ``valid`` pixels, for summaries that must not hold a scene in memory."""

    def __init__(self, count: int, threshold: float = 0.5) -> None:
        self.threshold = check_threshold(threshold)
        self.target = np.zeros(count, dtype=np.int64)
        self.valid = 0

    def write(self, row: int, probability: np.ndarray, valid: np.ndarray) -> None:
        self.target += ((probability > self.threshold) & valid).sum(axis=(1, 2))
        self.valid += int(valid.sum())

    def close(self) -> None:
        """Nothing to release."""


class TeeWriter:
    """Hands every band of rows to several writers (e.g. GeoTIFFs on disk and a mask in memory)."""

    def __init__(self, *writers: SceneWriter) -> None:
        self.writers = writers

    def write(self, row: int, probability: np.ndarray, valid: np.ndarray) -> None:
        for writer in self.writers:
            writer.write(row, probability, valid)

    def close(self) -> None:
        for writer in self.writers:
            writer.close()


def geotiff_profile(info: GeoInfo, dtype: str, nodata: float) -> dict[str, Any]:
    """A single-band GeoTIFF profile on ``info``'s grid (CRS, transform): deflate, tiled if large."""
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": info.width,
        "height": info.height,
        "count": 1,
        "dtype": dtype,
        "nodata": nodata,
        "crs": info.crs,
        "transform": info.affine,
        "compress": "deflate",
        "predictor": 3 if dtype == "float32" else 2,
        "BIGTIFF": "IF_SAFER",
    }
    if min(info.width, info.height) >= 2 * BLOCK:
        profile.update(tiled=True, blockxsize=BLOCK, blockysize=BLOCK)
    return profile


class GeoTiffWriter:
    """Per expression a mask GeoTIFF and / or a probability GeoTIFF on the source's grid (either
    list may be empty), written as rows arrive, so a scene's result never has to fit in memory."""

    def __init__(
        self,
        info: GeoInfo,
        mask_paths: Sequence[str | Path | None],
        probability_paths: Sequence[str | Path | None] | None = None,
        threshold: float = 0.5,
        probability_dtype: str = "float32",
    ) -> None:
        """Entry k of each list is expression k's file; None (or an empty list) writes none."""
        self.threshold = check_threshold(threshold)
        if probability_dtype not in PROBABILITY_DTYPES:
            raise ValueError(f"probability_dtype must be one of {PROBABILITY_DTYPES}, got {probability_dtype!r}")
        if mask_paths and probability_paths and len(probability_paths) != len(mask_paths):
            raise ValueError("give one probability path per mask path (or none of either)")
        self.probability_dtype = probability_dtype
        self.masks: list[Any] = []
        self.probabilities: list[Any] = []
        try:
            with warnings.catch_warnings():  # an image without a CRS gets a mask without one
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                self._open(info, mask_paths, probability_paths or ())
        except Exception:
            self.close()
            raise

    def _open(
        self, info: GeoInfo, mask_paths: Sequence[str | Path | None], probability_paths: Sequence[str | Path | None]
    ) -> None:
        for path in mask_paths:
            dataset = None
            if path is not None:
                dataset = rasterio.open(path, "w", **geotiff_profile(info, "uint8", MASK_NODATA))
                dataset.write_colormap(1, MASK_COLORS)
            self.masks.append(dataset)
        nodata = float("nan") if self.probability_dtype == "float32" else MASK_NODATA
        profile = geotiff_profile(info, self.probability_dtype, nodata)
        for path in probability_paths:
            self.probabilities.append(None if path is None else rasterio.open(path, "w", **profile))

    def write(self, row: int, probability: np.ndarray, valid: np.ndarray) -> None:
        window = Window(0, row, probability.shape[2], probability.shape[1])
        for k, dataset in enumerate(self.masks):
            if dataset is None:
                continue
            mask = (probability[k] > self.threshold).astype(np.uint8)
            mask[~valid] = MASK_NODATA
            dataset.write(mask, 1, window=window)
        for k, dataset in enumerate(self.probabilities):
            if dataset is None:
                continue
            if self.probability_dtype == "float32":
                values = np.where(valid, probability[k], np.nan).astype(np.float32)
            else:
                values = np.where(valid, np.round(probability[k] * 254.0), MASK_NODATA).astype(np.uint8)
            dataset.write(values, 1, window=window)

    def close(self) -> None:
        for dataset in (*self.masks, *self.probabilities):
            if dataset is not None and not dataset.closed:
                dataset.close()


def write_mask_geotiff(path: str | Path, mask: np.ndarray, info: GeoInfo, valid: np.ndarray | None = None) -> Path:
    """Write one ``bool [H, W]`` mask on ``info``'s grid as a mask GeoTIFF (see module docstring)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (info.height, info.width):
        raise ValueError(f"the mask is {mask.shape[1]}x{mask.shape[0]} but the image is {info.width}x{info.height}")
    writer = GeoTiffWriter(info, [path])
    try:
        writer.write(0, mask[None].astype(np.float32), np.ones(mask.shape, bool) if valid is None else valid)
    finally:
        writer.close()
    return Path(path)


def write_mask_png(path: str | Path, mask: np.ndarray) -> Path:
    """A ``bool [H, W]`` mask as a grayscale PNG: 255 for the target, 0 elsewhere."""
    from PIL import Image

    Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255).save(path, optimize=True)
    return Path(path)


def read_mask(path: str | Path) -> np.ndarray:
    """A mask raster (ours: 1 / 0 / 255 nodata; or any 0 / non-zero mask) -> ``bool [H, W]``."""
    with open_dataset(path) as dataset:
        band = dataset.read(1)
        nodata = dataset.nodata
    target = band != 0
    if nodata is not None:
        target &= band != nodata
    return target


def count_mask(path: str | Path) -> tuple[int, int]:
    """Target and valid pixels of one of our mask GeoTIFFs (1 / 0 / 255 nodata), read block by
    block so a scene's mask never has to fit in memory."""
    target = valid = 0
    with open_dataset(path) as dataset:
        nodata = dataset.nodata
        for _, window in dataset.block_windows(1):
            band = dataset.read(1, window=window)
            has_data = band != nodata if nodata is not None else np.ones(band.shape, bool)
            target += int(((band != 0) & has_data).sum())
            valid += int(has_data.sum())
    return target, valid


def partial_path(path: str | Path) -> Path:
    """Where ``path`` is written before :func:`publish` moves it into place: a hidden file in the
    same folder (so the move is atomic) that keeps the suffix (GDAL and Pillow pick formats by it)."""
    path = Path(path)
    return path.with_name(f".{path.stem}.partial{path.suffix}")


def publish(path: str | Path, cog: bool = False) -> Path:
    """Move :func:`partial_path` (``path``) onto ``path`` atomically; with ``cog`` a GeoTIFF is
    first rewritten as a Cloud-Optimized GeoTIFF (GDAL's COG driver: 256-pixel tiles, deflate,
    overviews; nearest-neighbour overviews for masks, which carry a colour table)."""
    path, partial = Path(path), partial_path(path)
    if cog:
        with rasterio.open(partial) as dataset:
            categorical = dataset.colorinterp[0].name == "palette"
            predictor = 3 if dataset.dtypes[0] == "float32" else 2
        staged = partial.with_name(f"{partial.stem}.cog{partial.suffix}")
        options = {"compress": "deflate", "predictor": predictor, "blocksize": BLOCK, "bigtiff": "IF_SAFER"}
        resampling = "nearest" if categorical else "average"
        rasterio.shutil.copy(partial, staged, driver="COG", overview_resampling=resampling, **options)
        os.replace(staged, partial)
    os.replace(partial, path)
    return path


def discard(path: str | Path) -> None:
    """Remove what a failed run left at :func:`partial_path` (``path``)."""
    partial = partial_path(path)
    for leftover in (partial, partial.with_name(f"{partial.stem}.cog{partial.suffix}")):
        leftover.unlink(missing_ok=True)
