"""RRSIS-D in its published layout (the RMSIN release), read without executing the download.

Under ``root``::

    rrsisd/refs(unc).p          pickle: a list of refs {ref_id, ann_id, image_id, category_id,
                                split, file_name, sentences: [{raw, sent, tokens, sent_id}]}
    rrsisd/instances.json       COCO-style images / annotations / categories; annotations name
                                their category ``categories_id``; ``segmentation`` is a list
                                holding one COCO RLE of size [800, 800]; ``area`` is unreliable
    images/rrsisd/JPEGImages/   the images, e.g. ``02934.jpg``

Every sentence of every ref is one sample (the reference test protocol). The public download
misses a few images and annotations: those refs are skipped, counted and reported once.
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import pickle
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ..image import read_image
from .sample import ReferringSample

log = logging.getLogger(__name__)

REFS_FILE = Path("rrsisd") / "refs(unc).p"
INSTANCES_FILE = Path("rrsisd") / "instances.json"
IMAGE_DIR = Path("images") / "rrsisd" / "JPEGImages"
SPLITS = ("train", "val", "test")
REF_KEYS = ("ref_id", "ann_id", "image_id", "split", "sentences")


class RestrictedUnpickler(pickle.Unpickler):
    """Admits builtin containers and scalars only: a pickle that names any other callable
    (``os.system``, ``subprocess.Popen``, ``builtins.eval`` ...) is refused before it runs."""

    SAFE = frozenset({"dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray", "int", "float", "bool"})

    def find_class(self, module: str, name: str) -> Any:
        if module in ("builtins", "__builtin__") and name in self.SAFE:
            return getattr(builtins, name)
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: only builtin containers and scalars are allowed"
        )


def load_refs(path: str | Path) -> list[dict[str, Any]]:
    """Read ``refs(unc).p`` safely; ``ValueError`` when it is unsafe, corrupt or not refs."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"RRSIS-D refs file not found: {path}")
    with path.open("rb") as f:
        try:
            refs = RestrictedUnpickler(f, encoding="utf-8").load()
        except (pickle.UnpicklingError, EOFError, UnicodeDecodeError, ValueError) as exc:
            raise ValueError(f"cannot read {path.name} safely: {exc}") from exc
    if not isinstance(refs, list) or not all(isinstance(r, dict) for r in refs):
        raise ValueError(f"{path.name} must hold a list of ref dicts, got {type(refs).__name__}")
    for ref in refs:
        missing = [k for k in REF_KEYS if k not in ref]
        if missing:
            raise ValueError(f"{path.name}: ref {ref.get('ref_id', '?')} lacks the keys {missing}")
    return refs


def decode_segmentation(segmentation: Any, height: int | None = None, width: int | None = None) -> np.ndarray:
    """A COCO ``segmentation`` -> ``bool [H, W]``: the pixels exactly one part covers.

    This is the reference's rule (``refer.py`` sums the decoded parts, the dataset keeps
    ``sum == 1``): where two parts overlap, the pixel is background. One part is the part itself.

    Accepts a list of RLEs (RRSIS-D: one RLE whose ``counts`` is a ``str`` or ``bytes``), an
    uncompressed RLE (``counts`` a list of ints), or polygons (then ``height``/``width`` are needed).
    """
    from pycocotools import mask as mask_utils

    parts = segmentation if isinstance(segmentation, list) else [segmentation]
    if parts and all(isinstance(p, (int, float)) for p in parts):
        parts = [parts]  # a single flat polygon
    rles, polygons = [], []
    for part in parts:
        if isinstance(part, dict):
            h, w = (int(v) for v in part["size"])
            counts = part["counts"]
            if isinstance(counts, list):
                rles.append(mask_utils.frPyObjects(part, h, w))
            else:
                rles.append({"size": [h, w], "counts": counts.encode() if isinstance(counts, str) else bytes(counts)})
        elif isinstance(part, list):
            polygons.append([float(v) for v in part])
        else:
            raise ValueError(f"unsupported segmentation part of type {type(part).__name__}")
    if polygons:
        if height is None or width is None:
            raise ValueError("polygon segmentations need the image height and width")
        rles.extend(mask_utils.frPyObjects(polygons, int(height), int(width)))
    if not rles:
        raise ValueError("the segmentation is empty")
    if len({tuple(r["size"]) for r in rles}) > 1:
        raise ValueError(f"segmentation parts have different sizes: {[r['size'] for r in rles]}")
    if len(rles) == 1:
        return np.ascontiguousarray(mask_utils.decode(rles[0]).astype(bool))
    coverage = mask_utils.decode(rles).sum(axis=2, dtype=np.int32)  # [H, W, parts] -> parts per pixel
    return np.ascontiguousarray(coverage == 1)


def rrsisd_samples(root: str | Path, split: str) -> list[ReferringSample]:
    """All samples of one split (``train`` / ``val`` / ``test``), one per sentence of every ref."""
    if split not in SPLITS:
        raise ValueError(f"RRSIS-D split must be one of {SPLITS}, got {split!r}")
    root = Path(root)
    refs = load_refs(root / REFS_FILE)
    instances_path = root / INSTANCES_FILE
    if not instances_path.is_file():
        raise ValueError(f"RRSIS-D annotations not found: {instances_path}")
    instances = json.loads(instances_path.read_text())
    annotations = {a["id"]: a for a in instances.get("annotations", [])}
    images = {i["id"]: i for i in instances.get("images", [])}
    categories = {c["id"]: c["name"] for c in instances.get("categories", [])}
    image_dir = root / IMAGE_DIR
    present = set(os.listdir(image_dir)) if image_dir.is_dir() else set()

    samples: list[ReferringSample] = []
    skipped = {"annotation": 0, "image": 0}
    skipped_sentences, examples = 0, []
    for ref in refs:
        if ref["split"] != split:
            continue
        annotation = annotations.get(ref["ann_id"])
        image = images.get(ref["image_id"], {})
        file_name = ref.get("file_name") or image.get("file_name")
        reason = "annotation" if annotation is None else "image" if file_name not in present else None
        if reason:
            skipped[reason] += 1
            skipped_sentences += len(ref["sentences"])
            if len(examples) < 3:
                examples.append(f"ref {ref['ref_id']} ({reason} {ref['ann_id'] if annotation is None else file_name})")
            continue
        category_id = ref.get("category_id", annotation.get("categories_id", annotation.get("category_id")))
        load_image = partial(read_image, image_dir / file_name)
        load_mask = partial(decode_segmentation, annotation["segmentation"], image.get("height"), image.get("width"))
        for k, sentence in enumerate(ref["sentences"]):
            expression = " ".join(str(sentence.get("raw") or sentence.get("sent") or "").split())
            samples.append(
                ReferringSample(
                    sample_id=f"rrsisd/ref-{ref['ref_id']}/sent-{sentence.get('sent_id', k)}",
                    image_id=f"rrsisd/{ref['image_id']}",
                    expression=expression,
                    split=split,
                    load_image=load_image,
                    load_mask=load_mask,
                    category=categories.get(category_id),
                    ref_id=str(ref["ref_id"]),
                )
            )
    if skipped_sentences:
        log.warning(
            "RRSIS-D %s: skipped %d refs (%d sentences): %d without annotation, %d without image file in %s; e.g. %s",
            split,
            sum(skipped.values()),
            skipped_sentences,
            skipped["annotation"],
            skipped["image"],
            image_dir,
            ", ".join(examples),
        )
    return samples
