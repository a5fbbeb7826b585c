"""The Segment tab's examples: small real aerial images shipped with the package
(:data:`sbanet.data.example_scenes.AERIAL_EXAMPLES`, dubai-aerial tile 6, public domain), shown as
thumbnails with their expressions; a click loads one and runs it.

``tests/test_app_examples.py`` checks the shipped model still segments each of them well.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sbanet.data.example_scenes import AERIAL_EXAMPLES, AerialExample

THUMBNAIL_SIDE = 160


@dataclass(frozen=True)
class AppExample:
    """One example as the app serves it: the image, its thumbnail and the expressions typed."""

    image: str
    thumbnail: str
    expressions: str  # one per line, as in the Expressions box

    @property
    def caption(self) -> str:
        return " · ".join(self.expressions.splitlines())


def example_inputs(folder: str | Path, examples: Sequence[AerialExample] = AERIAL_EXAMPLES) -> list[AppExample]:
    """Copy each example image into ``folder`` (a folder Gradio may serve from, e.g. a temporary
    one: the installed package's own folder may not be) with a JPEG thumbnail beside it."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for example in examples:
        if not example.path.is_file():
            raise ValueError(f"example image missing from the package: {example.path}")
        image = folder / example.filename
        if not image.is_file():
            shutil.copyfile(example.path, image)
        thumbnail = folder / f"thumb-{example.filename}"
        if not thumbnail.is_file():
            with Image.open(image) as picture:
                picture = picture.convert("RGB")
                picture.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS)
                picture.save(thumbnail, quality=80)
        rows.append(AppExample(str(image), str(thumbnail), "\n".join(example.expressions)))
    return rows
