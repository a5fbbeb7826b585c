"""What users send the app, checked before anything is computed or saved.

Uploads are read with :mod:`sbanet.geo.raster` (band choice, per-band stretch, CRS and transform) after
a size check on the header alone: pixels (:data:`MAX_PIXELS`) and the decoded bytes of the bands
actually read (:data:`sbanet.image.MAX_DECODED_BYTES`), so decompression bombs and sparse
many-band files never reach memory. An image without a valid pixel (all NaN / inf / nodata) is
refused, and its nodata pixels are kept (``LoadedImage.valid``) so no mask claims them.
Expressions are split one per line and validated; masks coming back from the mask canvas or the API
are checked against the image they claim to belong to, then brought to that image's full
resolution (nearest neighbour: a mask stays binary).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from annotate.app.render import fit_within
from sbanet.geo.raster import GeoInfo, geo_metadata, read_geoimage
from sbanet.geo.raster import parse_bands as geo_parse_bands
from sbanet.image import MAX_DECODED_BYTES, check_decoded_bytes, check_valid_pixels, read_image
from sbanet.text_rules import check_expression

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
MAX_PIXELS = 40_000_000  # ~6300 x 6300: larger scenes go through sbanet.predict's sliding window
MAX_EXPRESSIONS = 8


@dataclass(frozen=True)
class LoadedImage:
    """An uploaded image, decoded once. ``rgb`` is ``uint8 [H, W, 3]`` (display and model input)."""

    name: str
    path: Path
    sha256: str
    rgb: np.ndarray
    band_count: int
    dtype: str
    geo: GeoInfo | None = None  # CRS + affine transform of a georeferenced file
    valid: np.ndarray | None = None  # bool [H, W], False at nodata; None: every pixel is valid

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)``."""
        return self.rgb.shape[0], self.rgb.shape[1]


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def parse_bands(text: str | None) -> tuple[int, ...] | None:
    """``"4,3,2"`` (1-based, as GIS tools count bands) -> ``(3, 2, 1)``; blank -> None (see
    :func:`sbanet.geo.raster.parse_bands`; spaces are allowed here)."""
    if text is None or not str(text).strip():
        return None
    return geo_parse_bands(str(text).replace(" ", ""))


def load_image(
    path: str | Path,
    bands: Sequence[int] | None = None,
    max_pixels: int = MAX_PIXELS,
    name: str | None = None,
    max_bytes: int = MAX_DECODED_BYTES,
) -> LoadedImage:
    """Check and decode an uploaded file into a :class:`LoadedImage` (``ValueError`` if bad)."""
    path = Path(path)
    shown = name or path.name
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"{shown}: unsupported file type; upload one of {', '.join(IMAGE_SUFFIXES)}")
    if not path.is_file() or path.stat().st_size == 0:
        raise ValueError(f"{shown} is empty")
    info = geo_metadata(path)  # the header only: nothing is decoded yet
    if info.height * info.width > max_pixels:
        raise ValueError(
            f"{shown} is {info.width}×{info.height} pixels, more than this app decodes ({max_pixels:,}); "
            "run large scenes with `python -m sbanet.predict` (sliding window) or crop them first"
        )
    if bands is not None and max(bands) >= info.band_count:
        raise ValueError(f"{shown} has {info.band_count} band(s); bands are counted from 1 to {info.band_count}")
    used = len(set(bands)) if bands is not None else (3 if info.band_count >= 3 else 1)
    check_decoded_bytes(info.height, info.width, used, info.dtype, shown, max_bytes)
    read = read_geoimage(path, bands)  # only the bands used; a 2-98 % stretch for anything but 8-bit
    valid = check_valid_pixels(read.valid, shown)
    geo = info if info.is_georeferenced else None
    return LoadedImage(
        shown, path, file_sha256(path), read.rgb, info.band_count, info.dtype, geo, None if valid.all() else valid
    )


