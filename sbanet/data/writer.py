"""Writes referring samples in the RefSegRS layout (read back by ``load_samples("folder", ...)``).

Every sample id gets ``images/<id>.<ext>`` and ``masks/<id>.png`` (0 / 255) as RefSegRS does;
the samples of one source image share a single image file through hard links (a copy where the
file system has none), so a dozen expressions per image cost one image on disk.
``samples_<split>.jsonl`` adds what RefSegRS lacks: the category, the rule that made the
expression and the source image (which groups samples for caching and reports).
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .refsegrs import metadata_file, phrase_file

IMAGE_FORMATS = {"png": ".png", "jpg": ".jpg", "tif": ".tif"}


class FolderWriter:
    """``add(...)`` samples, then ``close()`` (or use it as a context manager)."""

    def __init__(self, root: str | Path, image_format: str = "png", overwrite: bool = False) -> None:
        if image_format not in IMAGE_FORMATS:
            raise ValueError(f"image_format must be one of {sorted(IMAGE_FORMATS)}, got {image_format!r}")
        self.root = Path(root)
        if self.root.exists() and any(self.root.iterdir()) and not overwrite:
            raise ValueError(f"output folder {self.root} is not empty (pass overwrite to replace its samples)")
        if overwrite:
            for name in ("images", "masks"):
                shutil.rmtree(self.root / name, ignore_errors=True)
            for stale in [*self.root.glob("output_phrase_*.txt"), *self.root.glob("samples_*.jsonl")]:
                stale.unlink()
        (self.root / "images").mkdir(parents=True, exist_ok=True)
        (self.root / "masks").mkdir(parents=True, exist_ok=True)
        self.suffix = IMAGE_FORMATS[image_format]
        self._image_files: dict[str, Path] = {}  # source image key -> its first written file
        self._files: dict[str, Any] = {}
        self.counts: Counter[str] = Counter()

    def _open(self, split: str) -> tuple[Any, Any]:
        if split not in self._files:
            self._files[split] = (
                phrase_file(self.root, split).open("w", encoding="utf-8"),
                metadata_file(self.root, split).open("w", encoding="utf-8"),
            )
        return self._files[split]

    def _image(self, sample_id: str, image_key: str, image: np.ndarray) -> None:
        target = self.root / "images" / f"{sample_id}{self.suffix}"
        first = self._image_files.get(image_key)
        if first is None:
            Image.fromarray(image).save(target, **({"quality": 95} if self.suffix == ".jpg" else {}))
            self._image_files[image_key] = target
            return
        try:
            os.link(first, target)
        except OSError:
            shutil.copyfile(first, target)

    def add(
        self,
        split: str,
        sample_id: str,
        image_key: str,
        image: np.ndarray,
        mask: np.ndarray,
        expression: str,
        **metadata: Any,
    ) -> None:
        """One sample: ``image`` ``uint8 [H, W, 3]`` (written once per ``image_key``), ``mask``
        ``bool [H, W]``; ``metadata`` (e.g. ``category``, ``rule``) goes to the JSON lines."""
        expression = " ".join(expression.split())
        if not expression or any(c.isspace() for c in sample_id) or not sample_id:
            raise ValueError(f"need a non-empty expression and a sample id without spaces, got {sample_id!r}")
        if mask.shape != image.shape[:2]:
            raise ValueError(f"{sample_id}: mask {mask.shape} and image {image.shape[:2]} differ in size")
        self._image(sample_id, image_key, image)
        Image.fromarray(mask.astype(np.uint8) * 255).save(self.root / "masks" / f"{sample_id}.png")
        phrases, meta = self._open(split)
        phrases.write(f"{sample_id} {expression}\n")
        meta.write(json.dumps({"id": sample_id, "image": image_key, "expression": expression, **metadata}) + "\n")
        self.counts[split] += 1

    def close(self) -> None:
        for phrases, meta in self._files.values():
            phrases.close()
            meta.close()
        self._files.clear()

    def __enter__(self) -> FolderWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
