"""Which configurations a benchmark run measures, and running each in a fresh process.

Parts (``python -m benchmarks.bench --parts ...``):

* ``speed``: ``sbanet_swin_b`` as the LAVT baseline and as full SBANet, eager, the fast path
  and (CPU) the fast path with int8 Swin linears, one 448x448 image + one 20-token expression
  (plus the fast path with cached text), in each of ``precisions``, on ``device`` (CPU or CUDA);
* ``multi``: the fast path with K = 1, 2, 4, 8 expressions on one image, the K expressions run
  one at a time (chunk 1) and all in one batch (chunk K) after the shared prefix, for
  ``sbanet_swin_b`` and the shipped default model; and the shipped model's seconds per stage
  at batch 1 and batch K (what decides the rule of :func:`sbanet.inference.runtime.expression_chunk`);
* ``small``: ``sbanet_lite`` and ``sbanet_tiny``, eager and fast;
* ``agreement``: fast path (and int8) against fp32 eager on real images (``sbanet_swin_b``
  random weights, ``sbanet_lite`` with its pretrained encoders);
* ``train``: training samples/s per preset (forward + backward + AdamW step);
* ``profile``: seconds per component and the top operators, eager and fast;
* ``precision``: agreement with fp32 per component in bf16, and of the whole model, on the
  dubai-aerial tile 6 images (:mod:`.components`), for the shipped default model.

Timed configurations run ``rounds`` times in round-robin order, each time in a new process,
so slow drifts of a shared machine's load spread over all of them instead of biasing one.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .measure import Case

PARTS = ("speed", "multi", "small", "agreement", "train", "profile", "precision")
TIMED_KINDS = ("inference",)
RESULT_MARKER = "SBANET_BENCH_RESULT "
AGREEMENT_TEXTS = ("the water", "the buildings", "the roads", "the vegetation")
SMALL_PRESETS = ("sbanet_lite", "sbanet_tiny")
TRAIN_PRESETS = ("sbanet_tiny", "sbanet_lite", "sbanet_swin_b")


@dataclass
class Settings:
    """Everything a run depends on (stored in the JSON next to the results)."""

    parts: tuple[str, ...] = PARTS
    repeats: int = 5
    warmup: int = 1
    rounds: int = 1
    threads: int | None = None
    image_size: int = 448
    tokens: int = 20
    expressions: tuple[int, ...] = (1, 2, 4, 8)
    data: str = "../shared/data/dubai-aerial"
    images: int = 4
    texts: tuple[str, ...] = AGREEMENT_TEXTS
    train_presets: tuple[str, ...] = TRAIN_PRESETS
    train_steps: int = 3
    train_warmup: int = 1
    batch: int = 2
    train_image_size: int | None = None  # None: each preset's own image_size
    device: str = "cpu"
    dtype: str = "fp32"
    precisions: tuple[str, ...] = ("fp32",)  # inference precisions of the speed and multi parts
    multi_models: tuple[str, ...] = ("sbanet_swin_b", "shipped")  # the multi part's models
    timeout: float = 3600.0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.parts) - set(PARTS))
        if unknown:
            raise ValueError(f"unknown parts {unknown}; choose from {list(PARTS)}")
        bad = sorted(set(self.precisions) - {"fp32", "bf16", "fp16"})
        if bad or not self.precisions:
            raise ValueError(f"precisions must be among fp32, bf16, fp16, got {list(self.precisions)}")
        if "fp16" in self.precisions and self.device.split(":")[0] != "cuda":
            raise ValueError("precision fp16 runs on CUDA only: pass --device cuda or leave fp16 out")
        if not self.multi_models or set(self.multi_models) - {"sbanet_swin_b", "shipped"}:
            raise ValueError(f"multi models must be among sbanet_swin_b, shipped, got {list(self.multi_models)}")
        if min(self.repeats, self.rounds, self.train_steps, self.images) < 1 or min(self.warmup, self.train_warmup) < 0:
            raise ValueError("repeats, rounds, train steps and images must be >= 1, warm-ups >= 0")


def real_images(data: str | Path, count: int) -> list[str]:
    """The first ``count`` dubai-aerial images (one per tile first, then the next of each tile)."""
    root = Path(data)
    if not root.is_dir():
        raise ValueError(f"real images not found at {root} (pass --data DIR, or leave out the agreement part)")
    tiles = [sorted(p for p in tile.glob("*.jpg")) for tile in sorted(root.glob("tile*"))]
    ordered = [
        img for rank in range(max(map(len, tiles), default=0)) for t in tiles if rank < len(t) for img in [t[rank]]
    ]
    if not ordered:
        raise ValueError(f"no tile*/*.jpg images under {root}")
    return [str(p) for p in ordered[:count]]


def build_cases(s: Settings) -> list[Case]:
    """The configurations the selected parts need (timed ones first, in round-robin order)."""
    from sbanet.inference.shipped import SHIPPED_MODEL

    common = dict(
        image_size=s.image_size, tokens=s.tokens, repeats=s.repeats, warmup=s.warmup, threads=s.threads, device=s.device
    )
    swin = dict(kind="inference", preset="sbanet_swin_b", **common)
    shipped = dict(kind="inference", preset="sbanet_lite", checkpoint=str(SHIPPED_MODEL), **common)
    on_cpu = s.device.split(":")[0] == "cpu"
    cases: list[Case] = []
    if "speed" in s.parts:
        for precision in s.precisions:
            for ablation in ("lavt", "full"):
                for path in ("eager", "fast", "int8") if on_cpu else ("eager", "fast"):
                    cases.append(Case(ablation=ablation, path=path, precision=precision, **swin))
        cases.append(Case(ablation="full", path="fast", cached_text=True, **swin))
    if "multi" in s.parts:
        for precision in s.precisions:
            for model in [{"sbanet_swin_b": swin, "shipped": shipped}[m] for m in s.multi_models]:
                for k in s.expressions:
                    for chunk in sorted({1, k}):
                        if not (k == 1 and "speed" in s.parts and model is swin):
                            cases.append(Case(path="fast", expressions=k, chunk=chunk, precision=precision, **model))
        for k in sorted({1, max(s.expressions)}):
            cases.append(Case(**{**shipped, "kind": "profile", "repeats": 2, "expressions": k}))
    if "small" in s.parts:
        for preset in SMALL_PRESETS:
            for path in ("eager", "fast"):
                cases.append(Case(kind="inference", preset=preset, path=path, **common))
            cases.append(Case(kind="inference", preset=preset, path="fast", cached_text=True, **common))
    if "agreement" in s.parts:
        images = real_images(s.data, s.images)
        agree = dict(kind="agreement", images=images, texts=list(s.texts), threads=s.threads, image_size=s.image_size)
        cases.append(Case(preset="sbanet_swin_b", path="fast", **agree))
        cases.append(Case(preset="sbanet_swin_b", path="int8", **agree))
        cases.append(Case(preset="sbanet_lite", path="fast", pretrained=True, **agree))
    if "train" in s.parts:
        from sbanet.build import PRESET_CONFIGS

        for preset in s.train_presets:
            if preset not in PRESET_CONFIGS:
                raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESET_CONFIGS)}")
            size = s.train_image_size or PRESET_CONFIGS[preset]().image_size
            cases.append(
                Case(
                    kind="train", preset=preset, image_size=size, tokens=s.tokens, batch=s.batch,
                    repeats=s.train_steps, warmup=s.train_warmup, device=s.device, dtype=s.dtype, threads=s.threads,
                )
            )  # fmt: skip
    if "precision" in s.parts:
        images = [str(p) for p in sorted((Path(s.data) / "tile6").glob("*.jpg"))][: s.images]
        if not images:
            raise ValueError(f"no tile6/*.jpg under {s.data} (pass --data DIR, or leave out the precision part)")
        cases.append(
            Case(
                kind="components", preset="sbanet_lite", checkpoint=str(SHIPPED_MODEL), images=images,
                texts=list(s.texts[:2]), precision="bf16", threads=s.threads, device=s.device,
            )
        )  # fmt: skip
    if "profile" in s.parts:
        for preset in ("sbanet_swin_b", "sbanet_lite"):
            for path in ("eager", "fast"):
                cases.append(Case(kind="profile", preset=preset, path=path, **{**common, "repeats": 2}))
    return cases


def run_in_subprocess(case: Case, timeout: float) -> dict[str, Any]:
    """Run ``case`` in a fresh ``python -m benchmarks.speed`` process; its result, or
    ``{"error": ...}`` when it failed or timed out (the run goes on with the other cases)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    command = [sys.executable, "-m", "benchmarks.speed", "--case", json.dumps(case.to_dict())]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER) :])
    tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
    return {"error": f"exit code {done.returncode}: {tail}"}


