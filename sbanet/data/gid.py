"""GID-MTL (Gaofen-2 land cover, China) -> referring samples, by the land-cover converter.

``../shared/data/gid-mtl`` (its README) holds 224 x 224 crops of the Gaofen Image Dataset with
labels as PNGs of class ids: ``gid5/<scene>/<n>.jpg`` + ``<n>_label.png`` (5 classes) and
``gid15/...`` (15 classes). Each set keeps its own label set: a gid5 crop is asked about the gid5
classes, a gid15 crop about the gid15 ones, so "absent" is always true of the crop's own labels.

* :data:`GID5_CLASSES`, :data:`GID15_CLASSES`: the classes (index = label id after
  :data:`GID15_MERGE`), each with the wordings people ask for it in (:data:`GID_PARAPHRASES`,
  the canonical one first) and a ``family``: "the lake" is never asked as absent on a crop with a
  river or a pond, "the farmland" never on one with paddy fields.
* GID15's urban and rural residential become one class ("the houses"), as do its irrigated and
  dry cropland ("the farmland") and its natural and artificial grassland ("the grassland"): people
  do not ask for them apart, and either one alone would be a wrong answer to the other's question.
* Labels are coarse polygons (a built-up area covers its streets): class-level referents only.
* Split (:func:`gid_split`): every ``val_every``-th image (10th, 20th, ... by number) of each scene
  folder is val, the rest train.

Run::

    python -m sbanet.data.gid --input ../shared/data/gid-mtl --output runs/data/gid-referring
    # -> runs/data/gid-referring/gid5, runs/data/gid-referring/gid15 (one converted folder each)
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from sbanet.data.land_cover import LandCoverClass

from ..image import read_image
from .expressions import Noun
from .semantic import ConversionConfig, convert, format_report
from .wording import GID_PARAPHRASES

VAL_EVERY = 10
LABEL_SUFFIX = "_label.png"


def _class(name: str, rgb: tuple[int, int, int], family: str | None = None) -> LandCoverClass:
    """A class-level-only GID class; its noun's mass name is its canonical wording."""
    mass = GID_PARAPHRASES[name][0].removeprefix("the ")
    return LandCoverClass(
        name, rgb, Noun(mass, mass, mass), False, paraphrases=GID_PARAPHRASES[name], family=family, landmark=False
    )


# gid5: 0 built-up, 1 farmland, 2 forest, 3 meadow, 4 water, 5 unlabelled (../shared/data/README.md)
GID5_CLASSES = (
    _class("built-up", (255, 0, 0)),
    _class("farmland", (0, 255, 0)),
    _class("forest", (0, 255, 255)),
    _class("meadow", (255, 255, 0)),
    _class("water", (0, 0, 255)),
    LandCoverClass("unlabelled", (0, 0, 0)),
)
# gid15's 16 ids -> the classes below: residential, cropland and grassland are merged pairs
GID15_MERGE = (0, 1, 1, 2, 3, 4, 4, 5, 6, 7, 8, 8, 9, 10, 11, 12)
GID15_CLASSES = (
    _class("industrial", (200, 0, 0), "built"),
    _class("residential", (250, 0, 150), "built"),
    _class("traffic", (250, 150, 150)),
    _class("paddy", (0, 200, 0), "farmland"),
    _class("cropland", (150, 250, 0), "farmland"),
    _class("garden", (150, 200, 150), "farmland"),
    _class("woodland", (200, 0, 200), "trees"),
    _class("shrub", (150, 0, 250), "trees"),
    _class("grassland", (250, 200, 0), "grass"),
    _class("river", (0, 0, 200), "water"),
    _class("lake", (0, 150, 200), "water"),
    _class("pond", (0, 200, 250), "water"),
    LandCoverClass("unlabelled", (0, 0, 0)),
)
LABEL_SETS = {"gid5": (GID5_CLASSES, None), "gid15": (GID15_CLASSES, GID15_MERGE)}


