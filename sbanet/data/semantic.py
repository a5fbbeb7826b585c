"""Land-cover segmentation -> referring samples in the RefSegRS layout.

Input: images with colour-coded class masks (``<name>.jpg`` + ``<name>_mask.png``, grouped in
sub-folders such as ``tile1/``) and a palette. Each image is cut into crops of about ``--crop``
pixels (so instance phrases stay meaningful at the model's input size); in each crop:

* class-level referents: every pixel of a class ("the water", "all roads", "the buildings",
  "the vegetation"), as in RefSegRS;
* instance-level referents: connected components of a class, named by the rules of
  :mod:`sbanet.data.expressions` ("the largest building", "the building in the bottom right",
  "the small water body next to a road"), each kept only when it is true and unambiguous;
* optionally (``--paraphrases``) class-level referents worded as people ask for them ("the sea",
  "the houses", "the streets", "the greenery"): each class's :attr:`LandCoverClass.paraphrases`;
* optionally (``--negatives N``) up to N classes *absent* from the crop, asked for anyway, with an
  empty target mask (rule ``absent``): "nothing" is an answer the model has to learn.

Deterministic; reports how many samples each rule produced (stdout and ``conversion_report.json``).
Split by group: ``--val-tiles 6`` puts ``tile6`` in val, the other tiles in train. Run::

    python -m sbanet.data.semantic --input ../shared/data/dubai-aerial --output data/dubai-referring
"""

from __future__ import annotations

import argparse
import json
import re
import zlib
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..image import read_image, to_rgb8
from .expressions import ExpressionConfig, Noun, Referring, Region, describe
from .land_cover import LandCoverClass, decode_label_mask, find_pairs, load_palette
from .wording import DUBAI_PARAPHRASES, absent_referrings, reworded
from .writer import IMAGE_FORMATS, FolderWriter

REPORT_FILE = "conversion_report.json"


BUILDING_COMPLEX = Noun("building complex", "building complexes")
# The colours actually used in the dubai-aerial mask PNGs (../shared/data/README.md).
DUBAI_CLASSES = (
    LandCoverClass(
        "building",
        (60, 16, 152),
        Noun("building", "buildings"),
        True,
        BUILDING_COMPLEX,
        paraphrases=DUBAI_PARAPHRASES["building"],
    ),
    LandCoverClass(
        "land",
        (132, 41, 246),
        Noun("area of bare land", "areas of bare land", "bare land"),
        False,
        landmark=False,
        paraphrases=DUBAI_PARAPHRASES["land"],
    ),
    LandCoverClass(
        "road",
        (110, 193, 228),
        Noun("road", "roads"),
        rules=("position", "extreme", "half-group"),
        paraphrases=DUBAI_PARAPHRASES["road"],
    ),
    LandCoverClass(
        "vegetation",
        (254, 221, 58),
        Noun("patch of vegetation", "patches of vegetation", "vegetation"),
        paraphrases=DUBAI_PARAPHRASES["vegetation"],
    ),
    LandCoverClass(
        "water", (226, 169, 41), Noun("water body", "water bodies", "water"), paraphrases=DUBAI_PARAPHRASES["water"]
    ),
    LandCoverClass("unlabeled", (155, 155, 155)),
)


@dataclass(frozen=True)
class ConversionConfig:
    crop: int = 512  # crops of about this size (0: whole images)
    val_groups: tuple[str, ...] = ("6",)  # group names or their trailing numbers ("6" = tile6)
    test_groups: tuple[str, ...] = ()
    min_region_fraction: float = 0.002  # a component must cover this share of its crop
    min_class_fraction: float = 0.01  # a class-level referent must cover this share
    colour_tolerance: float = 40.0  # off-palette colours this close map to the nearest class
    compact_fill: float = 0.8  # area / minimum rotated rectangle below this: an irregular shape
    max_per_referent: int = 2
    image_format: str = "png"
    seed: int = 0
    paraphrases: bool = False  # word class-level referents with the classes' paraphrases
    negatives: int = 0  # per crop, up to this many absent classes asked for (empty target mask)
    # at most this share of the training split's class-level samples naming a class have an empty
    # target (1: no cap): a class absent from most crops (vegetation) otherwise learns "nothing" as
    # its usual answer
    negative_share: float = 1.0
    expressions: ExpressionConfig = field(default_factory=lambda: ExpressionConfig(margin=0.05))


