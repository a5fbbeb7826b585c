"""Shape tools on a binary mask: polygons and brush strokes (by the mask canvas's own rules), hole
filling, speck removal, and the undo history.

Every tool takes a mask ``bool [H, W]`` and returns a new one (the input is never changed), so
a caller can keep the old mask for undo. Connected components are 8-connected (a diagonal
touch joins two pixels), as a brush stroke drawn at an angle is.
"""

from __future__ import annotations

import itertools
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


# what each kind of point list needs: the fewest points, and what its points are called
POINT_KINDS = {"polygon": (3, "polygon vertices"), "stroke": (1, "stroke points")}


def check_points(points: Sequence[Point], shape: tuple[int, int], kind: str = "polygon") -> np.ndarray:
    """Vertices ``[(x, y), ...]`` as ``float64 [N, 2]`` in the image's continuous coordinates
    (pixel ``(x, y)`` spans ``[x, x + 1) × [y, y + 1)``, its centre at ``+ 0.5``), ``ValueError``
    for fewer than ``kind`` needs (:data:`POINT_KINDS`) or any outside the image of ``shape``."""
    least, called = POINT_KINDS[kind]
    array = np.asarray(points, dtype=np.float64).reshape(-1, 2) if len(points) else np.zeros((0, 2))
    if len(array) < least:
        raise ValueError(f"a {kind} needs at least {least} vertices, got {len(array)}")
    height, width = shape
    if not np.isfinite(array).all() or (array < 0).any() or (array[:, 0] > width).any() or (array[:, 1] > height).any():
        raise ValueError(f"{called} must lie inside the {width}×{height} image")
    return array


def polygon_inside(points: Sequence[Point], shape: tuple[int, int]) -> np.ndarray:
    """The pixels of the polygon through ``points`` ``bool [H, W]``, by the canvas's rule
    (``mask_canvas.js``): even-odd at pixel centres, each row's spans half-open."""
    array = check_points(points, shape)
    inside = np.zeros(shape, bool)
    ax, ay = array[:, 0], array[:, 1]
    bx, by = np.roll(ax, -1), np.roll(ay, -1)
    y0, y1 = max(0, int(np.floor(ay.min()))), min(shape[0], int(np.ceil(ay.max())) + 1)
    for y in range(y0, y1):
        centre = y + 0.5
        crossing = (ay <= centre) != (by <= centre)
        xs = np.sort(
            ax[crossing] + (centre - ay[crossing]) * (bx[crossing] - ax[crossing]) / (by[crossing] - ay[crossing])
        )
        for left, right in zip(xs[::2], xs[1::2], strict=False):
            start, stop = max(0, int(np.ceil(left - 0.5))), min(shape[1], int(np.ceil(right - 0.5)))
            inside[y, start:stop] = True
    return inside


def polygon(mask: np.ndarray, points: Sequence[Point], add: bool | None = True) -> np.ndarray:
    """``mask`` with the polygon through ``points`` (``(x, y)`` vertices, closed back to the
    first) added (``add``) or cut out, by the canvas's rule (:func:`polygon_inside`), so a
    polygon drawn on the canvas and one computed here agree to the pixel. ``add=None`` is the
    canvas's *Auto* mode: a polygon more than half of which is already mask is cut out, any
    other is added."""
    mask = check_mask(mask)
    inside = polygon_inside(points, mask.shape)
    if add is None:
        add = 2 * int(np.count_nonzero(mask & inside)) <= int(np.count_nonzero(inside))
    return mask | inside if add else mask & ~inside


def stroke(mask: np.ndarray, points: Sequence[Point], size: float, add: bool = True) -> np.ndarray:
    """``mask`` with a brush stroke through ``points`` painted (``add``) or erased, by the
    canvas's rule: every pixel whose centre lies within ``size / 2`` of the path (a lone point:
    a disc)."""
    mask = check_mask(mask).copy()
    array = check_points(points, mask.shape, kind="stroke")
    if not size > 0:
        raise ValueError(f"a brush is at least 1 pixel wide, got {size}")
    radius = size / 2
    pairs = [(array[0], array[0]), *itertools.pairwise(array)]
    for a, b in pairs:
        x0, x1 = max(0, int(np.floor(min(a[0], b[0]) - radius))), int(np.ceil(max(a[0], b[0]) + radius)) + 1
        y0, y1 = max(0, int(np.floor(min(a[1], b[1]) - radius))), int(np.ceil(max(a[1], b[1]) + radius)) + 1
        window = mask[y0:y1, x0:x1]  # a view: the segment's box, cut at the image's edge
        ys, xs = np.mgrid[y0 : y0 + window.shape[0], x0 : x0 + window.shape[1]]
        px, py = xs + 0.5 - a[0], ys + 0.5 - a[1]
        dx, dy = b[0] - a[0], b[1] - a[1]
        length2 = dx * dx + dy * dy
        t = np.clip((px * dx + py * dy) / length2, 0, 1) if length2 else np.zeros_like(px)
        ex, ey = px - t * dx, py - t * dy
        window[ex * ex + ey * ey <= radius * radius] = add
    return mask


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
