"""The default model's recipe pieces on a tiny model: ``data.mix``, the class-/instance-level
evaluation, the export (float16 check, text encoder left out only when unchanged) and the card."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from training_fixtures import single_thread

from recipes.default_model import card as model_card
from recipes.default_model import conversions as recipe_data
from recipes.default_model import model_report, provenance
from recipes.default_model import train as recipe
from sbanet.build import sbanet_tiny, sbanet_tiny_config
from sbanet.checkpoint import load_pretrained, save_pretrained
from sbanet.data import ReferringDataset, load_samples
from sbanet.data.synthetic import main as write_synthetic
from sbanet.inference.shipped import SHIPPED_MODEL
from sbanet.training.evaluation import evaluate
from train.data import make_dataset
from train.fit_config import load_config

TINY = {"image_size": 64, "max_tokens": 12}


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def model():
    """The tiny preset at 64 px, its classifier set to call every pixel the target (IoU > 0)."""
    torch.manual_seed(0)
    tiny = sbanet_tiny(**TINY).eval()
    with torch.no_grad():
        tiny.decoder.classifier.weight.zero_()
        tiny.decoder.classifier.bias.copy_(torch.tensor([0.0, 1.0]))
    return tiny


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Two synthetic scenes written as a converted folder (``samples_val.jsonl`` with rules)."""
    root = tmp_path_factory.mktemp("folder")
    write_synthetic(["--output", str(root), "--n-images", "2", "--size", "64", "--split", "val"])
    return root


def test_mix_appends_training_sources(tokenizer, folder):
    config = sbanet_tiny_config(**TINY)
    alone = make_dataset("folder", folder, "val", config, tokenizer)
    mix = [{"kind": "synthetic", "split": "train", "options": {"n_images": 1, "size": 64}, "limit": 5}]
    mixed = make_dataset("folder", folder, "val", config, tokenizer, mix=mix, blind_text=True)
    assert len(mixed) == len(alone) + 5
    assert mixed.samples[-1].sample_id.startswith("synthetic/train/") and mixed.samples[-1].expression == ""
    # a converted folder's class-level samples a second time (the recipe weights them up so)
    classes = [{"kind": "folder", "root": str(folder), "options": {"rules": ["class"]}}]
    weighted = make_dataset("folder", folder, "val", config, tokenizer, mix=classes)
    rules = model_report.sample_rules(folder, "val")
    assert len(weighted) == len(alone) + sum(r == "class" for r in rules.values()) > len(alone)
    assert all(rules[s.ref_id] == "class" for s in weighted.samples[len(alone) :])
    for bad in ("class", []):
        with pytest.raises(ValueError, match="non-empty list"):
            load_samples("folder", folder, "val", rules=bad)
    parsed = load_config(None, ["data.mix=[{kind: synthetic, options: {n_images: 2}}]"])
    assert parsed.data.mix == [{"kind": "synthetic", "options": {"n_images": 2}}]
    bad_mixes = (
        ("[{kind: nope}]", "needs a kind"),
        ("[{kind: folder, weight: 2}]", "unknown keys"),
        ("{kind: folder}", "must be a list"),
        ("[{kind: folder, split: test}]", "test split"),
    )
    for bad, match in bad_mixes:
        with pytest.raises(ValueError, match=match):
            load_config(None, [f"data.mix={bad}"])


def test_evaluate_by_rule_splits_the_reference_metrics(model, tokenizer, folder):
    groups = model_report.evaluate_by_rule(model, tokenizer, folder, "val", batch_size=4)
    rules = model_report.sample_rules(folder, "val")
    n_class = sum(r == "class" for r in rules.values())
    assert groups["class-level"]["count"] == n_class > 0
    assert groups["instance-level"]["count"] == len(rules) - n_class > 0
    assert groups["all"]["count"] == len(rules)
    samples = load_samples("folder", folder, "val")
    reference = evaluate(model, ReferringDataset(samples, 64, tokenizer, 12), batch_size=4)
    assert 0 < reference["oIoU"] < 1
    for key in ("oIoU", "mIoU", "Pr@0.5"):
        assert groups["all"][key] == pytest.approx(reference[key])
    weighted = sum(groups[g]["mIoU"] * groups[g]["count"] for g in ("class-level", "instance-level"))
    assert weighted / len(rules) == pytest.approx(groups["all"]["mIoU"])