def crop_boxes(height: int, width: int, crop: int) -> list[tuple[int, int, int, int]]:
    """A grid of about ``crop``-sized, non-overlapping boxes ``(y0, y1, x0, x1)`` covering the image."""
    rows = max(1, round(height / crop)) if crop else 1
    cols = max(1, round(width / crop)) if crop else 1
    ys = np.linspace(0, height, rows + 1).round().astype(int)
    xs = np.linspace(0, width, cols + 1).round().astype(int)
    return [(ys[i], ys[i + 1], xs[j], xs[j + 1]) for i in range(rows) for j in range(cols)]


def split_of(group: str, config: ConversionConfig) -> str:
    number = re.search(r"(\d+)$", group)
    names = {group, number.group(1) if number else group}
    if names & set(config.test_groups):
        return "test"
    return "val" if names & set(config.val_groups) else "train"


def crop_referrings(
    labels: np.ndarray,
    classes: Sequence[LandCoverClass],
    config: ConversionConfig,
    rng: np.random.Generator,
    absent_allowed: Collection[str] | None = None,
) -> list[Referring]:
    """The referring expressions of one crop of class indices ``int16 [H, W]``; absent classes are
    asked for only among ``absent_allowed`` class names (None: any)."""
    area = labels.size
    regions, class_masks, nouns, category_rules = [], {}, {}, {}
    for index, cls in enumerate(classes):
        if cls.noun is None:
            continue
        mask = labels == index
        if not mask.any():
            continue
        class_masks[cls.name], nouns[cls.name] = mask, cls.noun
        if cls.instances:
            n, components, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
            for k in range(1, n):
                if stats[k, cv2.CC_STAT_AREA] >= config.min_region_fraction * area:
                    component = components == k
                    irregular = cls.irregular is not None and fill_ratio(component) < config.compact_fill
                    regions.append(Region(cls.name, component, noun=cls.irregular if irregular else None))
        if cls.rules is not None:
            category_rules[cls.name] = cls.rules
    rules = replace(
        config.expressions,
        min_class_fraction=config.min_class_fraction,
        max_per_referent=config.max_per_referent,
        category_rules={**config.expressions.category_rules, **category_rules},
        landmarks=tuple(c.name for c in classes if c.noun is not None and c.landmark),
    )
    referrings = describe(regions, nouns, rng, class_masks, rules) if class_masks else []
    if config.paraphrases:
        referrings = [reworded(r, classes, rng) for r in referrings]
    return referrings + absent_referrings(labels, classes, config.negatives, rng, absent_allowed)


class NegativeBudget:
    """Keeps each class's empty-target share of its class-level samples at or below ``share``,
    counted over the crops converted so far (deterministic: the pairs come sorted)."""

    def __init__(self, share: float) -> None:
        self.share = share
        self.positives: Counter[str] = Counter()
        self.negatives: Counter[str] = Counter()

    def allowed(self, classes: Sequence[LandCoverClass]) -> set[str] | None:
        """The class names one more negative keeps within the share (None: uncapped)."""
        if self.share >= 1.0:
            return None
        return {
            c.name
            for c in classes
            if self.negatives[c.name] + 1 <= self.share * (self.positives[c.name] + self.negatives[c.name] + 1)
        }

    def count(self, ref: Referring) -> None:
        if ref.rule == "absent":
            self.negatives[ref.category] += 1
        elif ref.rule == "class":
            self.positives[ref.category] += 1


def fill_ratio(mask: np.ndarray) -> float:
    """Area of a component over the area of its minimum rotated bounding rectangle (1: a rectangle)."""
    points = cv2.findNonZero(mask.astype(np.uint8))
    (_, _), (w, h), _ = cv2.minAreaRect(points)
    return float(mask.sum()) / max((w + 1) * (h + 1), 1.0)


