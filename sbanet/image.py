"""Reading user images and turning any of them into the 8-bit RGB the model sees.

The documented conversion (:func:`to_rgb8`), used by the predictor, the app and the datasets:

* ``uint8`` grayscale ``[H, W]`` / ``[H, W, 1]``: the band repeated three times;
* ``uint8`` RGB: unchanged; RGBA: the alpha band dropped; gray + alpha: the gray band repeated;
* anything else (16-bit, float, signed, more than 4 bands): bands chosen (default the first
  three, or the single band repeated), each stretched between its 2nd and 98th percentile of
  finite values to 0-255. NaN / inf become 0.

:func:`stretch_limits` and :func:`apply_stretch` split the stretch in two so that
:mod:`sbanet.geo` can compute the percentiles once per scene (excluding nodata, on a decimated
read of a huge raster) and stretch every tile of the scene with the same limits.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

DEFAULT_PERCENTILES = (2.0, 98.0)
TIFF_SUFFIXES = {".tif", ".tiff"}


def select_bands(array: np.ndarray, bands: Sequence[int] | None = None) -> np.ndarray:
    """``[H, W]`` or ``[H, W, C]`` -> ``[H, W, 3]`` (bands are 0-based indices)."""
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise ValueError(f"an image must be HxW or HxWxC, got shape {array.shape}")
    count = array.shape[2]
    if bands is None:
        bands = (0, 1, 2) if count >= 3 else (0, 0, 0)
    bands = tuple(bands)
    if len(bands) == 1:
        bands = bands * 3
    if len(bands) != 3 or any(not 0 <= b < count for b in bands):
        raise ValueError(f"bands {bands} must be 1 or 3 indices in [0, {count}) for this {count}-band image")
    return array[..., list(bands)]


def stretch_limits(
    array: np.ndarray,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """Per band ``(low, high)`` percentiles of ``[H, W, C]`` over finite pixels where ``valid``
    (``bool [H, W]``, e.g. not nodata) -> ``float64 [C, 2]``; NaN for a band with no such pixel.

    Large rasters compute these once on a decimated read and stretch every tile with them
    (:func:`apply_stretch`), so tiles of one scene share one stretch.
    """
    if array.ndim != 3:
        raise ValueError(f"stretch_limits needs an HxWxC array, got shape {array.shape}")
    limits = np.full((array.shape[2], 2), np.nan)
    for c in range(array.shape[2]):
        band = array[..., c]
        keep = np.isfinite(band) if valid is None else np.isfinite(band) & valid
        if keep.any():
            limits[c] = np.percentile(band[keep].astype(np.float64), percentiles)
    return limits


def apply_stretch(array: np.ndarray, limits: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Linear stretch of ``[H, W, C]`` from ``limits [C, 2]`` to ``uint8 [H, W, C]``; NaN / inf,
    pixels outside ``valid`` (``bool [H, W]``) and bands with NaN limits become 0."""
    data = array.astype(np.float32, copy=False)
    out = np.zeros(data.shape, dtype=np.uint8)
    for c in range(data.shape[2]):
        low, high = limits[c]
        if not np.isfinite(low):
            continue
        band = data[..., c]
        finite = np.isfinite(band)
        scale = 255.0 / (high - low) if high > low else 0.0
        stretched = np.clip((np.where(finite, band, low) - low) * scale, 0, 255)
        out[..., c] = np.round(stretched).astype(np.uint8)
    if valid is not None:
        out[~valid] = 0
    return out


def percentile_stretch(
    array: np.ndarray,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """Per band linear stretch of ``[H, W, C]`` between the given percentiles to uint8
    (percentiles over the finite pixels where ``valid``; the others become 0)."""
    return apply_stretch(array, stretch_limits(array, percentiles, valid), valid)


def to_rgb8(
    array: np.ndarray,
    bands: Sequence[int] | None = None,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
) -> np.ndarray:
    """Any image array -> ``[H, W, 3] uint8`` by the conversion in this module's docstring."""
    array = np.asarray(array)
    if array.size == 0 or array.ndim not in (2, 3) or min(array.shape[:2]) == 0:
        raise ValueError(f"the image is empty or not 2-D (shape {array.shape})")
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if array.dtype == np.uint8 and bands is None:
        if array.ndim == 2 or array.shape[2] in (1, 2):
            return np.repeat(array.reshape(*array.shape[:2], -1)[..., :1], 3, axis=2)
        if array.shape[2] in (3, 4):
            return np.ascontiguousarray(array[..., :3])
    selected = select_bands(array, bands)
    if selected.dtype == np.uint8:
        return np.ascontiguousarray(selected)
    return percentile_stretch(selected, percentiles)


def read_image(path: str | Path) -> np.ndarray:
    """Read a PNG / JPEG / TIFF (any band count and bit depth) into a numpy array.

    Raises ``ValueError`` with the reason for missing, empty, corrupt or oversized files
    (Pillow's decompression-bomb limit; large GeoTIFF scenes go through :mod:`sbanet.geo`).
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"image file not found: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"image file is empty: {path.name}")
    if path.suffix.lower() in TIFF_SUFFIXES:
        try:
            import tifffile

            array = tifffile.imread(path)
            if array.ndim == 3 and array.shape[0] < min(array.shape[1:]) and array.shape[0] <= 16:
                array = np.moveaxis(array, 0, -1)  # band-first TIFFs (planar) -> HxWxC
            return array
        except Exception:  # fall through to Pillow, which reads some TIFFs tifffile does not
            pass
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode == "P":
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
            elif img.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                img = img.convert("RGB")
            return np.asarray(img)
    except Image.DecompressionBombError as exc:
        raise ValueError(f"{path.name} is too large to decode safely ({exc})") from exc
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"cannot read {path.name} as an image: {exc}") from exc
