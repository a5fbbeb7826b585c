"""The Segment tab's examples: generated synthetic scenes, so the app has something to show on a
fresh machine with no data folder (:mod:`sbanet.data.synthetic`; no image is shipped).

Each example is a scene PNG and its class-level expressions ("all buildings", "every road",
"the water"), the kind the default model is trained on.
"""

from __future__ import annotations

from pathlib import Path

EXAMPLE_SEEDS = (1, 2, 7)
EXAMPLE_SIZE = 448
PER_SCENE = 3


def example_inputs(
    folder: str | Path, seeds: tuple[int, ...] = EXAMPLE_SEEDS, size: int = EXAMPLE_SIZE, per_scene: int = PER_SCENE
) -> list[list[str]]:
    """Render the scenes into ``folder`` (once) and return ``[[png path, expressions], ...]``."""
    from PIL import Image

    from sbanet.data.synthetic import make_scene

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in seeds:
        image, referrings = make_scene(seed, size)
        path = folder / f"synthetic-scene-{seed}.png"
        if not path.is_file():
            Image.fromarray(image).save(path)
        class_level = [r.expression for r in referrings if r.rule == "class"]
        others = [r.expression for r in referrings if r.rule != "class"]
        rows.append([str(path), "\n".join((class_level + others)[:per_scene])])
    return rows