def test_export_writes_checkpoint_metadata_and_card(model, tokenizer, folder, tmp_path):
    run = tmp_path / "run"
    save_pretrained(model, run / "best", tokenizer=tokenizer)
    config = load_config(None, ["model.preset=sbanet_tiny", f"data.root={folder}", "data.kind=folder"])
    val = model_report.evaluate_by_rule(model, tokenizer, folder, "val")
    # the same scenes stand in for the whole-image conversion (scored as val_whole)
    whole = tmp_path / "dubai-referring-whole"
    shutil.copytree(folder, whole)
    val_whole = model_report.evaluate_by_rule(model, tokenizer, whole, "val")
    report = {"images": 2, "crops": 2, "samples": 60, "samples_per_split": {"val": 60},
              "rules_per_split": {}, "categories": {"building": 30}}  # fmt: skip
    conversions = {str(folder): {**report, "config": {"crop": 512}}, str(whole): {**report, "config": {"crop": 0}}}
    summary = {
        "run": str(run), "recipe": config.to_dict(), "val": val, "val_whole": val_whole, "commit": "0123abc",
        "training": {"wall_s": 60.0, "cpu_s": 50.0, "steps": 3, "threads": 1, "load_average": [1.0, 1.0, 1.0]},
        "data": recipe_data.data_summary(report, conversions),
    }  # fmt: skip
    assert recipe.whole_image_root(summary) == str(whole)
    out = tmp_path / "shipped"
    (out / "tokenizer").mkdir(parents=True)
    (out / "tokenizer" / "stale.txt").write_text("from an earlier export")
    metadata = recipe.export(summary, out, baseline={"val": val, "val_whole": val_whole})
    header = json.loads((out / "config.json").read_text())
    # the tiny model's text encoder is random, not a pretrained source: it must stay in the file
    assert header["text_encoder"] == "included" and not (out / "tokenizer" / "stale.txt").exists()
    assert header["metadata"]["commit"] == "0123abc" and metadata["text_blind_baseline"] == val
    assert header["dtype"] == metadata["weights_dtype"]
    assert metadata["float16_max_change"] <= recipe.HALF_TOLERANCE or header["dtype"] == "float32"
    shipped, _ = load_pretrained(out)
    assert recipe.max_metric_change(val, model_report.evaluate_by_rule(shipped, tokenizer, folder, "val")) < 0.01
    card = (out / "README.md").read_text()
    assert "text-blind baseline" in card and "0123abc" in card and "python -m recipes.default_model.train" in card
    assert f"{100 * val['class-level']['oIoU']:.2f}" in card
    assert "Whole images, as a user uploads them" in card and card.count("text-blind baseline, class-level") == 2
    assert metadata["text_blind_baseline_whole"] == val_whole and metadata["val_tile6_whole_float32"] == val_whole
    assert "whole images (" in card and "2 crops of ~512 px" in card
    assert "loss LAVT's weighted cross-entropy, text encoder frozen" in card  # no dice_weight: the paper's loss
    assert provenance.loss_phrase({"dice_weight": 0.5}).startswith("LAVT's weighted cross-entropy + 0.5 x soft Dice")
    assert not recipe.text_encoder_unchanged(model)
    # a source report judged with other thresholds than the export fits would put stale counts in the card
    stale = {"results": [{"data": "gid5", "thresholds": {"min_area_fraction": 0.5}}], "pooled": {}}
    with pytest.raises(ValueError, match="other verdict thresholds"):
        recipe.export(summary, tmp_path / "stale", sources=stale)
    assert not (tmp_path / "stale" / "config.json").exists()


def test_a_mixed_recipes_data_lines_name_each_folder_and_what_else_was_mixed_in():
    record = {"crop": 0, "images": 3, "crops": 3, "samples_per_split": {"train": 5, "val": 1}}
    record["categories"] = {"river": 2}
    data = {"source": "dubai-aerial; gid-mtl", "conversions": {"runs/data/dubai-x": {**record, "crop": 512},
                                                                "runs/data/gid-x/gid15": record}}  # fmt: skip
    recipe_data = {"root": "runs/data/dubai-x", "mix": [
        {"kind": "folder", "root": "runs/data/dubai-x"}, {"kind": "folder", "root": "runs/data/gid-x/gid15"},
        {"kind": "synthetic", "options": {"count": 10}}]}  # fmt: skip
    lines = provenance.data_lines(data, recipe_data)
    assert any(line.startswith("- `runs/data/dubai-x` (dubai-aerial)") and "weighs double" in line for line in lines)
    assert any(line.startswith("- `runs/data/gid-x/gid15` (gid-mtl)") and "river 2" in line for line in lines)
    assert lines[-1] == "Mixed in: synthetic {'count': 10} (sbanet.data.synthetic)."


