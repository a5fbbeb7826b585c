"""Pictures for people: mask overlays and probability colour maps.

Everything here is numpy in, ``uint8`` numpy out, with no state: the app's handlers call these
functions and hand the arrays to Gradio components.
"""

from __future__ import annotations

from functools import cache

import numpy as np

# one colour per expression, in the order they were typed (distinct on aerial imagery, which is
# mostly grey, green and brown: saturated magenta/cyan/orange read best)
PALETTE = (
    "#ff2e88",
    "#00c2ff",
    "#ffb000",
    "#7cff4f",
    "#a25bff",
    "#ff5a1f",
    "#00e0a4",
    "#ffe74c",
)
# the mask's colour on the mask canvas (annotate/app/mask_canvas.py)
BRUSH_ADD = "#ff2e88"


def hex_to_rgb(colour: str) -> tuple[int, int, int]:
    """``"#rrggbb"`` -> ``(r, g, b)``."""
    value = colour.lstrip("#")
    if len(value) != 6:
        raise ValueError(f"expected a colour like '#ff2e88', got {colour!r}")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def palette_colour(index: int) -> str:
    """The hex colour of the ``index``-th expression (the palette repeats after 8)."""
    return PALETTE[index % len(PALETTE)]


@cache
def _lookup_table(name: str) -> np.ndarray:
    """A matplotlib colour map as a ``[256, 3] uint8`` table (read-only, shared)."""
    from matplotlib import colormaps

    table = (colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)
    table.setflags(write=False)
    return table


def colourise(values: np.ndarray, cmap: str = "magma", vmin: float = 0.0, vmax: float = 1.0) -> np.ndarray:
    """``float [H, W]`` -> ``uint8 [H, W, 3]`` through a matplotlib colour map (NaN -> vmin)."""
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"colourise needs a 2-D map, got shape {values.shape}")
    span = vmax - vmin if vmax > vmin else 1.0
    scaled = np.nan_to_num((values - vmin) / span, nan=0.0)
    index = np.clip(np.round(scaled * 255.0), 0, 255).astype(np.uint8)
    return _lookup_table(cmap)[index]


def overlay_mask(image: np.ndarray, mask: np.ndarray, colour: str, alpha: float = 0.5) -> np.ndarray:
    """``uint8 [H, W, 3]`` image with ``bool [H, W]`` mask blended in ``colour`` and outlined."""
    if image.shape[:2] != mask.shape:
        raise ValueError(f"mask {mask.shape} and image {image.shape[:2]} differ in size")
    out = image.astype(np.float32)
    rgb = np.array(hex_to_rgb(colour), np.float32)
    out[mask] = (1.0 - alpha) * out[mask] + alpha * rgb
    out[mask_outline(mask)] = rgb
    return out.round().astype(np.uint8)


def mask_outline(mask: np.ndarray) -> np.ndarray:
    """``bool [H, W]``: mask pixels with at least one 4-neighbour outside the mask."""
    mask = np.asarray(mask, dtype=bool)
    padded = np.pad(mask, 1, mode="edge")
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def blend(image: np.ndarray, heat_rgb: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """A colour-mapped map blended over a dimmed grey version of ``image`` (both ``[H, W, 3]``)."""
    grey = image.astype(np.float32).mean(axis=2, keepdims=True) * 0.8
    return ((1.0 - alpha) * grey + alpha * heat_rgb.astype(np.float32)).round().astype(np.uint8)


def probability_image(image: np.ndarray, probability: np.ndarray) -> np.ndarray:
    """The model's ``float [H, W]`` probability as a magma heat map over the dimmed image."""
    return blend(image, colourise(probability, "magma"), alpha=0.7)


def fit_within(image: np.ndarray, max_side: int) -> np.ndarray:
    """Downscale ``[H, W, C]`` (area filter) so its longer side is at most ``max_side``."""
    height, width = image.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1.0:
        return image
    from PIL import Image

    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX))