def read_labels(path: str | Path, merge: Sequence[int] | None = None) -> np.ndarray:
    """A class-id PNG -> class indices ``int16 [H, W]`` (through ``merge``: id -> class index)."""
    ids = np.asarray(read_image(path))
    if ids.ndim == 3:
        ids = ids[..., 0]
    if merge is None:
        return ids.astype(np.int16)
    table = np.asarray(merge, np.int16)
    if ids.max() >= len(table):
        raise ValueError(f"{path}: label id {int(ids.max())} is beyond the {len(table)} ids of its set")
    return table[ids]


def _number(path: Path) -> tuple[int, str]:
    match = re.match(r"(\d+)", path.stem)
    return (int(match.group(1)) if match else -1, path.stem)


def gid_pairs(root: str | Path, label_set: str) -> list[tuple[str, Path, Path]]:
    """``[(group, image, label)]`` of one label set (``gid5`` or ``gid15``), group =
    ``<set>/<scene>``, images sorted by number within each scene folder."""
    folder = Path(root) / label_set
    if not folder.is_dir():
        raise ValueError(f"{folder} not found (../shared/data/README.md: gid-mtl/gid5, gid-mtl/gid15)")
    pairs = []
    for scene in sorted(p for p in folder.iterdir() if p.is_dir()):
        labels = sorted(scene.glob(f"*{LABEL_SUFFIX}"), key=_number)
        for label in labels:
            image = label.with_name(label.name[: -len(LABEL_SUFFIX)] + ".jpg")
            if image.is_file():
                pairs.append((f"{label_set}/{scene.name}", image, label))
    return pairs


def gid_split(pairs: Sequence[tuple[str, Path, Path]], val_every: int = VAL_EVERY) -> dict[Path, str]:
    """``{image: "train" | "val"}``: the ``val_every``-th, ``2 * val_every``-th, ... image of each
    group (in ``pairs``' order) is val (0: none)."""
    if val_every < 0:
        raise ValueError(f"val_every must be >= 0, got {val_every}")
    position: dict[str, int] = {}
    split = {}
    for group, image, _ in pairs:
        position[group] = position.get(group, 0) + 1
        split[image] = "val" if val_every and position[group] % val_every == 0 else "train"
    return split


def convert_gid(
    input_root: str | Path,
    output_root: str | Path,
    config: ConversionConfig | None = None,
    label_sets: Sequence[str] = ("gid5", "gid15"),
    val_every: int = VAL_EVERY,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Convert each of ``label_sets`` of ``input_root`` (whole images by default) into its own
    folder, ``output_root/<set>`` (a converted folder per label set: its absent classes are its
    own); returns the report of each set, ``{set: report}``."""
    config = config or ConversionConfig(crop=0)
    reports = {}
    for name in label_sets:
        if name not in LABEL_SETS:
            raise ValueError(f"unknown GID label set {name!r}; known: {sorted(LABEL_SETS)}")
        classes, merge = LABEL_SETS[name]
        pairs = gid_pairs(input_root, name)
        splits = gid_split(pairs, val_every)
        reports[name] = convert(
            input_root,
            Path(output_root) / name,
            config,
            classes,
            overwrite=overwrite,
            pairs=pairs,
            read_labels=lambda path, merge=merge: read_labels(path, merge),
            split_for=lambda _group, image, splits=splits: splits[image],
        )
    return reports


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="the gid-mtl folder (gid5/, gid15/)")
    p.add_argument("--output", required=True, help="output folder (RefSegRS layout)")
    p.add_argument("--sets", nargs="+", default=["gid5", "gid15"], help="label sets to convert")
    p.add_argument("--val-every", type=int, default=VAL_EVERY, help="every N-th image of a scene folder is val")
    p.add_argument("--paraphrases", action="store_true", help="word class-level referents as people ask")
    p.add_argument("--negatives", type=int, default=0, help="per image, this many absent classes (empty mask)")
    p.add_argument("--negative-share", type=float, default=1.0, help="cap on each class's empty-target share")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    config = replace(
        ConversionConfig(crop=0),
        paraphrases=args.paraphrases,
        negatives=args.negatives,
        negative_share=args.negative_share,
        seed=args.seed,
    )
    try:
        reports = convert_gid(args.input, args.output, config, args.sets, args.val_every, args.overwrite)
    except ValueError as exc:
        p.error(str(exc))
    for name, report in reports.items():
        print(f"{name}:\n{format_report(report)}")
    return reports


if __name__ == "__main__":
    main()
