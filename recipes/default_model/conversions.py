"""The default model's data: the conversions of dubai-aerial and gid-mtl its recipes train and
score on (:data:`CONVERSIONS`, :data:`GID_CONVERSIONS`, by output folder name), which of them a
recipe needs (:func:`conversion_roots`), converting them when missing (:func:`prepare_data`) and
what they hold (:func:`data_summary`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from recipes.default_model.provenance import training_folders
from sbanet.data.gid import LABEL_SETS, convert_gid
from sbanet.data.semantic import REPORT_FILE, ConversionConfig, convert
from train.fit_config import FitConfig, load_config

DUBAI_INPUT = Path("../shared/data/dubai-aerial")
GID_INPUT = Path("../shared/data/gid-mtl")


# The recipes' conversions of dubai-aerial, by output folder name: ~512 px crops (instance
# phrases stay meaningful at the input size) and whole images (the scale a user's upload has once
# the app resizes it to the input size). The shipped recipe's crops and whole images are worded
# canonically; the "-asked" ones (the v4 attempt, docs/history.md) word the crops' class-level
# referents as people ask ("the sea", "the houses") and ask for absent classes with an empty mask
# (up to two per crop; every one per whole image: tile 6's "not found" cases).
CONVERSIONS = {
    "dubai-referring": {"crop": 512},
    "dubai-referring-whole": {"crop": 0},
    "dubai-referring-asked": {"crop": 512, "paraphrases": True, "negatives": 2},
    "dubai-referring-whole-asked": {"crop": 0, "negatives": 5},
    # one absent class per crop / image: with two, "the vegetation" (absent from the most crops) had
    # an empty target in 53 of 136 training samples that name it, and the v4 attempt learned to answer
    # "nothing" for it on tile 6; with one it still has 37 of 120, and the recipe trained on these
    # did not bring vegetation back either (docs/history.md)
    "dubai-referring-asked-n1": {"crop": 512, "paraphrases": True, "negatives": 1},
    "dubai-referring-whole-asked-n1": {"crop": 0, "negatives": 1},
    # at most 10 % of the class-level samples naming a class have an empty target
    "dubai-referring-asked-cap10": {"crop": 512, "paraphrases": True, "negatives": 1, "negative_share": 0.1},
    "dubai-referring-whole-asked-cap10": {"crop": 0, "negatives": 5, "negative_share": 0.1},
    "dubai-referring-asked-cap20": {"crop": 512, "paraphrases": True, "negatives": 1, "negative_share": 0.2},
    "dubai-referring-whole-asked-cap20": {"crop": 0, "negatives": 5, "negative_share": 0.2},
    # the v3 recipe's canonical wordings with capped negatives (a v4 candidate, docs/history.md)
    "dubai-referring-neg10": {"crop": 512, "negatives": 1, "negative_share": 0.1},
    "dubai-referring-whole-neg10": {"crop": 0, "negatives": 5, "negative_share": 0.1},
}
# The recipes' conversions of gid-mtl (sbanet.data.gid: whole 224 px images, class-level referents,
# every 10th image of each scene folder val), by output folder name; each holds gid5/ and gid15/.
# "-whole": every absent class asked (scoring); "-asked-cap10": wordings as people ask, one absent
# class per image, at most 10 % of the class-level samples naming a class empty (training).
GID_CONVERSIONS = {
    "gid-referring-whole": {"negatives": 5},
    "gid-referring-asked-cap10": {"paraphrases": True, "negatives": 1, "negative_share": 0.1},
    # up to two absent classes per image, at most 30 % of a class's samples empty (v5_negatives.yaml)
    "gid-referring-asked-cap30": {"paraphrases": True, "negatives": 2, "negative_share": 0.3},
}
# each crop conversion's whole-image twin, by name: "dubai-referring<X>" -> "dubai-referring-whole<X>"
WHOLE_OF = {
    name: name.replace("dubai-referring", "dubai-referring-whole", 1)
    for name, options in CONVERSIONS.items()
    if options["crop"]
}
WHOLE_IMAGES = WHOLE_OF["dubai-referring"]


def conversion_roots(config: FitConfig) -> list[Path]:
    """The converted folders the recipe needs, each once: ``data.root``, every ``folder`` entry of
    ``data.mix``, the whole-image conversion beside ``data.root`` (always scored: it is what the
    app sees, whether or not the recipe trains on it), and those of its ``model.init_recipe``."""
    if config.data.kind != "folder":
        raise ValueError(f"the default-model recipe trains on a converted folder, not {config.data.kind!r}")
    roots = training_folders(config.to_dict()["data"])
    main = Path(config.data.root)
    before = conversion_roots(load_config(config.model.init_recipe)) if config.model.init_recipe else []
    return list(dict.fromkeys([*roots, main.with_name(WHOLE_OF.get(main.name, WHOLE_IMAGES)), *before]))


def whole_image_folders(roots: Iterable[str | Path], main: str | Path) -> list[str | Path]:
    """Those of ``roots`` that are the whole-image conversion (scored as ``val_whole``), other
    than the main one (``data.root``)."""
    return [root for root in roots if Path(root).name in WHOLE_OF.values() and Path(root) != Path(main)]


def prepare_data(
    input_root: str | Path,
    output_root: str | Path,
    val_tiles: tuple[str, ...] = ("6",),
    gid_input: str | Path = GID_INPUT,
) -> dict:
    """The converter's report, converting ``input_root`` first unless ``output_root`` holds one.
    The options come from the folder's name (:data:`CONVERSIONS`; ``<name>/gid5``, ``<name>/gid15``:
    :data:`GID_CONVERSIONS`, converted from ``gid_input``)."""
    report = Path(output_root) / REPORT_FILE
    if report.is_file():
        return json.loads(report.read_text())
    parent = Path(output_root).parent
    if parent.name in GID_CONVERSIONS and Path(output_root).name in LABEL_SETS:
        if not Path(gid_input).is_dir():
            raise ValueError(f"gid-mtl not found at {gid_input}: pass --gid-input (see ../shared/data/README.md)")
        options = GID_CONVERSIONS[parent.name]
        print(f"converting {gid_input} -> {parent} ({options}) ...", flush=True)
        return convert_gid(gid_input, parent, ConversionConfig(crop=0, **options))[Path(output_root).name]
    if Path(output_root).name not in CONVERSIONS:
        raise ValueError(f"{output_root}: the recipe converts only into folders named {sorted(CONVERSIONS)}")
    if not Path(input_root).is_dir():
        raise ValueError(f"dubai-aerial not found at {input_root}: pass --input (see ../shared/data/README.md)")
    options = CONVERSIONS[Path(output_root).name]
    print(f"converting {input_root} -> {output_root} ({options}) ...", flush=True)
    return convert(input_root, output_root, ConversionConfig(**options, val_groups=val_tiles))


def data_summary(report: dict, conversions: dict[str, dict] | None = None) -> dict[str, Any]:
    """``report``'s counts (the main conversion), and the counts of each of ``conversions``."""
    keys = ("images", "crops", "samples", "samples_per_split", "rules_per_split", "categories")
    source = "dubai-aerial (CC0), tiles 1-5 train, tile 6 val"
    if any(Path(root).parent.name in GID_CONVERSIONS for root in conversions or {}):
        source += "; gid-mtl (GID, research use), every 10th image of each scene folder val"
    summary = {"source": source, **{k: report[k] for k in keys}}
    if conversions:
        summary["conversions"] = {
            root: {**{k: r["config"].get(k) for k in ("crop", "paraphrases", "negatives")}, **{k: r[k] for k in keys}}
            for root, r in conversions.items()
        }
    return summary
