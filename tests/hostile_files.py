"""Hostile files for the hostile-input corpus (tests/test_hostile_*.py), made on the fly."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

SHORT, LONG = 3, 4


def sparse_tiff(path: Path, height: int, width: int, bands: int, dtype: str = "float64") -> Path:
    """A TIFF whose header promises ``height × width × bands`` samples of ``dtype`` but holds no
    pixel data (one sparse strip of 0 bytes, which GDAL fills with zeros): ~200 bytes on disk,
    gigabytes once decoded."""
    kind = np.dtype(dtype)
    sample_format = {"f": 3, "i": 2, "u": 1}[kind.kind]
    entries = [
        (256, LONG, [width]),
        (257, LONG, [height]),
        (258, SHORT, [8 * kind.itemsize] * bands),
        (259, SHORT, [1]),  # no compression
        (262, SHORT, [1]),  # min-is-black
        (273, LONG, [0]),  # the strip's offset...
        (277, SHORT, [bands]),
        (278, LONG, [height]),
        (279, LONG, [0]),  # ...and its 0 bytes: sparse
        (284, SHORT, [1]),
        (338, SHORT, [0] * (bands - 1)),
        (339, SHORT, [sample_format] * bands),
    ]
    extra_start = 8 + 2 + 12 * len(entries) + 4
    body, extra = bytearray(struct.pack("<H", len(entries))), bytearray()
    for tag, field, values in entries:
        packed = struct.pack(f"<{len(values)}{'H' if field == SHORT else 'I'}", *values)
        if len(packed) <= 4:
            body += struct.pack("<HHI", tag, field, len(values)) + packed.ljust(4, b"\0")
        else:
            body += struct.pack("<HHII", tag, field, len(values), extra_start + len(extra))
            extra += packed
    body += struct.pack("<I", 0)
    path.write_bytes(b"II*\0" + struct.pack("<I", 8) + bytes(body) + bytes(extra))
    return path


def float_tiff(path: Path, fill: float, height: int = 40, width: int = 56, nan_rows: int | None = None) -> Path:
    """A 3-band float32 TIFF: all ``fill`` (NaN / inf), or a gradient whose first ``nan_rows`` rows are NaN."""
    if nan_rows is None:
        data = np.full((height, width, 3), fill, np.float32)
    else:
        data = np.linspace(0.0, 1.0, height * width * 3, dtype=np.float32).reshape(height, width, 3)
        data[:nan_rows] = np.nan
    tifffile.imwrite(path, data, photometric="rgb")
    return path


def rgba_png(path: Path, rgb: np.ndarray, alpha: np.ndarray) -> Path:
    """An RGBA PNG from ``rgb`` (``uint8 [H, W, 3]`` or one value) and ``alpha`` (``uint8 [H, W]``)."""
    colour = np.broadcast_to(np.asarray(rgb, np.uint8), (*alpha.shape, 3))
    Image.fromarray(np.dstack([colour, alpha]).astype(np.uint8), "RGBA").save(path)
    return path


def gray_png(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(np.asarray(array, np.uint8)).save(path)
    return path


# EXIF Orientation -> how the *stored* pixels are made from the picture as viewers show it: the
# inverse of what the tag tells a viewer to do (2-5 and 7 are their own inverse; 6 and 8 swap)
STORED_FROM_SHOWN = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,  # the viewer turns it 90° clockwise back
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def blocky_picture(height: int = 48, width: int = 80, block: int = 16) -> np.ndarray:
    """``uint8 [height, width, 3]`` of flat ``block``-pixel squares in distinct colours: JPEG keeps
    them (nearly) exact, and every flip or turn of it is a different picture."""
    rows, cols = height // block, width // block
    colours = np.random.default_rng(7).integers(0, 256, (rows, cols, 3), dtype=np.uint8)
    return np.repeat(np.repeat(colours, block, axis=0), block, axis=1)


def oriented_image(path: Path, shown: np.ndarray, orientation: int) -> Path:
    """A JPEG (or PNG, by ``path``'s suffix) whose pixels are ``shown`` stored as a phone would for
    EXIF ``orientation`` (1-8), with that tag, so viewers show ``shown``."""
    picture = Image.fromarray(shown)
    if STORED_FROM_SHOWN[orientation] is not None:
        picture = picture.transpose(STORED_FROM_SHOWN[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    lossless_as_can_be = {"quality": 100, "subsampling": 0} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    picture.save(path, exif=exif, **lossless_as_can_be)
    return path