def test_export_only_needs_a_trained_run(tmp_path, capsys):
    assert recipe.main(["--export-only", f"output.dir={tmp_path / 'nothing'}"]) == 2
    assert "train first" in capsys.readouterr().err


def test_the_recipe_scores_whole_images_too(tmp_path):
    configs = Path(__file__).resolve().parents[1] / "recipes" / "default_model"
    crops, whole = Path("runs/data/dubai-referring"), Path("runs/data/dubai-referring-whole")
    v3 = load_config(configs / "v3.yaml", [])  # shipped until v4
    assert recipe_data.conversion_roots(v3) == [crops, whole]  # trained on both
    assert v3.model.overrides["dice_weight"] > 0
    v4 = load_config(configs / "v4.yaml", [])  # asked wordings, capped negatives, flips; v5's first stage
    cap10 = [Path("runs/data/dubai-referring-asked-cap10"), Path("runs/data/dubai-referring-whole-asked-cap10")]
    assert recipe_data.conversion_roots(v4) == cap10 and v4.data.augment and v4.model.init_recipe is None
    assert v4.train.eval_every > v4.train.max_steps  # tile 6 is scored after the last step only
    assert {k: v4.model.overrides[k] for k in v3.model.overrides} == v3.model.overrides
    assert v4.output.dir == "runs/default_model"
    # v5, shipped: v4's run, then Dubai and GID-MTL mixed, BatchNorm at v4's statistics
    shipped = load_config(configs / "config.yaml", [])
    gid = [Path("runs/data/gid-referring-asked-cap10/gid5"), Path("runs/data/gid-referring-asked-cap10/gid15")]
    assert recipe_data.conversion_roots(shipped) == [*cap10, *gid]
    assert shipped.model.init_recipe == "recipes/default_model/v4.yaml" and shipped.train.freeze_batchnorm
    assert shipped.model.overrides == v4.model.overrides  # the forms v4's weights were trained with
    assert shipped.train.eval_every > shipped.train.max_steps and shipped.data.photometric
    assert recipe_data.CONVERSIONS[cap10[0].name]["paraphrases"] and recipe_data.CONVERSIONS[cap10[1].name]["negatives"]
    # the conversions of the variants measured and not shipped (docs/history.md), still converted on request
    asked_roots = [Path("runs/data/dubai-referring-asked"), Path("runs/data/dubai-referring-whole-asked")]
    assert recipe_data.whole_image_folders(asked_roots, asked_roots[0]) == asked_roots[1:]
    assert recipe_data.CONVERSIONS["dubai-referring-asked"] == {"crop": 512, "paraphrases": True, "negatives": 2}
    assert all(recipe_data.CONVERSIONS[whole]["crop"] == 0 for whole in recipe_data.WHOLE_OF.values())
    n1 = [Path("runs/data/dubai-referring-asked-n1"), Path("runs/data/dubai-referring-whole-asked-n1")]
    assert [recipe_data.CONVERSIONS[root.name]["negatives"] for root in n1] == [1, 1]
    assert not v3.data.augment and "negatives" not in recipe_data.CONVERSIONS["dubai-referring"]
    for share in (10, 20):
        cap = [f"dubai-referring-asked-cap{share}", f"dubai-referring-whole-asked-cap{share}"]
        assert {recipe_data.CONVERSIONS[name]["negative_share"] for name in cap} == {share / 100}
    with pytest.raises(ValueError, match="only into folders named"):
        recipe_data.prepare_data(tmp_path, tmp_path / "elsewhere")


