"""Reading user images and turning any of them into the 8-bit RGB the model sees.

The documented conversion (:func:`to_rgb8`), used by the predictor, the app and the datasets:

* ``uint8`` grayscale ``[H, W]`` / ``[H, W, 1]``: the band repeated three times;
* ``uint8`` RGB: unchanged; RGBA: the alpha band dropped; gray + alpha: the gray band repeated;
* anything else (16-bit, float, signed, more than 4 bands): bands chosen (default the first
  three, or the single band repeated), each stretched between its 2nd and 98th percentile of
  finite values to 0-255. NaN / inf become 0; an image with no finite pixel in the chosen bands
  is refused (``ValueError``): there is nothing to segment, and a stretch of nothing is noise.

Arrays are ``[H, W]`` or ``[H, W, C]`` (channels last). A channel-first ``[C, H, W]`` array (a
torch habit) is refused with the fix, never read as ``W`` bands of ``H`` rows
(:func:`check_channels_last`). :func:`check_decoded_bytes` bounds what a header promises
(height × width × bands × bytes per sample) before anything is decoded.

Photos from phones and drones are often stored rotated, with an EXIF ``Orientation`` tag that
tells viewers how to turn them. :func:`read_image` returns the pixels *as viewers show them*
(:func:`upright`), so a mask made from a file overlays that file in every viewer; the library,
the command line, the app and the store all read files through it. TIFFs keep their stored grid:
a raster's pixels are defined by its georeferencing, and GDAL ignores the tag as well.

:func:`stretch_limits` and :func:`apply_stretch` split the stretch in two so that
:mod:`sbanet.geo.raster` can compute the percentiles once per scene (excluding nodata, on a decimated
read of a huge raster) and stretch every tile of the scene with the same limits.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

DEFAULT_PERCENTILES = (2.0, 98.0)
TIFF_SUFFIXES = {".tif", ".tiff"}
# a channels-last array has at most this many bands when its first axis is this short or shorter
MAX_CHANNEL_FIRST_BANDS = 16
# decoded size of the bands read (height x width x bands x bytes per sample) accepted by default:
# a 40-megapixel float32 RGB read fits, a 6000 x 6000 x 3 float64 one (864 MB, then copies) does not
MAX_DECODED_BYTES = 512 * 2**20


def check_channels_last(array: np.ndarray) -> np.ndarray:
    """``ValueError`` for an array that is channel-first ``[C, H, W]`` (``C <= 16`` and more than
    16 "bands"), which would otherwise be read as ``W`` bands of ``H`` rows; returns ``array``."""
    if array.ndim == 3 and array.shape[0] <= MAX_CHANNEL_FIRST_BANDS < array.shape[2]:
        raise ValueError(
            f"the image array has shape {array.shape}, which looks channel-first [C, H, W]; pass it "
            f"channels-last [H, W, C], e.g. np.moveaxis(array, 0, -1) -> {(*array.shape[1:], array.shape[0])}"
        )
    return array


def check_decoded_bytes(
    height: int, width: int, bands: int, dtype: str | np.dtype, name: str, limit: int = MAX_DECODED_BYTES
) -> int:
    """The bytes ``height × width × bands`` samples of ``dtype`` take once decoded, or ``ValueError``
    above ``limit`` (checked from a file's header, before anything is read)."""
    size = int(height) * int(width) * int(bands) * np.dtype(dtype).itemsize
    if size > limit:
        raise ValueError(
            f"{name} would take {size / 2**20:,.0f} MiB once decoded ({width}×{height} pixels × {bands} band(s) "
            f"of {np.dtype(dtype).name}), more than the {limit / 2**20:,.0f} MiB allowed; "
            "choose fewer bands, crop it, or run it with `python -m sbanet.predict` (sliding window)"
        )
    return size


def valid_pixels(array: np.ndarray) -> np.ndarray:
    """``bool [H, W]``: pixels whose every band is finite (integer images: all of them)."""
    if array.ndim == 2:
        array = array[..., None]
    if not np.issubdtype(array.dtype, np.floating):
        return np.ones(array.shape[:2], dtype=bool)
    return np.isfinite(array).all(axis=2)


def invalid_pixels(image: object, bands: Sequence[int] | None = None) -> np.ndarray | None:
    """``bool [H, W]`` of the pixels of a numpy ``image`` with a NaN / inf in the ``bands`` read
    (they come out of :func:`to_rgb8` as 0, and no mask may claim them); None when there are
    none, or when ``image`` is not an array (files carry nodata through :mod:`sbanet.geo.raster`)."""
    if not isinstance(image, np.ndarray) or not np.issubdtype(image.dtype, np.floating) or image.ndim not in (2, 3):
        return None
    invalid = ~valid_pixels(select_bands(check_channels_last(image), bands))
    return invalid if invalid.any() else None


def check_valid_pixels(valid: np.ndarray, name: str = "the image") -> np.ndarray:
    """``ValueError`` when ``valid`` (``bool [H, W]``) marks no pixel at all; returns ``valid``."""
    if not valid.any():
        raise ValueError(
            f"{name} has no valid pixels (every value is NaN, infinite or nodata in the bands read): "
            "there is nothing to segment"
        )
    return valid


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
    check_channels_last(array)
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
    check_valid_pixels(valid_pixels(selected))
    return percentile_stretch(selected, percentiles)


def _band_first(shape: tuple[int, ...]) -> bool:
    """A TIFF's ``(C, H, W)`` (planar) layout, read back as ``(H, W, C)``."""
    return len(shape) == 3 and shape[0] < min(shape[1:]) and shape[0] <= MAX_CHANNEL_FIRST_BANDS


def tiff_header(path: str | Path) -> tuple[tuple[int, ...], np.dtype] | None:
    """The ``(H, W[, C])`` shape and dtype :func:`read_image` returns for a TIFF, from its header
    alone (nothing is decoded); None when tifffile cannot parse it."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            shape, dtype = tuple(int(n) for n in series.shape), np.dtype(series.dtype)
    except Exception:  # not a TIFF tifffile reads (Pillow may): no header to report
        return None
    if _band_first(shape):
        shape = (*shape[1:], shape[0])
    return shape, dtype


EXIF_ORIENTATION = 0x0112  # the EXIF / TIFF tag; 1 = stored upright, 2-8 = flipped and/or turned


def upright(img: PILImage) -> PILImage:
    """``img`` turned as its EXIF ``Orientation`` (2-8) says viewers show it; unchanged when the
    tag is absent or 1, and for TIFFs (see the module docstring)."""
    from PIL import ImageOps

    if img.format == "TIFF" or img.getexif().get(EXIF_ORIENTATION, 1) in (0, 1):
        return img
    return ImageOps.exif_transpose(img)


def read_image(path: str | Path, max_bytes: int = MAX_DECODED_BYTES) -> np.ndarray:
    """Read a PNG / JPEG / TIFF (any band count and bit depth) into a numpy array.

    PNG / JPEG pixels come upright (EXIF ``Orientation`` applied, :func:`upright`). Raises
    ``ValueError`` with the reason for missing, empty, corrupt or oversized files
    (Pillow's decompression-bomb limit; a TIFF whose header promises more than ``max_bytes``
    decoded; large GeoTIFF scenes go through :mod:`sbanet.geo.raster`).
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"image file not found: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"image file is empty: {path.name}")
    if path.suffix.lower() in TIFF_SUFFIXES:
        header = tiff_header(path)
        if header is not None:
            shape, dtype = header
            bands = shape[2] if len(shape) == 3 else 1
            check_decoded_bytes(shape[0], shape[1], bands, dtype, path.name, max_bytes)
        try:
            import tifffile

            array = tifffile.imread(path)
            return np.moveaxis(array, 0, -1) if _band_first(array.shape) else array
        except Exception:  # fall through to Pillow, which reads some TIFFs tifffile does not
            pass
    try:
        with Image.open(path) as img:
            img.load()
            img = upright(img)
            if img.mode == "P":
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
            elif img.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                img = img.convert("RGB")
            return np.asarray(img)
    except Image.DecompressionBombError as exc:
        raise ValueError(f"{path.name} is too large to decode safely ({exc})") from exc
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"cannot read {path.name} as an image: {exc}") from exc