class DecodedUploads:
    """The last few uploads, decoded: the preview decodes an upload once and every Segment click
    (or attention request) on the same file reuses it, whatever the expressions. Entries are
    keyed by the file's path, size and modification time and the bands asked for, so a changed
    file is decoded again; the oldest go first beyond ``capacity`` entries or ``max_bytes`` of
    pixels. Cached pixels are read-only: users share them. Thread-safe."""

    def __init__(self, capacity: int = 8, max_bytes: int = 512 * 2**20) -> None:
        if capacity < 1 or max_bytes < 1:
            raise ValueError(f"capacity and max_bytes must be positive, got {capacity} and {max_bytes}")
        self.capacity, self.max_bytes = capacity, max_bytes
        self._entries: OrderedDict[tuple[Any, ...], LoadedImage] = OrderedDict()
        self._displays: OrderedDict[tuple[Any, ...], tuple[str, tuple[int, int]]] = OrderedDict()
        self._lock = threading.Lock()

    def load(self, path: str | Path, bands: Sequence[int] | None = None, name: str | None = None) -> LoadedImage:
        """:func:`load_image` of ``path``, decoded at most once while it stays cached (``name``:
        the file's name to report, as :func:`load_image` takes it, when it is decoded)."""
        try:
            stat = Path(path).stat()
        except OSError:  # load_image says what is wrong with it
            return load_image(path, bands, name=name)
        key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns, None if bands is None else tuple(bands))
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        image = load_image(path, bands, name=name)  # outside the lock: other users' hits never wait for a decode
        for array in (image.rgb, image.valid):
            if array is not None:
                array.setflags(write=False)
        with self._lock:
            self._entries[key] = image
            while len(self._entries) > self.capacity or (
                len(self._entries) > 1 and sum(_pixel_bytes(e) for e in self._entries.values()) > self.max_bytes
            ):
                self._entries.popitem(last=False)
        return image

    def display_png(self, image: LoadedImage, max_side: int) -> tuple[str, tuple[int, int]]:
        """``image`` at most ``max_side`` large as a PNG in Gradio's cache folder and its
        ``(height, width)``, encoded once per image: an overlay sends this file instead of
        encoding the picture on every click.

        The file has a name of its own (Gradio rewrites its own ``image.png`` files in place
        whenever it encodes the same picture) and is written beside its final name and moved
        into place, never rewritten: a browser fetching it while another user's preview runs
        never reads half a file."""
        from gradio import processing_utils
        from gradio.utils import get_upload_folder
        from PIL import Image

        key = (image.sha256, image.rgb.shape, max_side)
        with self._lock:
            found = self._displays.get(key)
        if found is not None and Path(found[0]).is_file():  # Gradio may have cleared its cache
            return found
        display = fit_within(image.rgb, max_side)
        data = processing_utils.encode_pil_to_bytes(Image.fromarray(display), "png")
        folder = Path(get_upload_folder()) / processing_utils.hash_bytes(data)
        path = folder / "display.png"
        if not path.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            partial = folder / f".display-{threading.get_ident()}-{os.getpid()}.png"
            partial.write_bytes(data)
            os.replace(partial, path)
        with self._lock:
            self._displays[key] = (str(path.resolve()), display.shape[:2])
            while len(self._displays) > 4 * self.capacity:
                self._displays.popitem(last=False)
        return str(path.resolve()), display.shape[:2]


def _pixel_bytes(image: LoadedImage) -> int:
    return image.rgb.nbytes + (image.valid.nbytes if image.valid is not None else 0)


