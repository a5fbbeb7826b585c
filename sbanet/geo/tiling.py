"""Sliding-window inference over scenes of any size, with seamless blending and bounded memory.

A scene is cut into tiles of the model's input size (``config.image_size``) that overlap by at
least ``overlap`` pixels, spread evenly so the first and last tiles touch the scene's edges.
Each tile's foreground probability is weighted by a raised-cosine ramp over the pixels it shares
with each neighbour (``sin^2``, so two ramps facing each other sum to exactly 1) and the weighted
sum is divided by the summed weights: no seam where tiles meet, and a pixel seen by one tile
only gets exactly that tile's probability.

Memory is bounded by one row of tiles: tiles are read from the :class:`~sbanet.geo.raster.RasterSource`
window by window, accumulated in a buffer of at most two tile heights times the scene's width,
and rows no later tile touches are handed to a writer (:mod:`sbanet.geo.writers`: in memory, or
GeoTIFFs written band by band). The model is driven through its tensor-level API: each
expression is encoded once, then batches of tiles run ``encode_image_prefix`` +
``forward_from_prefix`` for every expression.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rasterio.windows import Window
from tqdm.auto import tqdm

from sbanet.inference.gsd import plan_scale
from sbanet.inference.predictor import Predictor

from .raster import RasterSource, open_raster
from .writers import ArrayWriter, SceneWriter

ProgressCallback = Callable[[int, int], Any]  # (tiles done, tiles in all)


@dataclass(frozen=True)
class Tile:
    """A window of the scene: top-left ``(row, col)``, its size, and how many of its pixels it
    shares with the neighbouring tile on each side (``top, bottom, left, right``; 0 at edges)."""

    row: int
    col: int
    height: int
    width: int
    overlaps: tuple[int, int, int, int] = (0, 0, 0, 0)

    @property
    def window(self) -> Window:
        return Window(self.col, self.row, self.width, self.height)


def tile_starts(length: int, size: int, overlap: int) -> list[int]:
    """Start offsets of the fewest tiles of ``size`` sharing at least ``overlap`` pixels that
    cover ``length``, spread evenly from 0 to ``length - size`` (one tile if it covers all)."""
    if length <= size:
        return [0]
    count = math.ceil((length - size) / (size - overlap)) + 1
    return [round(i * (length - size) / (count - 1)) for i in range(count)]


def default_overlap(size: int) -> int:
    """Pixels neighbouring tiles share unless told: an eighth of the tile (40 px at 320), enough
    for the ``sin^2`` blend to hide the model's border effects (a 4000 x 4000 scene: 225 tiles of 320,
    against 169 without overlap and 289 at a quarter)."""
    return size // 8


def tile_count(height: int, width: int, size: int | tuple[int, int], overlap: int | tuple[int, int]) -> int:
    """How many tiles :func:`tile_grid` cuts ``height x width`` into."""
    (size_h, size_w), (over_h, over_w) = _pair(size), _pair(overlap)
    return len(tile_starts(height, size_h, over_h)) * len(tile_starts(width, size_w, over_w))


def _axis(length: int, size: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Per tile along one axis: ``(start, extent, shared before, shared after)``."""
    starts, extent = tile_starts(length, size, overlap), min(size, length)
    before = [0] + [a + extent - b for a, b in itertools.pairwise(starts)]
    return [(start, extent, before[i], before[i + 1] if i + 1 < len(starts) else 0) for i, start in enumerate(starts)]


def tile_grid(height: int, width: int, size: int | tuple[int, int], overlap: int | tuple[int, int]) -> list[list[Tile]]:
    """Rows of :class:`Tile` covering ``height x width``; tiles are ``size`` square (or ``(rows,
    columns)``, overlapping by ``overlap`` or ``(rows, columns)``), clipped to the scene where it
    is smaller than a tile."""
    (size_h, size_w), (over_h, over_w) = _pair(size), _pair(overlap)
    for n, o in ((size_h, over_h), (size_w, over_w)):
        if n < 1:
            raise ValueError(f"the tile size must be positive, got {size}")
        if not 0 <= o < n:
            raise ValueError(f"the tile overlap must be in [0, {n}) pixels for {n}-pixel tiles, got {o}")
    return [
        [Tile(r, c, h, w, (top, bottom, left, right)) for c, w, left, right in _axis(width, size_w, over_w)]
        for r, h, top, bottom in _axis(height, size_h, over_h)
    ]


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, (tuple, list)) else (int(value), int(value))