def test_the_negatives_recipe_changes_only_gids_conversion():
    configs = Path(__file__).resolve().parents[1] / "recipes" / "default_model"
    more, plain = load_config(configs / "v5_negatives.yaml", []), load_config(configs / "v5_cpu4.yaml", [])
    gid = {entry["root"] for entry in more.data.mix if "gid" in entry["root"]}
    assert gid == {"runs/data/gid-referring-asked-cap30/gid5", "runs/data/gid-referring-asked-cap30/gid15"}
    assert recipe_data.GID_CONVERSIONS["gid-referring-asked-cap30"] == {
        "paraphrases": True,
        "negatives": 2,
        "negative_share": 0.3,
    }
    renamed = [{**e, "root": e["root"].replace("cap30", "cap10")} for e in more.data.mix]
    assert renamed == list(plain.data.mix) and more.data.root == plain.data.root  # Dubai's folders unchanged
    assert more.train == plain.train and more.model == plain.model
    assert more.output.dir != plain.output.dir


def test_the_photometric_ablation_turns_off_only_photometric_augmentation():
    configs = Path(__file__).resolve().parents[1] / "recipes" / "default_model"
    ablated, plain = load_config(configs / "v5_no_photometric.yaml", []), load_config(configs / "v5_cpu4.yaml", [])
    assert plain.data.photometric and not ablated.data.photometric and ablated.data.augment
    assert dataclasses.replace(ablated.data, photometric=True) == plain.data
    assert ablated.train == plain.train and ablated.model == plain.model
    assert ablated.output.dir != plain.output.dir


def test_the_narrow_scale_run_differs_from_the_wide_one_only_in_its_range():
    configs = Path(__file__).resolve().parents[1] / "recipes" / "default_model"
    narrow, wide = load_config(configs / "v5_scale_narrow.yaml", []), load_config(configs / "v5_scale.yaml", [])
    plain = load_config(configs / "v5_cpu4.yaml", [])
    assert tuple(narrow.data.scale) == (0.7, 1.4) and tuple(wide.data.scale) == (0.5, 2.0)
    assert dataclasses.replace(narrow.data, scale=wide.data.scale) == wide.data
    assert dataclasses.replace(narrow.data, scale=plain.data.scale) == plain.data  # the twin without it
    assert narrow.train == wide.train == plain.train and narrow.model == wide.model == plain.model
    assert len({narrow.output.dir, wide.output.dir, plain.output.dir}) == 3


def test_a_staged_recipe_lists_its_stages_and_is_carded_stage_by_stage(tmp_path):
    """``model.init_recipe``: the recipe's earlier stages, first first (a loop is refused), and a
    card that gives each stage's steps and the time of all of them."""
    configs = Path(__file__).resolve().parents[1] / "recipes" / "default_model"
    one, two = tmp_path / "one.yaml", tmp_path / "two.yaml"
    one.write_text(f"model: {{preset: sbanet_lite}}\noutput: {{dir: {tmp_path / 'one'}}}\n")
    two.write_text(f"model: {{preset: sbanet_lite, init_recipe: {one}}}\noutput: {{dir: {tmp_path / 'two'}}}\n")
    three = load_config(configs / "config.yaml", [f"model.init_recipe={two}"])
    assert [path for path, _ in recipe.earlier_stages(three)] == [str(one), str(two)]
    one.write_text(f"model: {{preset: sbanet_lite, init_recipe: {two}}}\n")
    with pytest.raises(ValueError, match="leads back to itself"):
        recipe.earlier_stages(three)

    metadata = json.loads((SHIPPED_MODEL / "config.json").read_text())["metadata"]
    timing = {"threads": 1, "load_average": [1.0, 1.0, 1.0]}
    first = {"recipe_file": "configs/first.yaml", "recipe": metadata["recipe"],
             "training": {**timing, "wall_s": 600.0, "cpu_s": 590.0, "steps": 600}}  # fmt: skip
    staged = {**metadata, "stages": [first], "training": {**timing, "wall_s": 1200.0, "cpu_s": 1150.0, "steps": 400}}
    card = model_card.render_model_card(staged, 20.0)
    assert "in 2 stages run by the one command" in card
    assert "1. `configs/first.yaml`: 600 AdamW steps of batch 8" in card and "from ImageNet EfficientNet-Lite0" in card
    assert "2. `recipes/default_model/config.yaml`: 400 AdamW steps of batch 8" in card
    assert "Training time: 30 min wall-clock (10 + 20 min by stage), 29 min of CPU time" in card
    single = model_card.render_model_card({**metadata, "stages": None}, 20.0)
    assert "stages" not in single and f"{metadata['training']['steps']} AdamW steps" in single
    gpu = {"machine": "one NVIDIA H200 GPU", "note": "resumed once from its epoch checkpoint", "cpu_s": None}
    card = model_card.render_model_card({**metadata, "stages": None, "training": {**staged["training"], **gpu}}, 20.0)
    assert "Training time: 20 min wall-clock (1 thread(s), on one NVIDIA H200 GPU;" in card
    assert "min of CPU time" not in card and "Resumed once from its epoch checkpoint." in card
    chosen = model_card.render_model_card({**metadata, "stages": None, "selection": "Chosen on tile 6 by X."}, 20.0)
    assert "seed 0. Chosen on tile 6 by X." in chosen and provenance.SELECTION not in chosen