def case_key(case: Case) -> str:
    """Cases that differ only by the round they ran in share a key (their timings are pooled)."""
    return json.dumps({k: v for k, v in case.to_dict().items() if k not in ("repeats", "warmup")}, sort_keys=True)


def spread(times: list[float]) -> dict[str, float]:
    """Median, quartiles (IQR), min and max of ``times`` (seconds)."""
    ordered = sorted(times)
    q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive") if len(ordered) > 1 else ordered * 3
    return {
        "median": statistics.median(ordered),
        "q1": q1,
        "q3": q3,
        "iqr": q3 - q1,
        "min": ordered[0],
        "max": ordered[-1],
        "n": len(ordered),
    }


def run_suite(settings: Settings, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Measure every case (timed ones ``rounds`` times, round-robin); one record per case with
    its pooled ``stats``, the largest peak RSS seen, and every round's raw result."""
    cases = build_cases(settings)
    timed = [c for c in cases if c.kind in TIMED_KINDS]
    once = [c for c in cases if c.kind not in TIMED_KINDS]
    schedule = [c for _ in range(settings.rounds) for c in timed] + once
    records: dict[str, dict[str, Any]] = {}
    for i, case in enumerate(schedule, 1):
        model = Path(case.checkpoint).name if case.checkpoint else case.preset
        label = f"{case.kind} {model} {case.ablation} {case.path} {case.precision} K={case.expressions}"
        label += f" chunk={case.chunk}" if case.chunk else ""
        log(f"[{i}/{len(schedule)}] {label}{' (cached text)' if case.cached_text else ''}")
        result = run_in_subprocess(case, settings.timeout)
        if "error" in result:
            log(f"    failed: {result['error']}")
        record = records.setdefault(case_key(case), {"case": case.to_dict(), "rounds": []})
        record["rounds"].append(result)
    for record in records.values():
        ok = [r for r in record["rounds"] if "error" not in r]
        times = [t for r in ok for t in r.get("times", [])]
        if times:
            record["stats"] = spread(times)
        if ok:
            record["peak_rss_mb"] = max(r["peak_rss_mb"] for r in ok)
            peaks = [r["inference_peak_rss_mb"] for r in ok if r.get("inference_peak_rss_mb") is not None]
            record["inference_peak_rss_mb"] = max(peaks) if peaks else None
        else:
            record["error"] = record["rounds"][-1]["error"]
    return list(records.values())
