"""Binary masks <-> COCO run-length encoding (the store's lossless mask format).

Why RLE and not PNG: a referring mask is a few blobs, and COCO's compressed RLE (column-major
run lengths, LEB128-like ASCII) stores it in tens to hundreds of bytes, encodes and decodes in
microseconds with ``pycocotools``, and is exactly what the RRSIS-D ``instances.json`` and COCO
exports contain, so an export copies the stored bytes instead of re-encoding. Being small, the
mask lives in its database row and is committed atomically with it (no file to lose).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils


def check_mask(mask: Any, height: int | None = None, width: int | None = None) -> np.ndarray:
    """A binary mask as ``bool [H, W]``, or ``ValueError`` saying what is wrong.

    Accepted: ``bool``; integers or floats holding only 0 and 1; ``uint8`` holding only 0 and 255
    (how mask PNGs are usually saved). With ``height``/``width`` the size must match exactly.
    """
    array = np.asarray(mask)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim != 2 or 0 in array.shape:
        raise ValueError(f"a mask must be a non-empty 2-D array [H, W], got shape {array.shape}")
    if height is not None and width is not None and array.shape != (height, width):
        raise ValueError(f"the mask is {array.shape[0]}x{array.shape[1]} (HxW) but its image is {height}x{width}")
    if array.dtype == bool:
        return array
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"a mask must be boolean or numeric, got dtype {array.dtype}")
    values = np.unique(array)
    if set(values.tolist()) <= {0, 1}:
        return array == 1
    if array.dtype == np.uint8 and set(values.tolist()) <= {0, 255}:
        return array == 255
    shown = ", ".join(str(v) for v in values[:6]) + (" ..." if len(values) > 6 else "")
    raise ValueError(f"the mask is not binary: values {shown} (expected only 0/1, True/False or 0/255 uint8)")


def encode_mask(mask: np.ndarray) -> bytes:
    """``bool [H, W]`` -> COCO compressed RLE ``counts`` bytes."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return bytes(rle["counts"])


def decode_mask(counts: bytes | str, height: int, width: int) -> np.ndarray:
    """COCO compressed RLE ``counts`` -> ``bool [H, W]``."""
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    return mask_utils.decode({"size": [int(height), int(width)], "counts": counts}).astype(bool)


def rle_json(counts: bytes, height: int, width: int) -> dict[str, Any]:
    """The JSON form COCO files use: ``{"size": [H, W], "counts": str}``."""
    return {"size": [int(height), int(width)], "counts": counts.decode("ascii")}


def rle_from_json(segmentation: dict[str, Any]) -> np.ndarray:
    """A COCO RLE (compressed string or uncompressed list counts) -> ``bool [H, W]``."""
    height, width = (int(v) for v in segmentation["size"])
    counts = segmentation["counts"]
    if isinstance(counts, list):
        counts = mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)["counts"]
    return decode_mask(counts, height, width)


def bbox(mask: np.ndarray) -> list[float]:
    """COCO box ``[x, y, w, h]`` of the foreground (zeros for an empty mask)."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def mean_uncertainty(probability: np.ndarray) -> float:
    """How unsure a prediction is, for the review queue's "uncertain" order: the mean over pixels
    of ``1 - |2p - 1|`` (0: every pixel certain, 1: every pixel at p = 0.5), ``p`` the predicted
    foreground probability ``float [H, W]`` in [0, 1]."""
    p = np.asarray(probability, dtype=np.float64)
    if p.ndim != 2 or p.size == 0 or not np.isfinite(p).all() or p.min() < 0 or p.max() > 1:
        raise ValueError("probability must be a finite 2-D array in [0, 1]")
    return float(np.mean(1.0 - np.abs(2.0 * p - 1.0)))