def convert(
    input_root: str | Path,
    output_root: str | Path,
    config: ConversionConfig | None = None,
    classes: Sequence[LandCoverClass] = DUBAI_CLASSES,
    overwrite: bool = False,
    pairs: Sequence[tuple[str, Path, Path]] | None = None,
    read_labels: Callable[[Path], np.ndarray] | None = None,
    split_for: Callable[[str, Path], str] | None = None,
) -> dict[str, Any]:
    """Convert every image/mask pair under ``input_root``; returns (and writes) the report.

    Other label formats (e.g. :mod:`sbanet.data.gid`'s class-id PNGs) pass their own ``pairs``
    ``[(group, image, label)]``, ``read_labels`` (label path -> class indices ``int16 [H, W]``, -1:
    unlabeled) and ``split_for`` ((group, image path) -> "train" / "val" / "test")."""
    config = config or ConversionConfig()
    if config.crop < 0:
        raise ValueError(f"crop must be >= 0 (0 keeps whole images), got {config.crop}")
    if config.negatives < 0:
        raise ValueError(f"negatives must be >= 0, got {config.negatives}")
    if not 0.0 <= config.negative_share <= 1.0:
        raise ValueError(f"negative_share must be in [0, 1], got {config.negative_share}")
    if config.image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {sorted(IMAGE_FORMATS)}, got {config.image_format!r}")
    pairs = find_pairs(input_root) if pairs is None else pairs
    rules: Counter[str] = Counter()
    per_split: dict[str, Counter[str]] = {}
    categories: Counter[str] = Counter()
    off_palette: Counter[tuple] = Counter()
    crops = 0
    budget = NegativeBudget(config.negative_share)
    with FolderWriter(output_root, config.image_format, overwrite) as writer:
        for group, image_path, mask_path in pairs:
            image = to_rgb8(read_image(image_path))
            if read_labels is None:
                labels, off = decode_label_mask(to_rgb8(read_image(mask_path)), classes, config.colour_tolerance)
            else:
                labels, off = read_labels(mask_path), {}
            for colour, (count, index) in off.items():
                off_palette[(colour, classes[index].name if index >= 0 else "unlabeled")] += count
            if labels.shape != image.shape[:2]:
                raise ValueError(f"{mask_path.name} is {labels.shape}, its image {image.shape[:2]}")
            split = split_of(group, config) if split_for is None else split_for(group, image_path)
            stem = f"{group.replace('/', '_')}_{image_path.stem}"
            for y0, y1, x0, x1 in crop_boxes(*labels.shape, config.crop):
                crop_id = f"{stem}_y{y0}x{x0}"
                rng = np.random.default_rng([config.seed, zlib.crc32(crop_id.encode())])
                crop_image = np.ascontiguousarray(image[y0:y1, x0:x1])
                crops += 1
                # the cap shapes what the model learns; val keeps every absent case, for scoring
                allowed = budget.allowed(classes) if split == "train" else None
                for k, ref in enumerate(crop_referrings(labels[y0:y1, x0:x1], classes, config, rng, allowed)):
                    if split == "train":
                        budget.count(ref)
                    writer.add(
                        split,
                        f"{crop_id}_{k:02d}",
                        crop_id,
                        crop_image,
                        ref.mask,
                        ref.expression,
                        category=ref.category,
                        rule=ref.rule,
                        source=f"{image_path.relative_to(input_root).as_posix()}",
                        box=[int(y0), int(y1), int(x0), int(x1)],
                    )
                    rules[ref.rule] += 1
                    per_split.setdefault(split, Counter())[ref.rule] += 1
                    categories[ref.category] += 1
    report = {
        "input": str(input_root),
        "images": len(pairs),
        "crops": crops,
        "samples": sum(rules.values()),
        "samples_per_split": dict(sorted(writer.counts.items())),
        "rules": dict(rules.most_common()),
        "rules_per_split": {s: dict(c.most_common()) for s, c in sorted(per_split.items())},
        "categories": dict(categories.most_common()),
        "class_level_train": {
            c: {"named": budget.positives[c] + budget.negatives[c], "empty": budget.negatives[c]}
            for c in sorted(budget.positives | budget.negatives)
        },
        "off_palette_pixels": [
            {"rgb": list(colour), "pixels": n, "mapped_to": name} for (colour, name), n in off_palette.most_common()
        ],
        "config": {k: v for k, v in asdict(config).items() if k != "expressions"},
        "expression_thresholds": asdict(config.expressions),
    }
    text = json.dumps(report, indent=2)
    (Path(output_root) / REPORT_FILE).write_text(text + "\n")
    return json.loads(text)  # as it reads back (lists, not tuples)