def scaled_tile(predictor: Predictor, height: int, width: int, gsd: Any) -> tuple[tuple[int, int], str]:
    """``((rows, columns), note)``: the source pixels one model tile covers when a scene of
    ``height x width`` at ``gsd`` metres per pixel is resampled to the model's training GSD
    (:meth:`~sbanet.inference.predictor.Predictor.scale_plan` checks both), and what was done, for
    people."""
    if predictor.training_gsd is None:
        raise ValueError("this model records no training GSD, so it cannot resample to it: leave the GSD out")
    plan = plan_scale((height, width), gsd, predictor.training_gsd)
    tile = plan.tile(predictor.config.image_size)
    return tile, f"{plan.describe()}; tiles of {tile[0]}x{tile[1]} source pixels"


def blend_ramp(length: int, rise: int, fall: int) -> np.ndarray:
    """``float32 [length]``: 1, times ``sin^2`` rising over the first ``rise`` pixels and the
    mirrored fall over the last ``fall``. Facing ramps of equal length sum to exactly 1 and are
    never 0, so the blend is continuous and a pixel seen by one tile keeps its probability."""
    weight = np.ones(length, dtype=np.float32)
    for n, side in ((rise, slice(0, rise)), (fall, slice(length - fall, length))):
        if n > 0:
            ramp = np.sin(0.5 * np.pi * (np.arange(n) + 0.5) / n) ** 2
            weight[side] *= (ramp if side.start == 0 else ramp[::-1]).astype(np.float32)
    return weight


def tile_weight(tile: Tile) -> np.ndarray:
    """``float32 [tile.height, tile.width]``: ramps over the pixels shared with each neighbour."""
    top, bottom, left, right = tile.overlaps
    return blend_ramp(tile.height, top, bottom)[:, None] * blend_ramp(tile.width, left, right)[None, :]


class _RowBlender:
    """Weighted sums for the rows of the scene that tiles still touch (``[K, n, W]``)."""

    def __init__(self, count: int, width: int) -> None:
        self.origin = 0
        self.probability = np.zeros((count, 0, width), dtype=np.float32)
        self.weight = np.zeros((0, width), dtype=np.float32)
        self.valid = np.zeros((0, width), dtype=bool)

    def extend_to(self, bottom: int) -> None:
        extra = bottom - self.origin - self.weight.shape[0]
        if extra > 0:
            k, _, w = self.probability.shape
            self.probability = np.concatenate([self.probability, np.zeros((k, extra, w), np.float32)], axis=1)
            self.weight = np.concatenate([self.weight, np.zeros((extra, w), np.float32)])
            self.valid = np.concatenate([self.valid, np.zeros((extra, w), bool)])

    def add(self, tile: Tile, probability: np.ndarray, valid: np.ndarray, weight: np.ndarray) -> None:
        rows = slice(tile.row - self.origin, tile.row - self.origin + tile.height)
        cols = slice(tile.col, tile.col + tile.width)
        self.probability[:, rows, cols] += probability * weight
        self.weight[rows, cols] += weight
        self.valid[rows, cols] = valid

    def flush(self, until: int, writer: SceneWriter) -> None:
        """Hand rows ``[origin, until)`` (final: no later tile touches them) to the writer."""
        n = until - self.origin
        if n <= 0:
            return
        probability = self.probability[:, :n] / self.weight[:n]
        valid = self.valid[:n]
        probability[:, ~valid] = 0.0
        writer.write(self.origin, probability, valid)
        self.probability, self.weight, self.valid = self.probability[:, n:], self.weight[n:], self.valid[n:]
        self.origin = until


