"""Region clicks: one click inside a region the mask missed adds it, one inside a region it
wrongly covers removes it, the region snapped to the image's edges.

Three ways to find the region around a click, all local to a window around it (an aerial image
holds many look-alike regions far away that the click does not mean):

* ``"grabcut"``: OpenCV's GrabCut, seeded by the current mask (or the model's probability map,
  where the caller has it) as probable foreground / background and the click as certain
  foreground (adding) or certain background (removing);
* ``"superpixel"``: scikit-image SLIC superpixels, grown from the clicked one over neighbours of
  similar mean colour (a magic wand that follows edges in steps of whole superpixels);
* ``"flood"``: a plain magic wand, OpenCV's flood fill within a colour tolerance of the click.

``benchmarks/correction_effort.py`` measures which recovers the true region best from one click
on the shipped model's masks; :data:`DEFAULT_METHOD` is the winner of that measurement.
"""

from __future__ import annotations

import cv2
import numpy as np

from .shapes import Point, check_mask, components

METHODS = ("grabcut", "superpixel", "flood")
DEFAULT_METHOD = "superpixel"
WINDOW = 160  # half the side of the square the region may fill around the click (pixels)
SEED_RADIUS = 4  # the click marks a disc of this radius (pixels) as certain (GrabCut)
COLOUR_TOLERANCE = 26.0  # Lab distance still "the same colour" (chosen in benchmarks/correction_effort.py)
SUPERPIXEL_AREA = 60  # the mean superpixel size (pixels): small enough for one small roof


def _window(shape: tuple[int, int], x: int, y: int, half: int) -> tuple[slice, slice]:
    height, width = shape
    return slice(max(0, y - half), min(height, y + half + 1)), slice(max(0, x - half), min(width, x + half + 1))


def check_click(point: Point, shape: tuple[int, int]) -> tuple[int, int]:
    """A click ``(x, y)`` as whole pixels inside an image of ``shape`` (``ValueError`` outside it)."""
    x, y = (float(v) for v in point)
    height, width = shape
    if not (np.isfinite(x) and np.isfinite(y) and 0 <= x <= width - 1 and 0 <= y <= height - 1):
        raise ValueError(f"the click ({x:g}, {y:g}) is outside the {width}×{height} image")
    return round(x), round(y)


