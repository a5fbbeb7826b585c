"""Region clicks: one click inside a region the mask missed adds it, one inside a region it
wrongly covers removes it, the region snapped to the image's edges or to the model's own map.

Ways to find the region around a click:

* ``"superpixel"``: scikit-image SLIC superpixels of the whole picture, grown from the clicked
  one over connected superpixels of similar mean colour (a magic wand that follows edges in steps
  of whole superpixels), at one of three :data:`SCALES`: small superpixels within a window
  around the click for a roof, larger ones for a field or a lake, the largest over the whole
  picture for a shoreline;
* ``"model"``: the segment the model almost found: the connected piece, containing the click, of
  the pixels whose foreground probability is at least the click's less :data:`MODEL_MARGIN`
  (adding) or at most the click's plus it (removing);
* ``"grabcut"``: OpenCV's GrabCut in a window, seeded by the current mask (or the model's
  probability map) as probable foreground / background and the click as certain;
* ``"flood"``: a plain magic wand, OpenCV's flood fill within a colour tolerance of the click.

``benchmarks/correction_effort.py`` measures which recovers the true region best from one click
and how many actions each toolset needs to correct the shipped model's masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .shapes import Point, check_mask, components

METHODS = ("superpixel", "model", "grabcut", "flood")
DEFAULT_METHOD = "superpixel"
WINDOW = 160  # half the side of the square GrabCut and flood fill may fill around the click (pixels)
SEED_RADIUS = 4  # the click marks a disc of this radius (pixels) as certain (GrabCut)
COLOUR_TOLERANCE = 26.0  # Lab distance still "the same colour" (chosen in benchmarks/correction_effort.py)
MODEL_MARGIN = 0.1  # how far below (adding) or above (removing) the click's probability the region reaches


@dataclass(frozen=True)
class Scale:
    """One size of the superpixel region tool."""

    area: int  # mean superpixel size (pixels)
    tolerance: float  # Lab distance from the clicked superpixel's mean still "the same colour"
    window: int | None  # half the side of the square the region may fill around the click; None: anywhere


# small: one small roof is a superpixel of its own; large: a lake or a desert in a few clicks
# (sizes and tolerances chosen on the benchmark's own cases, see docs/benchmarks.md)
SCALES = {"small": Scale(60, 26.0, 160), "medium": Scale(300, 20.0, 400), "large": Scale(1500, 15.0, None)}
DEFAULT_SCALE = "small"


@dataclass(frozen=True)
class Superpixels:
    """SLIC superpixels of one picture: ``segments`` ``int32 [H, W]`` (labels from 0) and each
    one's mean CIE Lab colour ``float32 [n, 3]``."""

    segments: np.ndarray
    means: np.ndarray


def _window(shape: tuple[int, int], x: int, y: int, half: int) -> tuple[slice, slice]:
    height, width = shape
    return slice(max(0, y - half), min(height, y + half + 1)), slice(max(0, x - half), min(width, x + half + 1))


def _window_mask(shape: tuple[int, int], x: int, y: int, half: int) -> np.ndarray:
    inside = np.zeros(shape, bool)
    inside[_window(shape, x, y, half)] = True
    return inside


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


