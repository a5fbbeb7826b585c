"""Shape tools on a binary mask: polygons, hole filling, speck removal, and the undo history.

Every tool takes a mask ``bool [H, W]`` and returns a new one (the input is never changed), so
a caller can keep the old mask for undo. Connected components are 8-connected (a diagonal
touch joins two pixels), as a brush stroke drawn at an angle is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

Point = tuple[float, float]  # (x, y) in pixels: column first, as a click reports it
SNAP_RADIUS = 8.0  # a polygon click this close to the first vertex closes it (canvas pixels)
MAX_UNDO = 30


def check_mask(mask: np.ndarray) -> np.ndarray:
    """``mask`` as ``bool [H, W]``, or ``ValueError`` for anything else."""
    array = np.asarray(mask)
    if array.ndim != 2 or array.size == 0:
        raise ValueError(f"a mask must be a non-empty 2-D array, got shape {array.shape}")
    return array.astype(bool, copy=False)


def components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-connected components of ``mask``: labels ``int32 [H, W]`` (0 = outside) and the area of
    each label ``int64 [n + 1]`` (index 0 is the background's)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(check_mask(mask).astype(np.uint8), connectivity=8)
    return labels, stats[:count, cv2.CC_STAT_AREA].astype(np.int64)


def remove_specks(mask: np.ndarray, min_area: int) -> np.ndarray:
    """``mask`` without its connected pieces of fewer than ``min_area`` pixels."""
    if min_area < 1:
        raise ValueError(f"the smallest piece to keep must be at least 1 pixel, got {min_area}")
    labels, areas = components(mask)
    keep = areas >= min_area
    keep[0] = False
    return keep[labels]


def fill_holes(mask: np.ndarray, max_area: int | None = None) -> np.ndarray:
    """``mask`` with its holes filled: pieces of background it encloses (not touching the image's
    border), all of them or only those of at most ``max_area`` pixels. Holes are 4-connected so a
    diagonal gap in the outline does not let a hole leak out."""
    mask = check_mask(mask)
    if max_area is not None and max_area < 1:
        raise ValueError(f"the largest hole to fill must be at least 1 pixel, got {max_area}")
    count, labels, stats, _ = cv2.connectedComponentsWithStats((~mask).astype(np.uint8), connectivity=4)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    hole = np.ones(count, bool)
    hole[0] = False
    hole[border] = False
    if max_area is not None:
        hole &= stats[:count, cv2.CC_STAT_AREA] <= max_area
    return mask | hole[labels]


def check_points(points: Sequence[Point], shape: tuple[int, int]) -> np.ndarray:
    """Polygon vertices ``[(x, y), ...]`` as ``int32 [N, 2]`` inside an image of ``shape``
    (``ValueError`` for fewer than three vertices or any outside the image)."""
    array = np.asarray(points, dtype=np.float64).reshape(-1, 2) if len(points) else np.zeros((0, 2))
    if len(array) < 3:
        raise ValueError(f"a polygon needs at least 3 vertices, got {len(array)}")
    height, width = shape
    if (
        not np.isfinite(array).all()
        or (array < 0).any()
        or (array[:, 0] > width - 1).any()
        or (array[:, 1] > height - 1).any()
    ):
        raise ValueError(f"polygon vertices must lie inside the {width}×{height} image")
    return np.round(array).astype(np.int32)


def polygon(mask: np.ndarray, points: Sequence[Point], add: bool | None = True) -> np.ndarray:
    """``mask`` with the polygon through ``points`` (``(x, y)`` vertices, closed back to the
    first) added (``add``) or cut out, its outline included. ``add=None`` is the canvas's *Auto*
    mode: a polygon more than half of which is already mask is cut out, any other is added."""
    mask = check_mask(mask)
    inside = np.zeros(mask.shape, np.uint8)
    cv2.fillPoly(inside, [check_points(points, mask.shape)], 1, lineType=cv2.LINE_8)
    inside = inside.astype(bool)
    if add is None:
        add = 2 * int(np.count_nonzero(mask & inside)) <= int(np.count_nonzero(inside))
    return mask | inside if add else mask & ~inside


def closes_polygon(points: Sequence[Point], click: Point, radius: float = SNAP_RADIUS) -> bool:
    """True if ``click`` lands within ``radius`` pixels of the first vertex of a polygon that
    has at least three: the click closes it (snaps to the first vertex) instead of adding one."""
    if len(points) < 3:
        return False
    (x0, y0), (x, y) = points[0], click
    return float(np.hypot(x - x0, y - y0)) <= radius


def pack(mask: np.ndarray) -> tuple[bytes, tuple[int, int]]:
    """A mask as packed bits (8 pixels a byte) and its shape: how the undo history keeps it."""
    mask = check_mask(mask)
    return np.packbits(mask).tobytes(), mask.shape


def unpack(packed: tuple[bytes, tuple[int, int]]) -> np.ndarray:
    """The mask :func:`pack` packed, ``bool [H, W]``."""
    data, (height, width) = packed
    return np.unpackbits(np.frombuffer(data, np.uint8), count=height * width).reshape(height, width).astype(bool)


@dataclass(frozen=True)
class History:
    """The masks before each edit, newest last (packed, at most :data:`MAX_UNDO`): one per open
    mask, replaced, never changed, so a copy kept by the caller stays valid."""

    undo: tuple[tuple[bytes, tuple[int, int]], ...] = field(default_factory=tuple)

    def push(self, mask: np.ndarray) -> History:
        """This history with ``mask`` (the mask before an edit) on top."""
        return History((*self.undo, pack(mask))[-MAX_UNDO:])

    def pop(self) -> tuple[np.ndarray, History]:
        """The mask before the last edit, and the history without it (``ValueError`` if empty)."""
        if not self.undo:
            raise ValueError("nothing to undo")
        return unpack(self.undo[-1]), History(self.undo[:-1])

    def __len__(self) -> int:
        return len(self.undo)
