"""RefSegRS and the "folder" layout (RefSegRS with any image format), the converter's output.

Under ``root``::

    images/<id>.tif                  (folder: .png / .jpg / .jpeg / .tif / .tiff)
    masks/<id>.tif                   a pixel belongs to the target when its grey value > 50 (3-band
                                     masks are read as weighted grey, like cv2.imread(p, 2))
    output_phrase_<split>.txt        one ``<id> <expression>`` per line
    samples_<split>.jsonl            folder only, optional: {"id", "image", "category", ...} per
                                     sample; ``image`` groups samples of one source image

Lines whose image or mask file is missing are skipped, counted and reported once.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np

from ..image import read_image
from .sample import ReferringSample

log = logging.getLogger(__name__)

MASK_THRESHOLD = 50  # RefSegRS masks are 8-bit with soft edges: target = value > 50
REFSEGRS_SUFFIXES = (".tif",)
FOLDER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


def phrase_file(root: str | Path, split: str) -> Path:
    return Path(root) / f"output_phrase_{split}.txt"


def metadata_file(root: str | Path, split: str) -> Path:
    return Path(root) / f"samples_{split}.jsonl"


def read_phrases(path: str | Path) -> list[tuple[str, str]]:
    """``output_phrase_<split>.txt`` -> ``[(id, expression)]`` (empty lines ignored)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"phrase file not found: {path}")
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        sample_id, _, expression = line.partition(" ")
        expression = " ".join(expression.split())
        if not expression:
            raise ValueError(f"{path.name}:{number}: expected '<id> <expression>', got {line!r}")
        pairs.append((sample_id, expression))
    return pairs


# cv2's RGB -> grey weights 0.299 / 0.587 / 0.114 in its 14-bit fixed point (integer images)
GREY_WEIGHTS = (4899, 9617, 1868)
GREY_SHIFT = 14


def reference_grey(mask: np.ndarray) -> np.ndarray:
    """``[H, W]`` or ``[H, W, C]`` -> ``[H, W]`` as ``cv2.imread(path, 2)`` reads a mask: one band
    as it is, 3+ bands (R, G, B first; alpha ignored) as ``0.299 R + 0.587 G + 0.114 B``, rounded
    in cv2's fixed point for integer images."""
    if mask.ndim == 2 or mask.shape[2] < 3:
        return mask if mask.ndim == 2 else mask[..., 0]
    r, g, b = (mask[..., i] for i in range(3))
    if np.issubdtype(mask.dtype, np.integer):
        wr, wg, wb = GREY_WEIGHTS
        grey = r.astype(np.int64) * wr + g.astype(np.int64) * wg + b.astype(np.int64) * wb + (1 << (GREY_SHIFT - 1))
        return (grey >> GREY_SHIFT).astype(mask.dtype)
    return 0.299 * r + 0.587 * g + 0.114 * b


def read_binary_mask(path: str | Path, threshold: int = MASK_THRESHOLD) -> np.ndarray:
    """A mask image -> ``bool [H, W]``: its grey value (:func:`reference_grey`) > ``threshold``,
    what the RefSegRS reference loader computes (``cv2.imread(p, 2) > 50``)."""
    return reference_grey(np.asarray(read_image(path))) > threshold


def _index_files(directory: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """``{stem: path}`` for the files with one of ``suffixes`` (earlier suffixes win)."""
    found: dict[str, Path] = {}
    if not directory.is_dir():
        return found
    rank = {s: i for i, s in enumerate(suffixes)}
    for name in sorted(os.listdir(directory)):
        stem, suffix = os.path.splitext(name)
        suffix = suffix.lower()
        if suffix in rank and (stem not in found or rank[suffix] < rank[found[stem].suffix.lower()]):
            found[stem] = directory / name
    return found


def read_metadata(path: str | Path) -> dict[str, dict]:
    """``samples_<split>.jsonl`` -> ``{id: record}`` ({} when the file is absent)."""
    path = Path(path)
    if not path.is_file():
        return {}
    records = (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return {str(r["id"]): r for r in records}


def phrase_folder_samples(
    root: str | Path, split: str, suffixes: tuple[str, ...] = FOLDER_SUFFIXES, name: str = "folder"
) -> list[ReferringSample]:
    """Samples of one split of a RefSegRS-style folder (``name`` prefixes the sample ids)."""
    root = Path(root)
    pairs = read_phrases(phrase_file(root, split))
    images = _index_files(root / "images", suffixes)
    masks = _index_files(root / "masks", suffixes)
    metadata = read_metadata(metadata_file(root, split))
    samples, missing, seen = [], [], {}
    for sample_id, expression in pairs:
        if sample_id not in images or sample_id not in masks:
            missing.append(sample_id)
            continue
        meta = metadata.get(sample_id, {})
        seen[sample_id] = seen.get(sample_id, 0) + 1
        unique = sample_id if seen[sample_id] == 1 else f"{sample_id}#{seen[sample_id]}"
        samples.append(
            ReferringSample(
                sample_id=f"{name}/{unique}",
                image_id=f"{name}/{meta.get('image', sample_id)}",
                expression=expression,
                split=split,
                load_image=partial(read_image, images[sample_id]),
                load_mask=partial(read_binary_mask, masks[sample_id]),
                category=meta.get("category"),
                ref_id=sample_id,
                rule=meta.get("rule"),
            )
        )
    if missing:
        log.warning(
            "%s %s: skipped %d of %d lines without image or mask file (%s) in %s; e.g. %s",
            name,
            split,
            len(missing),
            len(pairs),
            "/".join(suffixes),
            root,
            ", ".join(missing[:3]),
        )
    return samples


def refsegrs_samples(root: str | Path, split: str) -> list[ReferringSample]:
    """RefSegRS: ``images/<id>.tif``, ``masks/<id>.tif``, ``output_phrase_<split>.txt``."""
    return phrase_folder_samples(root, split, REFSEGRS_SUFFIXES, "refsegrs")


def folder_samples(root: str | Path, split: str, rules: Sequence[str] | None = None) -> list[ReferringSample]:
    """The RefSegRS layout with any image format (what :mod:`sbanet.data.semantic` writes).

    ``rules``: keep only the samples whose metadata names one of these converter rules (e.g.
    ``["class"]``: the class-level ones), to weight them up by mixing them in a second time."""
    samples = phrase_folder_samples(root, split, FOLDER_SUFFIXES, "folder")
    if rules is None:
        return samples
    if isinstance(rules, str) or not rules:
        raise ValueError(f"rules must be a non-empty list of rule names, got {rules!r}")
    metadata = read_metadata(metadata_file(root, split))
    if not metadata:
        raise ValueError(f"{root}: rules={list(rules)} needs the converter's {metadata_file(root, split).name}")
    wanted = set(rules)
    return [s for s in samples if metadata.get(s.ref_id, {}).get("rule") in wanted]
