"""Example scenes the app can show with no data folder: generated synthetic scenes
(:mod:`sbanet.data.synthetic`, deterministic by seed, nothing shipped) and expressions that the
shipped default model segments well.

The scenes and expressions of :data:`EXAMPLES` were picked with :func:`score_scene` (the default
model's IoU against each scene's ground truth); ``tests/test_default_model.py`` checks that the
shipped model still gets every one of them right.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

EXAMPLE_SIZE = 448
# (scene seed, expressions): each expression is one of the scene's own (sbanet.data.expressions).
# Picked with score_scene over seeds 0-39 at 448 px (IoU in brackets): the default model, trained
# on Dubai only, finds the synthetic scenes' vegetation; their water, buildings and roads look
# unlike Dubai's to it (best IoU over the 40 scenes: water 0.34, roads 0.49, buildings 0.17), so the
# examples show what it does get right. Real uploads are its use: docs/results.md.
EXAMPLES: tuple[tuple[int, tuple[str, ...]], ...] = (
    (21, ("all the vegetation",)),  # 0.677
    (36, ("all the vegetation",)),  # 0.640
    (6, ("all the vegetation",)),  # 0.615
)


def example_scenes(
    size: int = EXAMPLE_SIZE, examples: Sequence[tuple[int, Sequence[str]]] = EXAMPLES
) -> list[tuple[int, np.ndarray, list[str]]]:
    """``[(seed, image uint8 [S, S, 3], [expression, ...]), ...]`` of ``examples`` (default: the
    app's), rendered on each call (~50 ms per scene at 448 px)."""
    from .data.synthetic import render_scene

    if size < 64:
        raise ValueError(f"example scenes need size >= 64, got {size}")
    return [(seed, render_scene(seed, size), list(texts)) for seed, texts in examples]


def score_scene(
    predictor: Any, seed: int, size: int = EXAMPLE_SIZE, expressions: list[str] | None = None
) -> dict[str, float]:
    """``{expression: IoU}`` of ``predictor``'s masks against synthetic scene ``seed``'s ground
    truth, for ``expressions`` (default: every expression the scene has)."""
    from .data.synthetic import make_scene
    from .vector import mask_iou

    image, referrings = make_scene(seed, size)
    truth = {r.expression: r.mask for r in referrings}
    texts = list(truth) if expressions is None else list(expressions)
    unknown = [t for t in texts if t not in truth]
    if unknown:
        raise ValueError(f"scene {seed} has no expressions {unknown}; it has {sorted(truth)}")
    if not texts:
        return {}
    predictions = predictor.predict_batch(image, texts, return_attention=False)
    return {p.expression: mask_iou(p.mask, truth[p.expression]) for p in predictions}