def parse_expressions(text: str | None, max_count: int = MAX_EXPRESSIONS) -> list[str]:
    """One expression per line -> cleaned, de-duplicated list (``ValueError`` if none or too many)."""
    lines = [line for line in (text or "").splitlines() if line.strip()]
    if not lines:
        raise ValueError("type at least one expression, e.g. 'the water' (one per line)")
    expressions = list(dict.fromkeys(check_expression(line) for line in lines))
    if len(expressions) > max_count:
        raise ValueError(f"{len(expressions)} expressions given; at most {max_count} per run")
    return expressions


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``bool [h, w]`` -> ``bool [H, W]`` with nearest neighbour (no-op at the same size)."""
    if mask.shape == tuple(size):
        return mask
    from PIL import Image

    image = Image.fromarray(mask.astype(np.uint8) * 255)
    return np.asarray(image.resize((size[1], size[0]), Image.Resampling.NEAREST)) > 127


def _same_aspect(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """True if two ``(h, w)`` sizes are one image at two scales (up to a pixel of rounding)."""
    scale = a[1] / b[1]
    return abs(a[0] - b[0] * scale) <= max(1.0, scale) + 0.5


def canvas_edit(mask: np.ndarray, shown: np.ndarray) -> np.ndarray:
    """The full-size ``mask`` ``bool [H, W]`` with the canvas's edits: ``shown`` ``bool [h, w]``
    is what the canvas shows (the picture's size, maybe downscaled). Pixels the canvas changed
    from ``mask`` (brought to its size) are changed at full size, brought back with nearest
    neighbour; the rest keep their full-resolution value. At the same size it is ``shown``."""
    mask = np.asarray(mask, bool)
    shown = np.asarray(shown, bool)
    if shown.ndim != 2 or not _same_aspect(shown.shape, mask.shape):
        raise ValueError(f"the canvas's mask is {shown.shape}, the image's {mask.shape}: reopen the item")
    if shown.shape == mask.shape:
        return shown.copy()
    small = resize_mask(mask, shown.shape)
    return (mask | resize_mask(shown & ~small, mask.shape)) & ~resize_mask(small & ~shown, mask.shape)


def mask_from_file(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """A binary mask image (0/255 or 0/1) -> ``bool [H, W]`` of ``size``.

    Gray masks are read as they are; RGB ones must be gray (R = G = B). An alpha channel holds the
    mask only where the colour bands are uniform (one colour painted through the alpha); where
    both the colours and a partly transparent alpha vary, they must agree, else the file is
    ambiguous and refused rather than read from one of them.
    """
    array = read_image(path)
    if array.ndim == 3:
        array = _mask_band(array)
    if array.shape != tuple(size):
        raise ValueError(f"the mask is {array.shape[1]}×{array.shape[0]} but the image is {size[1]}×{size[0]}")
    return _binary(array, "the mask")


def _binary(array: np.ndarray, what: str) -> np.ndarray:
    values = np.unique(array)
    if not (set(values.tolist()) <= {0, 1} or set(values.tolist()) <= {0, 255}):
        raise ValueError(f"{what} must be binary (0/255 or 0/1); it has {len(values)} distinct values")
    return array > 0


def _mask_band(array: np.ndarray) -> np.ndarray:
    """``[H, W, C]`` (gray + alpha, RGB, RGBA) -> the one ``[H, W]`` band that holds the mask."""
    bands = array.shape[2]
    colour, alpha = (array, None) if bands in (1, 3) else (array[..., :-1], array[..., -1])
    transparent = alpha is not None and alpha.min() < np.iinfo(alpha.dtype).max
    if transparent and (colour == colour[:1, :1]).all():
        return alpha  # one colour painted through the alpha: the alpha is the mask
    if colour.shape[2] > 1 and not (colour == colour[..., :1]).all():
        raise ValueError("the mask has colours; send a gray mask (0/255 or 0/1, R = G = B)")
    gray = colour[..., 0]
    if not transparent or np.array_equal(_binary(gray, "the mask's gray band"), _binary(alpha, "the mask's alpha")):
        return gray  # no alpha, a fully opaque one, or one that draws the same mask
    raise ValueError(
        "the mask is ambiguous: its gray values and its partly transparent alpha channel draw different "
        "masks; send an opaque gray mask (0/255), or one colour with the mask in the alpha channel"
    )
