"""Which parts of SBANet reduced precision may touch: agreement per component on real images.

For one model (a checkpoint, e.g. the shipped default, or a preset), and every real
image/expression pair, the mask and probability of:

* each component alone in bf16 (autocast around that component only, the rest fp32, the model
  as given): the text encoder, the visual encoder, the fusion modules (PWAM + BAM + DFS per
  stage), TCSA and the decoder (with its classifier);
* the model as given in bf16 autocast (``Predictor(fast=False, precision="bf16")``: everything
  but the text encoder, which the predictor keeps in fp32);
* the fast path in bf16 as it ships (``Predictor(precision="bf16")``: text encoder, Swin
  attention softmax and classifier kept in fp32, :data:`sbanet.inference.precision.FP32_PARTS`);

each against fp32. On CPUs without native bf16 PyTorch emulates it: the rounding is bf16's, so
the agreement numbers hold, but such timings say nothing, so none are taken here.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sbanet.inference.precision import DTYPES

from .measure import Case, build_model, make_predictor, mask_iou_of, setup_case

Targets = list[tuple[nn.Module, str]]

# component -> the (module, method) pairs that make it up
COMPONENTS: dict[str, Callable[[Any], Targets]] = {
    "text encoder": lambda m: [(m.text_encoder, "forward")],
    "visual encoder": lambda m: [(m.visual_encoder, "stem"), (m.visual_encoder, "stage")],
    "fusion (PWAM + BAM + DFS)": lambda m: [(f, "forward") for f in m.fusions],
    "TCSA": lambda m: [] if m.tcsa is None else [(m.tcsa, "forward")],
    "decoder + classifier": lambda m: [(m.decoder, "forward")],
}


def to_fp32(value: Any) -> Any:
    """``value`` with every reduced-precision tensor in it (nested in tuples, named tuples,
    lists and dicts) cast to fp32: what leaves a bf16 component enters the fp32 rest as fp32."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(to_fp32(v) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(to_fp32(v) for v in value)
    if isinstance(value, dict):
        return {k: to_fp32(v) for k, v in value.items()}
    return value


@contextlib.contextmanager
def reduced_in(targets: Targets, device_type: str, dtype: torch.dtype) -> Iterator[None]:
    """Run the given methods under ``dtype`` autocast, their outputs cast back to fp32
    (instance attributes shadow the methods for as long as the context lasts)."""

    def wrap(method: Callable[..., Any]) -> Callable[..., Any]:
        def reduced(*args: Any, **kwargs: Any) -> Any:
            with torch.autocast(device_type, dtype=dtype):
                return to_fp32(method(*args, **kwargs))

        return reduced

    for module, name in targets:
        object.__setattr__(module, name, wrap(getattr(module, name)))
    try:
        yield
    finally:
        for module, name in targets:
            object.__delattr__(module, name)


def _summary(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "pairs": len(pairs),
        "min_iou": min(p["iou"] for p in pairs),
        "mean_iou": sum(p["iou"] for p in pairs) / len(pairs),
        "max_prob_diff": max(p["max_prob_diff"] for p in pairs),
        "worst": min(pairs, key=lambda p: p["iou"]),
    }


def measure_components(case: Case) -> dict[str, Any]:
    """Agreement with fp32 per configuration (see the module docstring), over ``case.images`` x
    ``case.texts``, in ``case.precision`` (bf16 or, on CUDA, fp16)."""
    setup_case(case)
    dtype = DTYPES.get(case.precision)
    if dtype is None:
        raise ValueError(f"the components measurement needs a reduced precision (bf16, fp16), got {case.precision}")
    model = build_model(case).eval()
    fp32 = make_predictor(model, case, "eager", "fp32")
    whole = make_predictor(model, case, "eager", case.precision)
    fast = make_predictor(model, case, "fast", case.precision)
    runs: dict[str, Callable[[str], list[Any]]] = {}
    for name, parts in COMPONENTS.items():
        targets = parts(model)
        if targets:
            runs[name] = functools.partial(_run_reduced, fp32, texts=case.texts, targets=targets, dtype=dtype)
    runs["whole model, plain autocast"] = lambda path: _run(whole, path, case.texts)
    runs["fast path as shipped (fp32 parts kept)"] = lambda path: _run(fast, path, case.texts)
    pairs: dict[str, list[dict[str, Any]]] = {name: [] for name in runs}
    for path in case.images:
        reference = _run(fp32, path, case.texts)
        for name, run in runs.items():
            for text, a, b in zip(case.texts, reference, run(path)):
                pairs[name].append(
                    {
                        "image": Path(path).name,
                        "expression": text,
                        "iou": mask_iou_of(a.mask, b.mask),
                        "max_prob_diff": float(np.abs(a.probability - b.probability).max()),
                    }
                )
    return {"configs": {name: _summary(p) for name, p in pairs.items()}, "precision": case.precision}


def _run(predictor: Any, path: str, texts: list[str]) -> list[Any]:
    return predictor.predict_batch(path, texts, return_attention=False)


def _run_reduced(predictor: Any, path: str, *, texts: list[str], targets: Targets, dtype: torch.dtype) -> list[Any]:
    with reduced_in(targets, predictor.device.type, dtype):
        return _run(predictor, path, texts)


def components_table(records: list[dict[str, Any]]) -> list[str]:
    """Markdown rows: per model and configuration, pairs, min / mean mask IoU, max |dp|, worst pair."""
    lines = [
        "| model | in reduced precision | pairs | min IoU@0.5 | mean IoU@0.5 | max abs prob diff | worst pair |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in records:
        c = r["case"]
        if c["kind"] != "components" or "error" in r:
            continue
        model = Path(c["checkpoint"]).name if c.get("checkpoint") else c["preset"]
        for name, s in r["rounds"][-1]["configs"].items():
            worst = f"{s['worst']['image']} / {s['worst']['expression']}"
            lines.append(
                f"| {model} | {name} ({c['precision']}) | {s['pairs']} | {s['min_iou']:.4f} | {s['mean_iou']:.4f} | "
                f"{s['max_prob_diff']:.2e} | {worst} |"
            )
    return lines
