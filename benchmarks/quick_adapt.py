"""Quick adaptation on two new domains: the shipped model, N corrections of SpaceNet buildings or
roads, the decoder (or the late layers) fitted on cached maps (:mod:`sbanet.training.adapt`, the
fine-tune job's ``mode="quick"``, at ``quick_scale`` x the base's input size), test IoU before and
after, and what it forgot on dubai tile 6.

    python -m benchmarks.quick_adapt                                  # N = 1 3 5 10 30, 3 seeds
    python -m benchmarks.quick_adapt --domains building --ns 5 --seeds 0 --set quick_lr=0.003
    python -m benchmarks.quick_adapt --level late --set quick_train=late   # the late layers train
    python -m benchmarks.quick_adapt --set quick_scale=1.0                 # v1: at the base's size

* **Data**: :func:`benchmarks.finetune_loop.spacenet_crops`' held-out (``val``) and test crops of
  each scene; the correction pool is the same left half of the scene cut at quarter-crop strides
  (51 building crops, 43 road crops) so that N = 30 corrections exist per domain. Replay: a
  seeded draw of the base recipe's first training folder (``runs/data/dubai-referring-asked-cap10``
  as ``recipes.default_model.train`` converts it); forgetting: the class-level expressions of tile 6 whole
  images (``runs/data/dubai-referring-whole``), base mIoU minus adapted mIoU.
* **Cache**: what does not change between runs (the frozen part's output for every pool crop
  under its 8 flips / turns, and for the held-out, test, tile-6 and replay samples) is computed
  once and kept in ``--cache``; every run then is exactly the quick job's training
  (:func:`sbanet.training.adapt.adapt_decoder` with :class:`FinetuneConfig`'s ``quick_*``
  defaults, ``--set`` overrides) from the same base weights. Scores are computed on the cached
  features, as :func:`sbanet.training.evaluation.evaluate` computes them at the input size.
* **Selection**: ``uncertainty`` corrects the N pool crops the base is least sure of (mean over
  pixels of ``1 - |2p - 1|``), ``random`` a seeded draw; both nested in N. Uncertainty with
  diversity, on label-free descriptors of the crops (:func:`pool_descriptors`): ``diverse``
  (:func:`greedy_diverse`, nested) and ``cluster`` (:func:`cluster_diverse`, the least sure crop
  of each of N k-means clusters).
* **Time**: ``seconds`` is the training alone; a whole job run (features computed, held-out
  check, save, register) is timed by ``python -m benchmarks.finetune_loop --set mode=quick``.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.finetune_loop import CATEGORIES, MIN_COVERAGE, TILE6, _crop, _setting, spacenet_crops, tile6_samples
from recipes.default_model.scale import DATA, spacenet_scenes

REPLAY_ROOT = Path("runs/data/dubai-referring-asked-cap10")
RULES = ("uncertainty", "diverse", "cluster")  # label-free selections (+ "random")
REPLAY_POOL = 64  # replay samples cached; a run draws quick_replay of them (seeded)


def pool_crops(data: Path, category: str) -> list[Any]:
    """The correction pool of one domain: the scene's left half at quarter-crop strides."""
    from sbanet.data import ReferringSample

    crops = []
    for image, truth in spacenet_scenes(data / "spacenet-sample"):
        (expression, mask), image = next(iter(truth.items())), np.asarray(image)
        if CATEGORIES[expression] != category:
            continue
        (height, width), size = mask.shape, mask.shape[1] // 4
        for y in range(0, height - size + 1, size // 4):
            for x in range(0, width // 2 - size + 1, size // 4):
                if _crop(mask, y, x, size).mean() < MIN_COVERAGE:
                    continue
                sample_id = f"spacenet/{category}/pool/y{y}-x{x}"
                load_image, load_mask = partial(_crop, image, y, x, size), partial(_crop, mask, y, x, size)
                crops.append(
                    ReferringSample(sample_id, sample_id, expression, "train", load_image, load_mask, category)
                )
    return crops


def model_fingerprint(model: Any, level: str, size: int | None) -> str:
    """A digest of ``model``'s weights, the cache ``level`` and input ``size``: a cache built from
    another base (v4's, before v5 shipped) must not be read as this one's features."""
    import hashlib

    digest = hashlib.sha1(f"{level}/{size}".encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def build_cache(
    model: Any,
    tokenizer: Any,
    data: Path,
    domains: list[str],
    tile6: Path,
    path: Path,
    level: str = "decoder",
    size: int | None = None,
) -> dict:
    """Every frozen feature a run needs (see the module docstring), computed once and saved;
    ``level`` as :func:`sbanet.training.adapt.cache_features` takes it, at input size ``size``
    (None: the model's)."""
    import torch

    from annotate.jobs.finetune_data import draw_replay
    from sbanet.data import ReferringDataset, load_samples
    from sbanet.training.adapt import cache_features

    c = model.config

    def features(samples: list[Any], transforms: int = 1) -> Any:
        dataset = ReferringDataset(
            samples, size or c.image_size, tokenizer, c.max_tokens, c.pixel_mean, c.pixel_std, augment=transforms > 1
        )
        return cache_features(model, dataset, transforms, level=level)

    crops = spacenet_crops(data)
    cache: dict[str, Any] = {}
    for domain in domains:
        started = time.perf_counter()
        pool = pool_crops(data, domain)
        cache[domain] = {
            "pool_ids": [s.sample_id for s in pool],
            "pool": features(pool, 8),
            "val": features([s for s in crops["val"] if s.category == domain]),
            "test": features([s for s in crops["test"] if s.category == domain]),
        }
        print(f"{domain}: {len(pool)} pool crops x 8 cached in {time.perf_counter() - started:.0f} s", flush=True)
    replay = draw_replay(load_samples("folder", REPLAY_ROOT, "train"), REPLAY_POOL, 0)
    cache["replay"] = features(replay)
    cache["tile6"] = features(tile6_samples(tile6)) if (tile6 / "samples_val.jsonl").is_file() else None
    cache["fingerprint"] = model_fingerprint(model, level, size)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(cache, path)
    return cache


def _map_caches(value: Any, fn: Any) -> Any:
    """``fn`` applied to every feature cache in a cache file's (nested) dicts."""
    from sbanet.training.adapt import FeatureCache

    if isinstance(value, FeatureCache):
        return fn(value)
    return {k: _map_caches(v, fn) for k, v in value.items()} if isinstance(value, dict) else value


def rows_of(cache: Any, rows: list[int]) -> Any:
    """The cached rows ``rows`` as a cache of their own."""
    return cache.select(rows)


def uncertainty_scores(model: Any, pool: Any) -> np.ndarray:
    """Each pool crop's mean uncertainty under the base (rows of transform 0): ``float [crops]``."""
    import torch
    import torch.nn.functional as F

    from annotate.store.masks import mean_uncertainty
    from sbanet.training.adapt import cached_logits

    scores = []
    with torch.no_grad():
        for i in range(len(pool) // 8):
            logits = cached_logits(model, pool.select(slice(8 * i, 8 * i + 1)))
            p = F.interpolate(logits, size=pool.masks.shape[-2:], mode="bilinear", align_corners=True).softmax(1)
            scores.append(mean_uncertainty(p[0, 1].numpy()))
    return np.asarray(scores)


def uncertainty_order(scores: np.ndarray) -> list[int]:
    """Pool crops least sure first (``scores`` from :func:`uncertainty_scores`): the review
    queue's order."""
    return [int(i) for i in np.argsort(scores, kind="stable")[::-1]]


def _first(order: list[int], n: int) -> list[int]:
    return order[:n]


def pool_descriptors(pool: Any) -> np.ndarray:
    """Each pool crop described by the spatial means of its image-encoder stages (transform 0),
    standardised over the pool: what the correction heads read, no labels. ``float [crops, sum C_i]``."""
    if pool.pyramid is None:
        raise ValueError("the diverse rules need a cache with the image pyramid (level='head')")
    rows = slice(0, len(pool), 8)
    described = np.concatenate([f[rows].float().mean((-2, -1)).numpy() for f in pool.pyramid], axis=1)
    return (described - described.mean(0)) / np.maximum(described.std(0), 1e-6)


def greedy_diverse(scores: np.ndarray, described: np.ndarray, n: int) -> list[int]:
    """Uncertainty x distance, nested in N: the least sure crop first, then each time the crop
    with the largest uncertainty x distance to the nearest crop already chosen."""
    order = [int(np.argmax(scores))]
    nearest = np.linalg.norm(described - described[order[0]], axis=1)
    while len(order) < n:
        value = scores * nearest
        value[order] = -np.inf
        order.append(int(np.argmax(value)))
        nearest = np.minimum(nearest, np.linalg.norm(described - described[order[-1]], axis=1))
    return order


def cluster_diverse(scores: np.ndarray, described: np.ndarray, n: int, iterations: int = 20) -> list[int]:
    """Uncertainty within diversity (not nested in N): the crops in ``n`` k-means clusters of
    their descriptors (initialised farthest-first from the least sure crop), the least sure of
    each cluster."""
    centres = described[greedy_diverse(np.ones_like(scores), described, n)]
    centres[0] = described[int(np.argmax(scores))]
    for _ in range(iterations):
        label = np.linalg.norm(described[:, None] - centres[None], axis=2).argmin(1)
        centres = np.stack([described[label == k].mean(0) if (label == k).any() else centres[k] for k in range(n)])
    label = np.linalg.norm(described[:, None] - centres[None], axis=2).argmin(1)
    chosen = [int(np.flatnonzero(label == k)[np.argmax(scores[label == k])]) for k in range(n) if (label == k).any()]
    rest = [int(i) for i in np.argsort(scores, kind="stable")[::-1] if i not in chosen]
    return (chosen + rest)[:n]


def run_one(model: Any, base: dict, cache: dict, domain: str, task: dict, config: Any) -> dict[str, Any]:
    """One quick adaptation from the base decoder; its test IoU, tile-6 mIoU, kept step, time."""
    from sbanet.training.adapt import adapt_decoder, evaluate_cached

    model.correction, model.config = None, model.config.replace(correction_keys=())  # a head run's heads go
    model.load_state_dict(base)
    pool = cache[domain]["pool"]
    rows = [8 * i + t for i in task["chosen"] for t in range(config.transforms)]
    replay = None
    if task["replay"]:
        drawn = np.random.default_rng(task["seed"]).permutation(len(cache["replay"]))[: task["replay"]]
        replay = rows_of(cache["replay"], sorted(int(i) for i in drawn))
    started = time.perf_counter()
    result = adapt_decoder(model, rows_of(pool, rows), config, replay=replay, held_out=cache[domain]["val"])
    seconds = time.perf_counter() - started
    tile6 = evaluate_cached(model, cache["tile6"])["mIoU"] if cache["tile6"] is not None else None
    return {
        **{k: task[k] for k in ("domain", "n", "rule", "seed")},
        "test_iou": float(evaluate_cached(model, cache[domain]["test"])["mIoU"]),
        "held_out": [result.history[0]["mIoU"], max(h["mIoU"] for h in result.history)],
        "tile6_class_mIoU": None if tile6 is None else float(tile6),
        "kept_step": result.kept_step,
        "seconds": round(seconds, 1),
    }


def summarize(rows: list[dict[str, Any]], base: dict[str, Any]) -> list[dict[str, Any]]:
    """Means over seeds per (domain, N, rule), with the forgetting on tile 6."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["domain"], row["n"], row["rule"]), []).append(row)
    out = []
    for (domain, n, rule), group in sorted(groups.items()):
        entry = {"domain": domain, "n": n, "rule": rule, "seeds": len(group)}
        entry["test_iou"] = float(np.mean([r["test_iou"] for r in group]))
        tile6 = [r["tile6_class_mIoU"] for r in group if r["tile6_class_mIoU"] is not None]
        if tile6 and base.get("tile6_class_mIoU") is not None:
            entry["forgetting"] = base["tile6_class_mIoU"] - float(np.mean(tile6))
        entry["max_seconds"] = max(r["seconds"] for r in group)
        out.append(entry)
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="base checkpoint folder (default: the shipped model)")
    parser.add_argument("--data", type=Path, default=DATA, help="the shared data folder")
    parser.add_argument("--tile6", type=Path, default=TILE6, help="the whole-image dubai conversion (forgetting)")
    parser.add_argument("--domains", nargs="+", default=["building", "road"], choices=["building", "road"])
    parser.add_argument("--ns", nargs="+", type=int, default=[1, 3, 5, 10, 30])
    parser.add_argument("--rules", nargs="+", default=["uncertainty", "random"], choices=[*RULES, "random"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--set", type=_setting, action="append", default=[], help="a FinetuneConfig quick_* field")
    parser.add_argument(
        "--cache", type=Path, default=None, help="the feature cache (default: runs/quick-adapt-cache-LEVEL[-SIZE].pt)"
    )
    parser.add_argument(
        "--level", choices=["decoder", "late", "head"], default=None,
        help="cache level (default: what quick_train needs)",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/quick_adapt.json"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.data / "spacenet-sample").is_dir():
        print(f"error: {args.data} lacks spacenet-sample/ (../shared/data/README.md)", file=sys.stderr)
        return 2
    if not REPLAY_ROOT.is_dir():
        print(f"error: no {REPLAY_ROOT}: run recipes.default_model.train's conversion first", file=sys.stderr)
        return 2
    import torch

    from annotate.jobs.finetune_data import FinetuneConfig, quick_size
    from annotate.jobs.finetune_quick import adapt_config
    from sbanet.checkpoint import load_pretrained
    from sbanet.inference.shipped import default_model_source
    from sbanet.training.adapt import UPSTREAM, cache_level, decoder_level, evaluate_cached

    torch.set_num_threads(1)
    finetune = FinetuneConfig(mode="quick", **dict(args.set))
    config = adapt_config(finetune)
    source = str(args.model or default_model_source())
    model, tokenizer = load_pretrained(source)
    model.eval()
    level = args.level or cache_level(config.train)
    size = quick_size(finetune, model.config.image_size)
    suffix = "" if size == model.config.image_size else f"-{size}"
    path = args.cache or Path(f"runs/quick-adapt-cache-{level}{suffix}.pt")
    cache = torch.load(path, weights_only=False) if path.is_file() else None
    if cache is not None and cache.get("fingerprint") != model_fingerprint(model, level, size):
        print(f"{path} was built from other weights (or before caches were fingerprinted): rebuilding", flush=True)
        cache = None
    if cache is None or any(d not in cache for d in args.domains):
        cache = build_cache(model, tokenizer, args.data, args.domains, args.tile6, path, level, size)
    if config.train not in (*UPSTREAM, "head"):  # a late cache serves the decoder modes once TCSA has run over it
        cache = {k: _map_caches(v, partial(decoder_level, model)) for k, v in cache.items()}
    base_state = copy.deepcopy(model.state_dict())
    base = {d: float(evaluate_cached(model, cache[d]["test"])["mIoU"]) for d in args.domains}
    base["tile6_class_mIoU"] = float(evaluate_cached(model, cache["tile6"])["mIoU"]) if cache["tile6"] else None
    result = {
        "model": source,
        "command": " ".join(["python -m benchmarks.quick_adapt", *(argv if argv is not None else sys.argv[1:])]),
        "adapt": config.to_dict(),
        "replay": finetune.quick_replay,
        "base": base,
        "runs": [],
    }
    print(f"base: {base}", flush=True)
    for domain in args.domains:
        scores = uncertainty_scores(model, cache[domain]["pool"])
        described = pool_descriptors(cache[domain]["pool"])
        rules = {
            "uncertainty": partial(_first, uncertainty_order(scores)),
            "diverse": partial(greedy_diverse, scores, described),
            "cluster": partial(cluster_diverse, scores, described),
        }
        pool_size = len(cache[domain]["pool"]) // 8
        for seed in args.seeds:  # seed-major: a run stopped early still has every N of the first seeds
            for n in args.ns:
                for rule in args.rules:
                    picked = (
                        np.random.default_rng(seed).permutation(pool_size)[:n] if rule == "random" else rules[rule](n)
                    )
                    task = {"domain": domain, "n": n, "rule": rule, "seed": seed, "replay": finetune.quick_replay}
                    task["chosen"] = sorted(int(i) for i in picked)
                    config.seed = seed
                    row = run_one(model, base_state, cache, domain, task, config)
                    result["runs"].append(row)
                    print(json.dumps(row), flush=True)
                    result["summary"] = summarize(result["runs"], base)
                    args.json.parent.mkdir(parents=True, exist_ok=True)
                    args.json.write_text(json.dumps(result, indent=1))
    print("| domain | N | selection | test IoU (mean over seeds) | tile-6 forgetting | slowest training |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    for s in result["summary"]:
        forgetting = f"{s['forgetting']:.3f}" if "forgetting" in s else "-"
        cells = f"{s['test_iou']:.3f} | {forgetting} | {s['max_seconds']:.0f} s"
        print(f"| {s['domain']} | {s['n']} | {s['rule']} | {cells} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
