"""Can a small learned head tell "the river is not in this image" where the mask statistics cannot?

    python -m benchmarks.presence_probe --json benchmarks/results/presence_probe.json

Issue 29 asks that absent classes be answered "nothing found" (goal >= 80 %) while present ones
are refused <= 5 %. The shipped model's verdict (:mod:`sbanet.inference.confidence`) reads two
statistics of its mask, and on GID's val images its absent-class masks cover a median half of the
image: 91 of 849 absent cases are caught. This probe measures the obvious next step, a presence
classifier on the frozen shipped model, before anything of it is built into the model:

* per (image, expression), features of one forward pass of the shipped v5
  (``sbanet/assets/sbanet-lite-landcover``, float32, whole image at its 320 px input):
  ``stats`` (mask area, mean probability, mean inside the mask, max, quantiles 0.5 / 0.9 / 0.99),
  ``sent`` (the mean-pooled, unit-length text features: what was asked), ``fused`` (the four
  language-fused stage maps pooled: mean, max, probability-weighted mean) and ``vis`` (the image
  encoder's language-free stages pooled: mean, probability-weighted mean);
* a two-layer perceptron (128 hidden, dropout 0.2, AdamW, 60 epochs; each (source, present /
  absent) group weighs the same) trained on the *training* images of the conversions the
  recipes train on, with every absent class asked (GID: ``gid-referring-whole``; Dubai tiles 1-5:
  ``dubai-referring-whole-asked`` and the 512 px crops ``dubai-referring-asked``);
* its threshold from 20 % of the training images held out: the largest of 0.01..0.90 that refuses
  at most 3 % of any source's present held-out cases;
* the verdict: "nothing found" when the mask covers < 1 % of the image or the head's presence
  probability is below the threshold (and, beside it, the shipped rule alone);
* scored on the val images, never trained on: Dubai tile 6 (each class-level / absent referent in
  the six wordings of the model report), GID val (gid5, gid15), and SpaceNet's crops (buildings and
  roads in the same six wordings, a source no recipe trains on: present cases only, so only
  refusals can be counted);
* trained on both sources, on Dubai only and on GID only (the leave-one-source-out check).

Missing conversions are made first (:func:`recipes.default_model.conversions.prepare_data`);
features are cached under ``runs/presence/`` (about 15 min on 2 CPU cores the first time).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

CACHE = Path("runs/presence")
MODEL = "sbanet/assets/sbanet-lite-landcover"
DATA = Path("runs/data")
FEATURE_SETS = ("stats,sent", "fused,stats,sent", "vis,stats,sent", "fused,vis,stats,sent")
TRAINED_ON = {"both": ("dubai", "gid"), "dubai only": ("dubai",), "gid only": ("gid",)}
# name -> (converted folder or "spacenet", split, ask in the model report's Dubai wordings)
PARTS = {
    "dubai_whole_train": ("dubai-referring-whole-asked", "train", False),
    "dubai_crops_train": ("dubai-referring-asked", "train", False),
    "gid5_train": ("gid-referring-whole/gid5", "train", False),
    "gid15_train": ("gid-referring-whole/gid15", "train", False),
    "dubai_whole_val": ("dubai-referring-whole-asked", "val", True),
    "gid5_val": ("gid-referring-whole/gid5", "val", False),
    "gid15_val": ("gid-referring-whole/gid15", "val", False),
    "spacenet_val": ("spacenet", "val", True),
}
SCORED = ("dubai_whole_val", "gid5_val", "gid15_val", "spacenet_val")
MIN_AREA = 0.01  # below this share of the image a mask is "nothing found" whatever the head says
PRESENT_BUDGET = 0.03  # held-out present cases a threshold may refuse, per source
THRESHOLDS = np.round(np.linspace(0.01, 0.90, 90), 2)


def source_of(part: str) -> str:
    return part.split("_")[0].rstrip("0123456789")


def samples_of(part: str) -> dict[str, list[Any]]:
    """The class-level and absent samples of ``part``, grouped by image."""
    import dataclasses

    from sbanet.data import load_samples

    folder, split, _ = PARTS[part]
    if folder == "spacenet":
        from benchmarks.finetune_loop import spacenet_crops

        samples = [
            dataclasses.replace(s, rule="class") for p in spacenet_crops(Path("../shared/data")).values() for s in p
        ]
    else:
        from recipes.default_model.conversions import DUBAI_INPUT, prepare_data

        root = DATA / folder
        prepare_data(DUBAI_INPUT, root)  # converts dubai-aerial or gid-mtl the first time, as the recipes do
        samples = load_samples("folder", root, split)
    groups: dict[str, list[Any]] = defaultdict(list)
    for sample in samples:
        if sample.rule in ("class", "absent"):
            groups[sample.image_id].append(sample)
    return dict(sorted(groups.items()))


def pooled(feature: Any, weight: Any) -> list[Any]:
    """``[K, C, h, w]`` map and ``[K, 1, H, W]`` probability -> mean, max and probability-weighted
    mean over the map, each ``[K, C]``."""
    import torch.nn.functional as F

    weight = F.interpolate(weight, size=feature.shape[-2:], mode="bilinear", align_corners=False)
    weighted = (feature * weight).sum((2, 3)) / weight.sum((2, 3)).clamp(min=1e-4)
    return [feature.mean((2, 3)), feature.amax((2, 3)), weighted]


def image_features(predictor: Any, image: Any, expressions: Sequence[str]) -> dict[str, np.ndarray]:
    """The four feature groups of the module docstring for one image and its ``K`` expressions."""
    import torch

    from sbanet.modeling.correction_head import sentence_embedding

    model = predictor.model
    with torch.inference_mode():
        images, _ = predictor.preprocess(image)
        _, mask, text = predictor.encode_texts(list(expressions))
        prefix = model.encode_image_prefix(images)
        k = len(expressions)
        maps, _ = model.decoder_inputs(prefix.expand(k, -1, -1, -1), text, mask)
        probability = model.probability(model.decoder(maps)).unsqueeze(1)  # [K, 1, H/4, W/4]
        fused = torch.cat([torch.cat(pooled(f, probability), 1) for f in maps], 1)
        visual = [v.expand(k, -1, -1, -1) for v in model.visual_pyramid(prefix)]
        vis = torch.cat([torch.cat(pooled(v, probability)[::2], 1) for v in visual], 1)
        flat = probability.flatten(1)
        inside = flat > 0.5
        quantiles = torch.quantile(flat, torch.tensor([0.5, 0.9, 0.99]), dim=1).T
        stats = torch.cat(
            [
                inside.float().mean(1, keepdim=True),
                flat.mean(1, keepdim=True),
                ((flat * inside).sum(1) / inside.sum(1).clamp(min=1))[:, None],
                flat.amax(1, keepdim=True),
                quantiles,
            ],
            1,
        )
        sent = sentence_embedding(text, mask)
    return {"fused": fused.numpy(), "vis": vis.numpy(), "stats": stats.numpy(), "sent": sent.numpy()}


def extract(part: str, predictor: Any) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """Features and rows (image, category, rule, wording, present) of ``part``, cached."""
    from sbanet.data.wording import DUBAI_PARAPHRASES

    path = CACHE / f"{part}.npz"
    rows_path = CACHE / f"{part}.npz.rows.json"
    if path.is_file() and rows_path.is_file():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}, json.loads(rows_path.read_text())
    _, _, paraphrase = PARTS[part]
    features: dict[str, list[np.ndarray]] = defaultdict(list)
    rows = []
    start = time.time()
    for image_id, samples in samples_of(part).items():
        asked = [
            (s, w)
            for s in samples
            for w in (DUBAI_PARAPHRASES.get(s.category, ()) if paraphrase else ()) or (s.expression,)
        ]
        for key, value in image_features(predictor, samples[0].load_image(), [w for _, w in asked]).items():
            features[key].append(value)
        truth = {s.sample_id: np.asarray(s.load_mask(), bool) for s in samples}
        rows += [
            {
                "image": image_id,
                "category": s.category,
                "rule": s.rule,
                "wording": w,
                "present": bool(truth[s.sample_id].any()),
            }
            for s, w in asked
        ]
    arrays = {k: np.concatenate(v) for k, v in features.items()}
    arrays["present"] = np.array([r["present"] for r in rows])
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    rows_path.write_text(json.dumps(rows))
    print(
        f"{part}: {len(rows)} cases of {len(set(r['image'] for r in rows))} images, {time.time() - start:.0f} s",
        flush=True,
    )
    return arrays, rows


def design(arrays: dict[str, np.ndarray], feature_set: str) -> np.ndarray:
    return np.concatenate([arrays[name] for name in feature_set.split(",")], 1).astype(np.float32)


def fit_head(x: np.ndarray, present: np.ndarray, groups: np.ndarray, seed: int = 0, epochs: int = 60) -> Any:
    """The probe: standardised inputs -> 128 -> presence logit, each (group, present) cell weighing
    the same in the loss. Returns ``features [N, F] -> presence probability [N]``."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    mean, std = x.mean(0), x.std(0) + 1e-4
    inputs, target = torch.tensor((x - mean) / std), torch.tensor(present, dtype=torch.float32)
    weight = np.zeros(len(present), np.float32)
    for group in np.unique(groups):
        for value in (False, True):
            cell = (groups == group) & (present == value)
            weight[cell] = 1.0 / max(int(cell.sum()), 1)
    weights = torch.tensor(weight / weight.mean())
    net = nn.Sequential(nn.Dropout(0.2), nn.Linear(x.shape[1], 128), nn.ReLU(), nn.Dropout(0.2), nn.Linear(128, 1))
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-3)
    for _ in range(epochs):
        order = torch.randperm(len(target), generator=generator)
        for i in range(0, len(order), 256):
            batch = order[i : i + 256]
            loss = nn.functional.binary_cross_entropy_with_logits(
                net(inputs[batch])[:, 0], target[batch], reduction="none"
            )
            optimizer.zero_grad()
            (loss * weights[batch]).mean().backward()
            optimizer.step()
    net.eval()

    def presence(features: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.sigmoid(net(torch.tensor((features - mean) / std))[:, 0]).numpy()

    return presence


def choose_threshold(probability: np.ndarray, present: np.ndarray, groups: np.ndarray, budget: float) -> float:
    """The largest of :data:`THRESHOLDS` under which at most ``budget`` of every group's present
    cases fall (0.0 when even the smallest refuses more)."""
    best = 0.0
    for threshold in THRESHOLDS:
        worst = max(
            float((probability[present & (groups == g)] < threshold).mean()) for g in np.unique(groups[present])
        )
        if worst <= budget:
            best = float(threshold)
    return best


def verdict_rates(refused: np.ndarray, present: np.ndarray) -> dict[str, Any]:
    absent = ~present
    return {
        "absent": int(absent.sum()),
        "absent_nothing_found": int(refused[absent].sum()),
        "present": int(present.sum()),
        "present_refused": int(refused[present].sum()),
    }


def probe(
    parts: dict[str, tuple[dict[str, np.ndarray], list[dict[str, Any]]]], feature_set: str, sources: Sequence[str]
) -> dict[str, Any]:
    """Train the probe on ``sources``' training parts; its threshold, and the verdicts on the
    scored parts (the head with the 1 % area rule, and the shipped rule)."""
    train = [p for p in parts if p.endswith("_train") and source_of(p) in sources]
    x = np.concatenate([design(parts[p][0], feature_set) for p in train])
    present = np.concatenate([parts[p][0]["present"] for p in train])
    groups = np.concatenate([[source_of(p)] * len(parts[p][1]) for p in train])
    images = np.concatenate([[f"{p}/{r['image']}" for r in parts[p][1]] for p in train])
    unique = np.unique(images)
    held = np.isin(images, np.random.default_rng(0).choice(unique, len(unique) // 5, replace=False))
    head = fit_head(x[~held], present[~held], groups[~held])
    threshold = choose_threshold(head(x[held]), present[held], groups[held], PRESENT_BUDGET)
    head = fit_head(x, present, groups)
    result: dict[str, Any] = {
        "features": feature_set,
        "trained_on": list(sources),
        "threshold": threshold,
        "scored": {},
    }
    for part in SCORED:
        arrays, _ = parts[part]
        probability, stats = head(design(arrays, feature_set)), arrays["stats"]
        truth = arrays["present"]
        result["scored"][part] = {
            "head": verdict_rates((stats[:, 0] < MIN_AREA) | (probability < threshold), truth),
            "head_at": {
                f"{t:.2f}": verdict_rates((stats[:, 0] < MIN_AREA) | (probability < t), truth)
                for t in (0.01, 0.05, 0.2)
            },
        }
    return result


def shipped(parts: dict[str, tuple[dict[str, np.ndarray], list[dict[str, Any]]]], thresholds: Any) -> dict[str, Any]:
    """The "nothing found" rule of :func:`sbanet.inference.confidence.judge` with the checkpoint's own
    ``thresholds`` (area below ``min_area_fraction`` or mean probability inside below
    ``min_mean_probability``; an empty mask's inside counts as 0), on the features' statistics: the
    1/4-resolution map, so close to but not the source report's counts at the image's size."""
    area, probability = thresholds.min_area_fraction, thresholds.min_mean_probability
    return {
        part: verdict_rates(
            (parts[part][0]["stats"][:, 0] < area) | (parts[part][0]["stats"][:, 2] < probability),
            parts[part][0]["present"],
        )
        for part in SCORED
    }


def markdown(results: list[dict[str, Any]], rule: dict[str, Any]) -> str:
    def cell(r: dict[str, Any]) -> str:
        caught = f"{r['absent_nothing_found']}/{r['absent']}" if r["absent"] else "-"
        return f"{caught}, {r['present_refused']}/{r['present']}"

    lines = [
        "| head | trained on | threshold | " + " | ".join(SCORED) + " |",
        "| --- | --- | --- |" + " --- |" * len(SCORED),
        "| shipped rule (no head) | - | - | " + " | ".join(cell(rule[p]) for p in SCORED) + " |",
    ]
    for r in results:
        scored = " | ".join(cell(r["scored"][p]["head"]) for p in SCORED)
        lines.append(f"| {r['features']} | {', '.join(r['trained_on'])} | {r['threshold']:.2f} | {scored} |")
    return "\n".join(lines) + "\n\ncells: absent answered 'nothing found' / absent, present refused / present\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--features", nargs="+", default=list(FEATURE_SETS), help="feature sets, e.g. stats,sent")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    from sbanet.inference.predictor import Predictor

    predictor = Predictor.from_pretrained(MODEL, fast=False)
    parts = {part: extract(part, predictor) for part in PARTS}
    results = [probe(parts, f, sources) for f in args.features for sources in TRAINED_ON.values()]
    rule = shipped(parts, predictor.thresholds)  # the calibrated thresholds in the checkpoint's metadata
    print(markdown(results, rule))
    if args.json:
        args.json.write_text(json.dumps({"model": MODEL, "shipped_rule": rule, "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
