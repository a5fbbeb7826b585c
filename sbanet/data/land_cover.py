"""Land-cover classes and their colour-coded label masks: the palette entries
(:class:`LandCoverClass`, read from JSON by :func:`load_palette`), decoding a colour mask to class
indices (:func:`decode_label_mask`), finding the ``<name>.jpg`` + ``<name>_mask.png`` pairs of a
folder (:func:`find_pairs`) and scoring whole images class by class (:func:`class_cases`).
The conversion to referring samples (:mod:`sbanet.data.semantic`) and the wordings
(:mod:`sbanet.data.wording`) build on these.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sbanet.image import read_image, to_rgb8

from .expressions import Noun

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")


@dataclass(frozen=True)
class LandCoverClass:
    """A palette entry. ``noun=None``: never referred to (e.g. unlabeled); ``instances``: its
    connected components become instance-level referents, named ``irregular`` when their shape
    is far from a rectangle (annotators often draw one polygon around a block of buildings: it is
    then "the largest building complex", not "the largest building"); ``rules``: the
    instance-level rules that make sense for it (None: all); ``landmark``: "next to" may name it."""

    name: str
    rgb: tuple[int, int, int]
    noun: Noun | None = None
    instances: bool = True
    irregular: Noun | None = None
    rules: tuple[str, ...] | None = None
    landmark: bool = True
    # class-level phrases as people type them (ConversionConfig.paraphrases, absent-class negatives)
    paraphrases: tuple[str, ...] = ()
    # classes of one family ("water": river, lake, pond) are never asked for as absent while another
    # of the family is present: "the lake" on a river crop is a near miss, not "nothing"
    family: str | None = None


def decode_label_mask(
    rgb: np.ndarray, classes: Sequence[LandCoverClass], tolerance: float = 40.0
) -> tuple[np.ndarray, dict[tuple[int, int, int], tuple[int, int]]]:
    """Colour mask ``uint8 [H, W, 3]`` -> class index ``int16 [H, W]`` (-1: unlabeled).

    Exact palette colours map to their class; other colours map to the nearest palette colour
    within ``tolerance`` (RGB distance), else to -1. Also returns the off-palette colours,
    ``{(r, g, b): (pixel count, class index or -1)}``.
    """
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(f"a colour mask must be HxWx3, got shape {rgb.shape}")
    palette = np.array([c.rgb for c in classes], np.float32)
    codes = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    colours, inverse, counts = np.unique(codes.ravel(), return_inverse=True, return_counts=True)
    values = np.stack([colours >> 16, (colours >> 8) & 255, colours & 255], 1).astype(np.float32)
    distance = np.linalg.norm(values[:, None] - palette[None], axis=2)
    nearest = distance.argmin(1)
    lookup = np.where(distance[np.arange(len(colours)), nearest] <= tolerance, nearest, -1).astype(np.int16)
    off = {
        tuple(int(v) for v in values[i]): (int(counts[i]), int(lookup[i])) for i in np.flatnonzero(distance.min(1) > 0)
    }
    return lookup[inverse].reshape(codes.shape), off


def find_pairs(root: str | Path) -> list[tuple[str, Path, Path]]:
    """``[(group, image, mask)]`` for every ``*_mask.png`` under ``root``, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"input folder not found: {root}")
    pairs = []
    masks = [Path(d) / f for d, _, files in os.walk(root, followlinks=True) for f in files if f.endswith("_mask.png")]
    for mask in sorted(masks):
        stem = mask.name[: -len("_mask.png")]
        images = [mask.with_name(stem + s) for s in IMAGE_SUFFIXES if mask.with_name(stem + s).is_file()]
        if images:
            pairs.append((mask.parent.relative_to(root).as_posix() or ".", images[0], mask))
    if not pairs:
        raise ValueError(f"no <name>.jpg/.png + <name>_mask.png pairs under {root}")
    return pairs


def class_cases(
    root: str | Path, expressions: Mapping[str, str], classes: Sequence[LandCoverClass], min_fraction: float = 0.05
) -> Iterator[tuple[Path, np.ndarray, dict[str, np.ndarray]]]:
    """Whole images scored as a user uploads them: for every pair under ``root``,
    ``(image path, image uint8 [H, W, 3], {expression: truth bool [H, W]})``.

    ``expressions`` maps a class-level expression ("the water") to the class name it refers to
    ("water"); an expression is kept for an image only where its class covers at least
    ``min_fraction`` of it (a class of a few pixels scores noise). Images left with none are skipped.
    """
    names = [c.name for c in classes]
    unknown = sorted(set(expressions.values()) - set(names))
    if unknown:
        raise ValueError(f"classes {unknown} are not in the palette {names}")
    for _, image_path, mask_path in find_pairs(root):
        labels, _ = decode_label_mask(to_rgb8(read_image(mask_path)), classes)
        truth = {e: labels == names.index(c) for e, c in expressions.items()}
        present = {e: m for e, m in truth.items() if m.mean() >= min_fraction}
        if present:
            yield image_path, to_rgb8(read_image(image_path)), present


def load_palette(path: str | Path) -> tuple[LandCoverClass, ...]:
    """A palette JSON, one entry per class: ``{"name", "rgb": [r, g, b], "singular", "plural",
    "mass", "instances", "irregular": {"singular", "plural"}, "rules": [...], "landmark",
    "paraphrases": [...]}``; entries
    without ``singular`` are never referred to."""

    def noun(entry: dict[str, Any] | None) -> Noun | None:
        if not entry or not entry.get("singular"):
            return None
        return Noun(entry["singular"], entry.get("plural", entry["singular"] + "s"), entry.get("mass"))

    classes = []
    for e in json.loads(Path(path).read_text()):
        if not isinstance(e, dict) or "name" not in e or len(e.get("rgb", ())) != 3:
            raise ValueError(f"palette entry {e} needs a name and an rgb triple")
        rules = tuple(e["rules"]) if e.get("rules") is not None else None
        rgb = tuple(int(v) for v in e["rgb"])
        instances, landmark = bool(e.get("instances", True)), bool(e.get("landmark", True))
        paraphrases = tuple(" ".join(str(p).split()) for p in e.get("paraphrases", ()))
        if any(not p for p in paraphrases):
            raise ValueError(f"palette entry {e['name']!r} has an empty paraphrase")
        classes.append(
            LandCoverClass(e["name"], rgb, noun(e), instances, noun(e.get("irregular")), rules, landmark, paraphrases)
        )
    return tuple(classes)