def _row(present: bool, area: float, inside: float | None, iou: float | None = None) -> dict:
    return {"present": present, "area_fraction": area, "mean_probability": inside, "iou": iou}


def test_calibration_keeps_present_cases_and_catches_absent_ones():
    present = [_row(True, 0.2, 0.9, 0.8)] * 15 + [_row(True, 0.1, 0.7, 0.3)] * 5
    absent = [_row(False, 0.004, 0.6)] * 6 + [_row(False, 0.05, 0.55)] * 4 + [_row(False, 0.3, 0.8)] * 2
    thresholds = model_report.calibrate(present + absent)
    # the grid's smallest cut that refuses no present case and catches the 10 weak absent ones
    assert thresholds.min_area_fraction <= 0.1 and 0.6 < thresholds.min_mean_probability <= 0.7
    counts = model_report.verdict_counts(present + absent, thresholds)
    assert counts["present"].get("nothing found", 0) == 0 and counts["absent"]["nothing found"] == 10
    assert 0.7 < thresholds.confident_mean_probability <= 0.9  # the IoU 0.3 masks are flagged, the 0.8 ones not
    assert counts["present"] == {"found": 15, "low confidence": 5}
    rows = [{**r, "category": "water", "image": "a"} for r in absent]
    rows.append({**absent[0], "category": "elsewhere", "image": "a"})
    summary = model_report.absent_summary(rows, thresholds)
    assert summary["below_1_percent"] == 6 and summary["nothing_found"] == 10 and summary["cases"] == 12
    assert summary["elsewhere"]["cases"] == 1 and summary["per_class_rate"] == {"water": 0.5}
    with pytest.raises(ValueError, match="present and absent"):
        model_report.calibrate(present)


def test_the_card_reports_wordings_absent_classes_verdicts_and_out_of_domain():
    usage = {
        "chance": {"class-level": 0.289, "instance-level": 0.152},
        "paraphrases": {"water": {"wordings": {"the water": 0.7, "the sea": 0.68}, "canonical": "the water",
                                  "spread": 0.02, "n": 9}},
        "absent": {"cases": 78, "images": 6, "below_1_percent": 72, "rate_below_1_percent": 72 / 78,
                   "nothing_found": 70, "median_area_fraction": 0.001, "per_class_rate": {},
                   "elsewhere": {"cases": 36, "below_1_percent": 30, "nothing_found": 33}},
        "thresholds": {"min_area_fraction": 0.01, "min_mean_probability": 0.6, "confident_mean_probability": 0.75},
        "calibrated": True,
        "verdicts": {"present": {"found": 80}, "absent": {"nothing found": 70}},
    }  # fmt: skip
    ood = {"spacenet: all buildings": {"n": 1, "chance": 0.042, "mean_iou": {"resize": 0.2}}}
    lines = "\n".join(model_card.usage_lines({"tile6_usage": usage, "out_of_domain": ood}))
    assert "class-level mIoU 28.9, instance-level 15.2" in lines
    assert '| water | 9 | "the water" 70.0, "the sea" 68.0 | 2.0 |' in lines
    assert "72 masks empty or below 1 % of the image (92 %)" in lines and "70 called" in lines
    assert "asked of every image: 30 of 36 masks below 1 %, 33 called" in lines
    assert "fitted on these tile-6 cases" in lines and "below 1.0 % of the image" in lines
    assert '"all buildings" IoU 0.200 (chance 0.042)' in lines