def superpixels(image: np.ndarray, area: int) -> Superpixels:
    """SLIC superpixels of ``image`` ``uint8 [H, W, 3]`` (RGB) of about ``area`` pixels each; a
    caller that clicks one picture many times computes them once per scale."""
    from skimage.segmentation import slic

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"the image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
    if area < 1:
        raise ValueError(f"the superpixel area must be at least 1 pixel, got {area}")
    segments = slic(image, n_segments=max(1, image.shape[0] * image.shape[1] // area), start_label=0)
    count = int(segments.max()) + 1
    lab = _lab(image).reshape(-1, 3)
    sizes = np.bincount(segments.ravel(), minlength=count).astype(np.float32)
    means = np.stack([np.bincount(segments.ravel(), lab[:, c], minlength=count) for c in range(3)], 1)
    return Superpixels(segments.astype(np.int32), (means / np.maximum(sizes, 1)[:, None]).astype(np.float32))


def _superpixel_region(pixels: Superpixels, tolerance: float, x: int, y: int) -> np.ndarray:
    """The superpixels within ``tolerance`` of the clicked one's mean Lab colour, ``bool [H, W]``."""
    similar = np.linalg.norm(pixels.means - pixels.means[pixels.segments[y, x]], axis=1) <= tolerance
    return similar[pixels.segments]


def _model_region(probability: np.ndarray, x: int, y: int, add: bool) -> np.ndarray:
    """The pixels on the click's side of its probability, widened by :data:`MODEL_MARGIN`."""
    level = float(probability[y, x])
    return probability >= level - MODEL_MARGIN if add else probability <= level + MODEL_MARGIN


def _flood_region(image: np.ndarray, x: int, y: int) -> np.ndarray:
    """The pixels connected to the click within :data:`COLOUR_TOLERANCE` of its colour (Lab)."""
    lab = cv2.GaussianBlur(_lab(image), (5, 5), 0)  # JPEG noise would stop the fill at every block
    filled = np.zeros((image.shape[0] + 2, image.shape[1] + 2), np.uint8)
    tolerance = (COLOUR_TOLERANCE / np.sqrt(3),) * 3
    flags = 8 | cv2.FLOODFILL_FIXED_RANGE | cv2.FLOODFILL_MASK_ONLY | (1 << 8)
    cv2.floodFill(lab, filled, (x, y), 0, tolerance, tolerance, flags)
    return filled[1:-1, 1:-1].astype(bool)


def _check_probability(probability: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    if probability is None:
        raise ValueError("the model region needs the model's probability map")
    probability = np.asarray(probability, dtype=np.float32)
    if probability.shape != tuple(shape) or not np.isfinite(probability).all():
        raise ValueError(f"the probability map must be finite, of the mask's size {shape}, got {probability.shape}")
    return probability


def click_region(
    mask: np.ndarray,
    image: np.ndarray,
    point: Point,
    add: bool,
    method: str = DEFAULT_METHOD,
    probability: np.ndarray | None = None,
    window: int = WINDOW,
    scale: str = DEFAULT_SCALE,
    pixels: Superpixels | None = None,
) -> np.ndarray:
    """The region a click means, ``bool [H, W]``: connected, containing the click, outside
    ``mask`` when adding (inside it when removing), and within the window around the click that
    the method allows (GrabCut, flood: ``window`` pixels; superpixels: their scale's; model: none).

    mask: ``bool [H, W]`` the current mask; image: ``uint8 [H, W, 3]`` RGB; point: the click
    ``(x, y)``; probability: ``float [H, W]`` the model's map (needed by ``"model"``, GrabCut's
    seed where given, else the mask is); scale: a key of :data:`SCALES` (superpixels); pixels:
    :func:`superpixels` of ``image`` at that scale's area, computed here when not given. Empty
    when the click is already on the side it asks for.
    """
    mask = check_mask(mask)
    image = _check_image(image, mask.shape)
    if method not in METHODS:
        raise ValueError(f"the region method must be one of {METHODS}, got {method!r}")
    if scale not in SCALES:
        raise ValueError(f"the region size must be one of {tuple(SCALES)}, got {scale!r}")
    if window < 1:
        raise ValueError(f"the window must be at least 1 pixel, got {window}")
    x, y = check_click(point, mask.shape)
    region = np.zeros(mask.shape, bool)
    if mask[y, x] == add:
        return region
    if method == "model":
        found = _model_region(_check_probability(probability, mask.shape), x, y, add)
    elif method == "superpixel":
        size = SCALES[scale]
        pixels = superpixels(image, size.area) if pixels is None else pixels
        if pixels.segments.shape != mask.shape:
            raise ValueError(f"the superpixels are of a {pixels.segments.shape} picture, the mask {mask.shape}")
        found = _superpixel_region(pixels, size.tolerance, x, y)
        if size.window is not None:
            found &= _window_mask(mask.shape, x, y, size.window)
    else:
        rows, cols = _window(mask.shape, x, y, window)
        crop = np.ascontiguousarray(image[rows, cols])
        local_x, local_y = x - cols.start, y - rows.start
        if method == "grabcut":
            prior = mask[rows, cols] if probability is None else np.asarray(probability)[rows, cols] >= 0.5
            inside = _grabcut(crop, prior, local_x, local_y, add)
            inside = inside if add else ~inside
        else:
            inside = _flood_region(crop, local_x, local_y)
        found = np.zeros(mask.shape, bool)
        found[rows, cols] = inside
    found &= ~mask if add else mask
    labels, _ = components(found)
    return labels == labels[y, x] if labels[y, x] else region


def add_region(mask: np.ndarray, image: np.ndarray, point: Point, **options) -> np.ndarray:
    """``mask`` with the region around the click added (see :func:`click_region`)."""
    return check_mask(mask) | click_region(mask, image, point, True, **options)


def remove_region(mask: np.ndarray, image: np.ndarray, point: Point, **options) -> np.ndarray:
    """``mask`` without the region around the click (see :func:`click_region`)."""
    return check_mask(mask) & ~click_region(mask, image, point, False, **options)


def adds_at(mask: np.ndarray, point: Point) -> bool:
    """What a click in the canvas's *Auto* mode does: add (True) where the clicked pixel is off
    the mask, remove where it is on it -- a click inside a missed region adds it, one inside a
    wrongly covered region removes it, with no add/remove switch between them."""
    mask = check_mask(mask)
    x, y = check_click(point, mask.shape)
    return not bool(mask[y, x])


def toggle_region(mask: np.ndarray, image: np.ndarray, point: Point, **options) -> np.ndarray:
    """A region click in *Auto* mode: :func:`add_region` off the mask, :func:`remove_region` on it."""
    edit = add_region if adds_at(mask, point) else remove_region
    return edit(mask, image, point, **options)
