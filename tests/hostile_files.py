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
