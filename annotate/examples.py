"""The Segment tab's examples: generated synthetic scenes, so the app has something to show on a
fresh machine with no data folder (:mod:`sbanet.data.synthetic`; no image is shipped).

Which scenes and expressions: :data:`sbanet.examples.EXAMPLES`, picked for what the default
model segments well (``tests/test_default_model.py`` checks it still does).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sbanet.examples import EXAMPLE_SIZE, EXAMPLES


def example_inputs(
    folder: str | Path,
    examples: Sequence[tuple[int, Sequence[str]]] = EXAMPLES,
    size: int = EXAMPLE_SIZE,
) -> list[list[str]]:
    """Render each ``(scene seed, expressions)`` into ``folder`` as a PNG (once) and return
    ``[[png path, expressions one per line], ...]``."""
    from PIL import Image

    from sbanet.examples import example_scenes

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed, image, texts in example_scenes(size, examples):
        path = folder / f"synthetic-scene-{seed}.png"
        if not path.is_file():
            Image.fromarray(image).save(path)
        rows.append([str(path), "\n".join(texts)])
    return rows