def _check_image(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[:2] != tuple(shape) or image.dtype != np.uint8:
        raise ValueError(f"the image must be uint8 [H, W, 3] of the mask's size {shape}, got {image.shape}")
    return image


def _grabcut(image: np.ndarray, prior: np.ndarray, x: int, y: int, add: bool) -> np.ndarray:
    """GrabCut's foreground in ``image`` (a window), seeded as the module docstring says."""
    seeds = np.where(prior, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    cv2.circle(seeds, (x, y), SEED_RADIUS, cv2.GC_FGD if add else cv2.GC_BGD, -1)
    if (
        not ((seeds == cv2.GC_PR_FGD) | (seeds == cv2.GC_FGD)).any()
        or not ((seeds == cv2.GC_PR_BGD) | (seeds == cv2.GC_BGD)).any()
    ):
        # GrabCut needs samples of both sides; a window all one side has no edge to snap to
        return seeds == (cv2.GC_FGD if add else cv2.GC_PR_FGD)
    background, foreground = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    bgr = np.ascontiguousarray(image[..., ::-1])
    cv2.grabCut(bgr, seeds, None, background, foreground, 4, cv2.GC_INIT_WITH_MASK)
    return (seeds == cv2.GC_FGD) | (seeds == cv2.GC_PR_FGD)


def _lab(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)


def _superpixel_region(image: np.ndarray, x: int, y: int) -> np.ndarray:
    """SLIC superpixels grown from the clicked one over neighbours within
    :data:`COLOUR_TOLERANCE` of its mean Lab colour."""
    from skimage.segmentation import slic

    segments = slic(image, n_segments=max(1, image.shape[0] * image.shape[1] // SUPERPIXEL_AREA), start_label=0)
    count = int(segments.max()) + 1
    lab = _lab(image).reshape(-1, 3)
    sizes = np.bincount(segments.ravel(), minlength=count).astype(np.float32)
    means = np.stack([np.bincount(segments.ravel(), lab[:, c], minlength=count) for c in range(3)], 1)
    means /= np.maximum(sizes, 1)[:, None]
    similar = np.linalg.norm(means - means[segments[y, x]], axis=1) <= COLOUR_TOLERANCE
    # grow over adjacency: of the similar superpixels, those connected to the clicked one
    labels, _ = components(similar[segments])
    return labels == labels[y, x]


def _flood_region(image: np.ndarray, x: int, y: int) -> np.ndarray:
    """The pixels connected to the click within :data:`COLOUR_TOLERANCE` of its colour (Lab)."""
    lab = cv2.GaussianBlur(_lab(image), (5, 5), 0)  # JPEG noise would stop the fill at every block
    filled = np.zeros((image.shape[0] + 2, image.shape[1] + 2), np.uint8)
    tolerance = (COLOUR_TOLERANCE / np.sqrt(3),) * 3
    flags = 8 | cv2.FLOODFILL_FIXED_RANGE | cv2.FLOODFILL_MASK_ONLY | (1 << 8)
    cv2.floodFill(lab, filled, (x, y), 0, tolerance, tolerance, flags)
    return filled[1:-1, 1:-1].astype(bool)


def click_region(
    mask: np.ndarray,
    image: np.ndarray,
    point: Point,
    add: bool,
    method: str = DEFAULT_METHOD,
    probability: np.ndarray | None = None,
    window: int = WINDOW,
) -> np.ndarray:
    """The region a click means, ``bool [H, W]``: connected, containing the click, within
    ``window`` pixels of it, and outside ``mask`` when adding (inside it when removing).

    mask: ``bool [H, W]`` the current mask; image: ``uint8 [H, W, 3]`` RGB; point: the click
    ``(x, y)``; probability: ``float [H, W]`` the model's map, GrabCut's seed where given (else
    the mask is). Empty when the click is already on the side it asks for.
    """
    mask = check_mask(mask)
    image = _check_image(image, mask.shape)
    if method not in METHODS:
        raise ValueError(f"the region method must be one of {METHODS}, got {method!r}")
    if window < 1:
        raise ValueError(f"the window must be at least 1 pixel, got {window}")
    x, y = check_click(point, mask.shape)
    region = np.zeros(mask.shape, bool)
    if mask[y, x] == add:
        return region
    rows, cols = _window(mask.shape, x, y, window)
    local_x, local_y = x - cols.start, y - rows.start
    crop = np.ascontiguousarray(image[rows, cols])
    if method == "grabcut":
        prior = mask[rows, cols] if probability is None else np.asarray(probability)[rows, cols] >= 0.5
        found = _grabcut(crop, prior, local_x, local_y, add)
        found = found & ~mask[rows, cols] if add else ~found & mask[rows, cols]
    else:
        grow = _superpixel_region if method == "superpixel" else _flood_region
        found = grow(crop, local_x, local_y)
        found &= ~mask[rows, cols] if add else mask[rows, cols]
    labels, _ = components(found)
    if labels[local_y, local_x]:
        region[rows, cols] = labels == labels[local_y, local_x]
    return region


def add_region(mask: np.ndarray, image: np.ndarray, point: Point, **options) -> np.ndarray:
    """``mask`` with the region around the click added (see :func:`click_region`)."""
    return check_mask(mask) | click_region(mask, image, point, True, **options)


def remove_region(mask: np.ndarray, image: np.ndarray, point: Point, **options) -> np.ndarray:
    """``mask`` without the region around the click (see :func:`click_region`)."""
    return check_mask(mask) & ~click_region(mask, image, point, False, **options)
