"""How the default model was made, as its model card says it: the data it trained on
(:func:`data_lines`, :func:`training_folders`), its recipe stage by stage (:func:`recipe_lines`,
:func:`loss_phrase`) and its training time (:func:`training_time_lines`), all read from the
export's metadata (:func:`recipes.default_model.train.export`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recipes.default_model.gsd_sources import source_of

SELECTION = (
    "The last weights are shipped: tile 6 was used to choose the recipe (size, lr, steps, data mix, loss) in "
    "short pilot runs, never during a run."
)


def training_folders(recipe_data: dict[str, Any]) -> list[Path]:
    """The converted folders a recipe trains on, each once, in order: ``data.root`` and the
    ``root`` of every ``folder`` entry of ``data.mix`` (a fit config's ``data`` as a dict)."""
    mix = recipe_data.get("mix", [])
    roots = [Path(recipe_data["root"]), *(Path(m["root"]) for m in mix if m["kind"] == "folder" and m.get("root"))]
    return list(dict.fromkeys(roots))


def conversion_records(data: dict[str, Any], recipe_data: dict[str, Any]) -> list[tuple[str, dict[str, Any], bool]]:
    """``[(folder, its record (crop, counts), trained on it?)]`` for each conversion of the data
    summary (a summary from before ``conversions`` were recorded: the ~512 px crops alone)."""
    conversions = data.get("conversions") or {recipe_data["root"]: {"crop": 512, **data}}
    trained = set(training_folders(recipe_data))
    return [(root, record, Path(root) in trained) for root, record in conversions.items()]


def conversion_phrase(record: dict[str, Any], trained: bool) -> str:
    """One conversion for the card: ``"whole images (679 training / 110 validation expressions; ...)"``."""
    pieces = "whole images" if not record["crop"] else f"{record['crops']} crops of ~{record['crop']} px"
    counts = record["samples_per_split"]
    val = f"{counts.get('val', 0)} validation expressions"
    use = f"{counts.get('train', 0)} training / {val}" if trained else f"{val}, not trained on"
    absent = sum(rules.get("absent", 0) for rules in record.get("rules_per_split", {}).values())
    asked = [
        *(["class-level referents worded as people ask"] if record.get("paraphrases") else []),
        *([f"{absent} absent-class expressions with empty masks"] if absent else []),
    ]
    return f"{pieces} ({use}{'; ' + ', '.join(asked) if asked else ''})"


def data_lines(data: dict[str, Any], recipe_data: dict[str, Any]) -> list[str]:
    """The card's data paragraph: each conversion of the land-cover masks (trained on, or only
    scored), and what else was mixed into training; a recipe mixing sources gets one line per
    conversion, with its source and categories, and says which folder the mix lists twice."""
    records = conversion_records(data, recipe_data)
    if any(source_of(root) not in (None, "dubai-aerial") for root, _, _ in records):
        listed = [recipe_data["root"], *(m["root"] for m in recipe_data.get("mix", []) if m.get("root"))]
        lines = [f"{data['source']}; each converted folder:", ""]
        for root, c, trained in records:
            twice = " Listed twice in the training mix: it weighs double." if listed.count(root) > 1 else ""
            categories = ", ".join(f"{k} {v}" for k, v in c.get("categories", {}).items())
            lines.append(
                f"- `{root}` ({source_of(root)}): {c['images']} images, {conversion_phrase(c, trained)}. "
                f"Categories: {categories}.{twice}"
            )
    else:
        split = data["samples_per_split"]
        parts = [conversion_phrase(c, trained) for _, c, trained in records]
        lines = [
            f"{data['source']}: {data['images']} images, converted by `python -m sbanet.data.semantic` into "
            + " and ".join(parts)
            + " (class-level and instance-level; docs/datasets.md). Categories of the crops: "
            + ", ".join(f"{k} {v}" for k, v in data["categories"].items())
            + f" ({split.get('train', 0) + split.get('val', 0)} crop expressions)."
        ]
    # what else was mixed in, whichever the sources (a mixed recipe used to leave these out)
    for m in recipe_data.get("mix", []):
        if m["kind"] == "folder" and m.get("options"):
            lines.append(f"Mixed in again: `{m['root']}` with reader options {m['options']} (weighted up).")
        elif m["kind"] != "folder":
            lines.append(f"Mixed in: {m['kind']} {m.get('options', {})} (sbanet.data.{m['kind']}).")
    return lines


def counts_phrase(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {label}" for label, n in counts.items()) or "none"


def loss_phrase(overrides: dict[str, Any]) -> str:
    """The training loss, from the recipe's model overrides (``dice_weight``: 0 unless set)."""
    dice = float(overrides.get("dice_weight", 0.0))
    ce = "LAVT's weighted cross-entropy"
    return f"{ce} + {dice:g} x soft Dice (so thin roads and small buildings are not given up)" if dice else ce


def stage_phrase(recipe: dict[str, Any], steps: int) -> str:
    """One stage of the recipe: its steps, batch and learning rates."""
    t = recipe["train"]
    return (
        f"{steps} AdamW steps of batch {t['batch_size']} (lr {t['lr']:g} for the new parts, "
        f"x{t['encoder_lr_mult']:g} for the visual encoder, {t['warmup_steps']} warm-up steps, polynomial decay)"
    )


def recipe_lines(metadata: dict[str, Any]) -> list[str]:
    """What ``recipes/default_model/config.yaml`` trains, stage by stage when it starts from an earlier
    recipe's run (``model.init_recipe``)."""
    recipe, training = metadata["recipe"], metadata["training"]
    model, train = recipe["model"], recipe["train"]
    image_size = model["overrides"].get("image_size", 448)
    common = f"loss {loss_phrase(model['overrides'])}, text encoder frozen, seed {train['seed']}. " + (
        metadata.get("selection") or SELECTION
    )
    stages = metadata.get("stages") or []
    head = f"`recipes/default_model/config.yaml`: {model['preset']} at {image_size} x {image_size}"
    if not stages:
        return [f"{head}, {stage_phrase(recipe, training['steps'])}, {common}"]
    lines = [
        f"{head}, in {len(stages) + 1} stages run by the one command (an earlier stage is trained only "
        "when its run folder lacks it):",
        "",
    ]
    for n, stage in enumerate(stages, 1):
        start = "from ImageNet EfficientNet-Lite0 and MiniLM" if n == 1 else "from the stage before"
        phrase = stage_phrase(stage["recipe"], stage["training"]["steps"])
        lines.append(f"{n}. `{stage['recipe_file']}`: {phrase}, {start};")
    phrase = stage_phrase(recipe, training["steps"])
    lines += [f"{len(stages) + 1}. `recipes/default_model/config.yaml`: {phrase} more, from the stage before.", ""]
    return [*lines, f"All stages: {common}"]


def training_time_lines(metadata: dict[str, Any]) -> list[str]:
    """Wall-clock (and, when every stage recorded it, CPU) time of the training, every stage's
    summed, on the machine the run recorded (``training.machine``; runs before that field were all
    trained on this project's shared 2-core CPU), with the run's ``training.note`` if any."""
    runs = [s["training"] for s in metadata.get("stages") or []] + [metadata["training"]]
    wall = sum(r["wall_s"] for r in runs) / 60
    minutes = " + ".join(f"{r['wall_s'] / 60:.0f}" for r in runs)
    each = f" ({minutes} min by stage)" if len(runs) > 1 else ""
    last = metadata["training"]
    cpu_s = [r.get("cpu_s") for r in runs]
    cpu = "" if None in cpu_s else f", {sum(cpu_s) / 60:.0f} min of CPU time"
    machine = last.get("machine") or "a shared 2-core AMD EPYC"
    note = f" {last['note'][0].upper()}{last['note'][1:]}." if last.get("note") else ""
    return [
        f"Training time: {wall:.0f} min wall-clock{each}{cpu} ({last['threads']} thread(s), on {machine}; "
        f"load average at the end {last.get('load_average')}).{note}"
    ]