def format_report(report: dict[str, Any]) -> str:
    splits = sorted(report["rules_per_split"])
    lines = [
        f"{report['images']} images, {report['crops']} crops -> {report['samples']} samples "
        + ", ".join(f"{s}: {n}" for s, n in report["samples_per_split"].items()),
        f"{'rule':<24}" + "".join(f"{s:>8}" for s in splits) + f"{'total':>8}",
    ]
    for rule, total in report["rules"].items():
        counts = "".join(f"{report['rules_per_split'][s].get(rule, 0):>8}" for s in splits)
        lines.append(f"{rule:<24}{counts}{total:>8}")
    lines.append("categories: " + ", ".join(f"{c} {n}" for c, n in report["categories"].items()))
    off = report["off_palette_pixels"]
    described = [f"{o['pixels']} of rgb{tuple(o['rgb'])} -> {o['mapped_to']}" for o in off]
    lines.append("off-palette pixels: " + (", ".join(described) if off else "none"))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="folder of <name>.jpg + <name>_mask.png pairs (any depth)")
    parser.add_argument("--output", required=True, help="output folder (RefSegRS layout)")
    parser.add_argument("--palette", help="palette JSON (default: the dubai-aerial palette)")
    parser.add_argument("--crop", type=int, default=512, help="crop size in pixels, 0 = whole images")
    parser.add_argument("--val-tiles", nargs="*", default=["6"], help="groups (folder names or numbers) for val")
    parser.add_argument("--test-tiles", nargs="*", default=[], help="groups for test")
    parser.add_argument("--min-region-fraction", type=float, default=0.002)
    parser.add_argument("--min-class-fraction", type=float, default=0.01)
    parser.add_argument("--colour-tolerance", type=float, default=40.0)
    parser.add_argument("--max-per-referent", type=int, default=2)
    parser.add_argument("--image-format", choices=sorted(IMAGE_FORMATS), default="png")
    parser.add_argument("--seed", type=int, default=0, help="varies the phrasing only")
    parser.add_argument("--paraphrases", action="store_true", help="word class-level referents as people ask")
    parser.add_argument("--negatives", type=int, default=0, help="per crop, this many absent classes (empty mask)")
    parser.add_argument(
        "--negative-share", type=float, default=1.0, help="cap on each class's empty-target share (1 = no cap)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace samples already in --output")
    args = parser.parse_args(argv)
    config = ConversionConfig(
        crop=args.crop,
        val_groups=tuple(args.val_tiles),
        test_groups=tuple(args.test_tiles),
        min_region_fraction=args.min_region_fraction,
        min_class_fraction=args.min_class_fraction,
        colour_tolerance=args.colour_tolerance,
        max_per_referent=args.max_per_referent,
        image_format=args.image_format,
        seed=args.seed,
        paraphrases=args.paraphrases,
        negatives=args.negatives,
        negative_share=args.negative_share,
    )
    classes = load_palette(args.palette) if args.palette else DUBAI_CLASSES
    try:
        report = convert(args.input, args.output, config, classes, overwrite=args.overwrite)
    except ValueError as exc:
        parser.error(str(exc))
    print(format_report(report))
    print(f"report written to {Path(args.output) / REPORT_FILE}")
    return report


if __name__ == "__main__":
    main()