def _predict_tiles(
    predictor: Predictor,
    source: RasterSource,
    tiles: Sequence[Tile],
    text: torch.Tensor,
    text_mask: torch.Tensor,
    scaled: tuple[int, int] | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per tile: probability ``float32 [K, h, w]`` for the K encoded expressions, and ``valid``.

    ``scaled``: the tile's full extent in source pixels at the training GSD; a tile clipped to a
    smaller scene is then edge-padded to it, so it is not stretched to the input size."""
    model, size, count = predictor.model, predictor.config.image_size, text.shape[0]
    reads = [source.read(tile.window) for tile in tiles]
    work = [i for i, (_, valid) in enumerate(reads) if valid.any()]  # all-nodata tiles: 0
    results = [(np.zeros((count, *valid.shape), np.float32), valid) for _, valid in reads]
    if not work:
        return results
    extents = {i: _extent(reads[i][1].shape, scaled) for i in work}
    images = torch.cat([predictor.preprocess(_pad(reads[i][0], extents[i]))[0] for i in work])  # [B, 3, S, S]
    batch = len(work)
    with predictor.autocast():  # the predictor's precision, as for a single image
        prefix = model.encode_image_prefix(images).repeat_interleave(count, dim=0)  # [B * K, ...]
        logits, _ = model.forward_from_prefix(
            prefix, text.repeat(batch, 1, 1), text_mask.repeat(batch, 1), (size, size)
        )
    probability = model.probability(logits.float()).view(batch, count, size, size)
    for j, i in enumerate(work):
        p = probability[j]
        if p.shape[-2:] != extents[i]:  # back to the tile's source pixels (clipped or scaled)
            p = F.interpolate(p[None], size=extents[i], mode="bilinear", align_corners=False)[0]
        p = p[:, : reads[i][1].shape[0], : reads[i][1].shape[1]]  # a padded tile's padding off
        results[i] = (p.clamp_(0, 1).cpu().numpy().astype(np.float32), reads[i][1])
    return results


def _extent(shape: tuple[int, int], scaled: tuple[int, int] | None) -> tuple[int, int]:
    """The source pixels a read of ``shape`` stands for: itself, or at least the scaled tile."""
    return tuple(shape) if scaled is None else (max(shape[0], scaled[0]), max(shape[1], scaled[1]))  # type: ignore[return-value]


def _pad(rgb: np.ndarray, extent: tuple[int, int]) -> np.ndarray:
    """``rgb [h, w, 3]`` edge-padded on the bottom and right to ``extent``."""
    pad_h, pad_w = extent[0] - rgb.shape[0], extent[1] - rgb.shape[1]
    return rgb if pad_h <= 0 and pad_w <= 0 else np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")


@torch.inference_mode()
def predict_scene(
    predictor: Predictor,
    image: Any,
    expressions: Sequence[str],
    *,
    overlap: int | None = None,
    batch_size: int = 4,
    threshold: float = 0.5,
    bands: Sequence[int] | None = None,
    writer: SceneWriter | None = None,
    progress: bool = False,
    callback: ProgressCallback | None = None,
    tile: tuple[int, int] | None = None,
) -> SceneWriter:
    """Segment every expression over a whole scene by overlapping tiles.

    image: a path, a numpy array ``[H, W(, C)]`` or an open :class:`~sbanet.geo.raster.RasterSource`.
    overlap: pixels shared by neighbouring tiles (default :func:`default_overlap`). The result
    goes to ``writer`` (default an in-memory :class:`~sbanet.geo.writers.ArrayWriter` with ``mask``
    ``bool [K, H, W]`` and ``probability`` ``uint8 [K, H, W]`` (x255)), which is returned.
    ``callback(done, total)`` is called after each batch of tiles; ``progress`` shows a bar.
    ``tile``: (rows, columns) of source pixels per model tile (:func:`scaled_tile`: the scene at
    the training GSD), overlapping by an eighth unless told; None: tiles of the input size.
    """
    if isinstance(expressions, str):
        raise ValueError("expressions must be a list of strings")
    texts = [predictor.check_expression(e) for e in expressions]
    if not texts:
        raise ValueError("no expressions given")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    size = predictor.config.image_size if tile is None else (int(tile[0]), int(tile[1]))
    overlap = tuple(default_overlap(n) for n in _pair(size)) if overlap is None else overlap
    source = image if isinstance(image, RasterSource) else open_raster(image, bands)
    try:
        height, width = source.height, source.width
        rows = tile_grid(height, width, size, overlap)
        writer = writer if writer is not None else ArrayWriter(len(texts), height, width, threshold)
        ids, text_mask = predictor.tokenize(texts)
        text = predictor.model.encode_text(ids, text_mask)  # [K, L, D], once per expression
        total, done = sum(len(row) for row in rows), 0
        blender = _RowBlender(len(texts), width)
        with tqdm(total=total, disable=not progress, unit="tile", desc="tiles") as bar:
            for r, row in enumerate(rows):
                blender.extend_to(row[0].row + row[0].height)
                for start in range(0, len(row), batch_size):
                    tiles = row[start : start + batch_size]
                    scaled = None if tile is None else size
                    results = _predict_tiles(predictor, source, tiles, text, text_mask, scaled)
                    for cell, (p, valid) in zip(tiles, results):
                        blender.add(cell, p, valid, tile_weight(cell))
                    done += len(tiles)
                    bar.update(len(tiles))
                    if callback is not None:
                        callback(done, total)
                blender.flush(rows[r + 1][0].row if r + 1 < len(rows) else height, writer)
        return writer
    finally:
        if writer is not None:
            writer.close()
        if source is not image:
            source.close()
